import test from 'ava';
import { randomUUID } from 'node:crypto';
import { MongoClient, type CommandStartedEvent } from 'mongodb';
import type { Digest } from '../../src/domain/digest.ts';
import { parseManifest } from '../../src/domain/manifests/manifest-handlers.ts';
import { BlobRepository } from '../../src/metadata/blob-repository.ts';
import { collections, UNIT_TYPES, type Collections } from '../../src/metadata/collections.ts';
import { ManifestRepository } from '../../src/metadata/manifest-repository.ts';
import { Migrator } from '../../src/metadata/migrator.ts';
import { RepoContentRepository } from '../../src/metadata/repo-content-repository.ts';
import { UnitCache } from '../../src/metadata/unit-cache.ts';
import { configBlob, dockerManifest, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

// Serial: the commands counted must be the test's own.

/**
 * Units remembered between requests (src/metadata/unit-cache.ts) save reading a unit again, and
 * are only ever a guess confirmed by the repository's association: a unit removed from a
 * repository, collected, or collected and pushed again under a new id is answered exactly as
 * without the cache — also when the change was made by another process (another database
 * handle, with its own cache).
 */

interface Side {
  c: Collections;
  repoContent: RepoContentRepository;
  manifests: ManifestRepository;
  blobs: BlobRepository;
}

let mongo: TestMongo;
let counting: MongoClient;
let commands: string[] = [];
/** this process: its own client, whose commands are counted */
let here: Side;
/** another process on the same database: another handle, another cache */
let other: Side;

function side(c: Collections): Side {
  const repoContent = new RepoContentRepository(c);
  return { c, repoContent, manifests: new ManifestRepository(c, repoContent), blobs: new BlobRepository(c) };
}

test.before(async () => {
  mongo = await openTestMongo('unit_cache');
  await new Migrator(mongo.db).up();
  counting = new MongoClient(mongo.uri, { monitorCommands: true });
  await counting.connect();
  counting.on('commandStarted', (e: CommandStartedEvent) => commands.push(`${e.commandName} ${String(e.command[e.commandName])}`));
  here = side(collections(counting.db(mongo.dbName)));
  other = side(collections(mongo.db));
});
test.after.always(async () => {
  await counting?.close();
  await mongo?.close();
});

async function counted<T>(f: () => Promise<T>): Promise<{ result: T; commands: string[] }> {
  commands = [];
  const result = await f();
  return { result, commands };
}

async function newRepo(): Promise<string> {
  const repo = `cache-${randomUUID().slice(0, 8)}`;
  await here.repoContent.ensureRepo(repo);
  return repo;
}

/** What garbage collection does to a unit nobody holds: associations first, then the unit. */
async function collect(s: Side, coll: 'manifests' | 'blobs', digest: string): Promise<void> {
  const unit = await s.c[coll].findOne({ digest });
  if (!unit) throw new Error('no unit to collect');
  await s.c.repoContentUnits.deleteMany({ unit_id: unit._id });
  await s.c[coll].deleteOne({ _id: unit._id });
}

test.serial('a manifest read once is confirmed by its association alone; other repositories still do not see it', async (t) => {
  const [repoA, repoB] = [await newRepo(), await newRepo()];
  const m = ociManifest({ config: configBlob(), layers: [randomBlob()] });
  const parsed = parseManifest(m.bytes, m.mediaType);
  const unit = await other.manifests.insertIfAbsent(parsed, m.bytes);
  await other.manifests.addToRepo(repoA, unit);

  const cold = await counted(() => here.manifests.findInRepo(repoA, parsed.digest, { content: true }));
  t.true(cold.result?.content?.equals(m.bytes));
  t.is(cold.commands.length, 2);
  const warm = await counted(() => here.manifests.findInRepo(repoA, parsed.digest, { content: true }));
  t.deepEqual(warm.commands, ['find repo_content_units']);
  t.true(warm.result?.content?.equals(m.bytes));
  t.is(warm.result?.id, unit.id);
  // remembered bytes own their memory: never a view that keeps a whole driver reply or pool slab alive
  const kept = warm.result?.content as Buffer;
  t.true(kept.byteOffset === 0 && kept.byteLength === kept.buffer.byteLength);
  // without the bytes when not asked for them, still one lookup
  const head = await counted(() => here.manifests.findInRepo(repoA, parsed.digest));
  t.is(head.result?.content, undefined);
  t.is(head.result?.size, m.bytes.length);
  t.is(head.commands.length, 1);

  const elsewhere = await counted(() => here.manifests.findInRepo(repoB, parsed.digest, { content: true }));
  t.is(elsewhere.result, null);
  t.is(elsewhere.commands.length, 2, 'association missing: the unit is read again, and is the same');

  await other.manifests.removeFromRepo(repoA, unit);
  t.is(await here.manifests.findInRepo(repoA, parsed.digest, { content: true }), null);
});

test.serial('a manifest collected and pushed again under a new id is found by its new id', async (t) => {
  const repo = await newRepo();
  const m = dockerManifest({ config: configBlob(), layers: [randomBlob()] });
  const parsed = parseManifest(m.bytes, m.mediaType);
  const first = await here.manifests.insertIfAbsent(parsed, m.bytes);
  await here.manifests.addToRepo(repo, first);
  t.is((await here.manifests.findInRepo(repo, parsed.digest))?.id, first.id);

  // another process collects it: gone for this one too
  await collect(other, 'manifests', parsed.digest);
  t.is(await here.manifests.findInRepo(repo, parsed.digest, { content: true }), null);
  t.deepEqual(await here.manifests.missingInRepo(repo, [parsed.digest]), [parsed.digest]);

  // remembered again, then collected and pushed again by the other process
  const second = await here.manifests.insertIfAbsent(parsed, m.bytes);
  await here.manifests.addToRepo(repo, second);
  t.is((await here.manifests.findInRepo(repo, parsed.digest, { content: true }))?.id, second.id);
  await collect(other, 'manifests', parsed.digest);
  const third = await other.manifests.insertIfAbsent(parsed, m.bytes);
  await other.manifests.addToRepo(repo, third);
  t.not(third.id, second.id);
  const found = await here.manifests.findInRepo(repo, parsed.digest, { content: true });
  t.is(found?.id, third.id);
  t.true(found?.content?.equals(m.bytes));
});

test.serial('blob units: one lookup when remembered; removal, collection and a new unit are all seen', async (t) => {
  const repo = await newRepo();
  const b = randomBlob();
  const d = b.digest as Digest;
  const unit = await other.blobs.upsert(d, b.size);
  await other.repoContent.associate(repo, UNIT_TYPES.blob, unit.id);

  t.is((await here.blobs.findInRepo(repo, d))?.id, unit.id);
  const warm = await counted(() => here.blobs.findInRepo(repo, d));
  t.deepEqual(warm.commands, ['find repo_content_units']);
  const missing = await counted(() => here.manifests.missingBlobsInRepo(repo, [d]));
  t.deepEqual(missing.result, []);
  t.deepEqual(missing.commands, ['find repo_content_units'], 'no blob unit read for a remembered digest');

  await other.repoContent.disassociate(repo, UNIT_TYPES.blob, [unit.id]);
  t.is(await here.blobs.findInRepo(repo, d), null);
  t.deepEqual(await here.manifests.missingBlobsInRepo(repo, [d]), [d]);

  await other.repoContent.associate(repo, UNIT_TYPES.blob, unit.id);
  t.deepEqual(await here.manifests.missingBlobsInRepo(repo, [d]), []);
  await collect(other, 'blobs', d);
  const fresh = await other.blobs.upsert(d, b.size);
  await other.repoContent.associate(repo, UNIT_TYPES.blob, fresh.id);
  t.not(fresh.id, unit.id);
  t.deepEqual(await here.manifests.missingBlobsInRepo(repo, [d]), [], 'the new unit is found after the remembered one fails');
  t.is((await here.blobs.findInRepo(repo, d))?.id, fresh.id);
  await collect(other, 'blobs', d);
  t.is(await here.blobs.findInRepo(repo, d), null);
  t.deepEqual(await here.manifests.missingBlobsInRepo(repo, [d]), [d]);
});

test('the cache is bounded by entries and bytes, least recently used first', (t) => {
  const cache = new UnitCache<{ n: number; bytes: number }>(3, 100, (v) => v.bytes);
  const key = (i: number): Digest => `sha256:${String(i).padStart(64, '0')}` as Digest;
  for (let i = 0; i < 3; i++) cache.set(key(i), { n: i, bytes: 10 });
  t.is(cache.get(key(0))?.n, 0); // 0 is now the most recently used
  cache.set(key(3), { n: 3, bytes: 10 });
  t.is(cache.size, 3);
  t.is(cache.get(key(1)), undefined, 'the least recently used went');
  t.is(cache.get(key(0))?.n, 0);
  cache.set(key(4), { n: 4, bytes: 85 });
  t.true(cache.get(key(4)) !== undefined);
  t.is(cache.size, 2, 'bytes over the bound evict too');
  cache.set(key(5), { n: 5, bytes: 101 });
  t.is(cache.get(key(5)), undefined, 'an entry larger than the bound is not kept');
  cache.delete(key(4));
  t.is(cache.size, 1);
});
