import test from 'ava';
import { randomUUID } from 'node:crypto';
import type { Digest } from '../../src/domain/digest.ts';
import { parseManifest } from '../../src/domain/manifests/manifest-handlers.ts';
import { collections, pulpFields, UNIT_TYPES, type Collections } from '../../src/metadata/collections.ts';
import { ManifestRepository } from '../../src/metadata/manifest-repository.ts';
import { Migrator } from '../../src/metadata/migrator.ts';
import { RepoContentRepository } from '../../src/metadata/repo-content-repository.ts';
import { TagRepository } from '../../src/metadata/tag-repository.ts';
import { configBlob, ociIndex, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/**
 * The Tag unit model against a real MongoDB-speaking backend: the unique key
 * (name, schema_version, repo_id), racing upserts, schema 1 and schema 2 units side by side,
 * listing, deletion, v1 tags in the repository's scratchpad, and manifest units.
 */

let mongo: TestMongo;
let c: Collections;
let repoContent: RepoContentRepository;
let tags: TagRepository;
let manifests: ManifestRepository;

test.before(async () => {
  mongo = await openTestMongo('tag_repository');
  await new Migrator(mongo.db).up();
  c = collections(mongo.db);
  repoContent = new RepoContentRepository(c);
  tags = new TagRepository(c, repoContent);
  manifests = new ManifestRepository(c, repoContent);
});
test.after.always(async () => {
  await mongo?.close();
});

const digest = (): Digest => `sha256:${randomUUID().replace(/-/g, '').repeat(2)}` as Digest;

async function newRepo(): Promise<string> {
  const repo = `repo-${randomUUID().slice(0, 8)}`;
  await repoContent.ensureRepo(repo);
  return repo;
}

test('the unique key refuses a second unit for (name, schema_version, repo_id)', async (t) => {
  const repo = await newRepo();
  const doc = {
    name: 'dup',
    schema_version: 2 as const,
    repo_id: repo,
    manifest_digest: digest(),
    manifest_type: 'image' as const,
    ...pulpFields(UNIT_TYPES.tag),
  };
  await c.tags.insertOne({ _id: randomUUID(), ...doc });
  const err = await t.throwsAsync(c.tags.insertOne({ _id: randomUUID(), ...doc }));
  t.is((err as { code?: number }).code, 11000);
  // same name, other schema version, or other repository: allowed
  await c.tags.insertOne({ _id: randomUUID(), ...doc, schema_version: 1 });
  await c.tags.insertOne({ _id: randomUUID(), ...doc, repo_id: await newRepo() });
  t.is(await c.tags.countDocuments({ name: 'dup' }), 3);
});

test('20 racing upserts of one tag leave one unit per (name, schema_version, repo), associated once', async (t) => {
  const repo = await newRepo();
  const targets = Array.from({ length: 20 }, () => digest());
  const results = await Promise.all(targets.map((d, i) => tags.upsert(repo, 'race', i % 2 === 0 ? 2 : 1, d, 'image')));
  t.is(results.length, 20);
  const units = await c.tags.find({ repo_id: repo, name: 'race' }).toArray();
  t.deepEqual(units.map((u) => u.schema_version).sort(), [1, 2]);
  // every upsert reported the id of the one unit of its schema version
  for (const r of results) t.is(r.id, units.find((u) => u.schema_version === r.schemaVersion)!._id);
  // each unit points at a digest one of the racers wrote
  for (const u of units) t.true(targets.includes(u.manifest_digest as Digest));
  const assoc = await c.repoContentUnits.find({ repo_id: repo, unit_type_id: UNIT_TYPES.tag }).toArray();
  t.deepEqual(assoc.map((a) => a.unit_id).sort(), units.map((u) => u._id).sort());
});

test('racing first pushes of many tags in many repositories create one unit each', async (t) => {
  const repos = await Promise.all([newRepo(), newRepo()]);
  const jobs: Array<Promise<unknown>> = [];
  for (const repo of repos) for (let i = 0; i < 10; i++) for (let k = 0; k < 3; k++) jobs.push(tags.upsert(repo, `t${i}`, 2, digest(), 'image'));
  await Promise.all(jobs);
  for (const repo of repos) {
    t.is(await c.tags.countDocuments({ repo_id: repo }), 10);
    t.is(await c.repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: UNIT_TYPES.tag }), 10);
  }
});

test('a schema 1 push never moves the schema 2 unit of the same name, and back', async (t) => {
  const repo = await newRepo();
  const s2 = digest();
  const s1 = digest();
  await tags.upsert(repo, 'both', 2, s2, 'list');
  await tags.upsert(repo, 'both', 1, s1, 'image');
  const s1b = digest();
  await tags.upsert(repo, 'both', 1, s1b, 'image');
  const found = await tags.findByName(repo, 'both');
  t.deepEqual(
    found.map((f) => [f.schemaVersion, f.manifestDigest, f.manifestType]).sort(),
    [
      [1, s1b, 'image'],
      [2, s2, 'list'],
    ],
  );
  const doc = await c.tags.findOne({ repo_id: repo, name: 'both', schema_version: 2 });
  // the Pulp 2 shape
  t.like(doc, { _ns: 'units_docker_tag', _content_type_id: 'docker_tag', pulp_user_metadata: {}, manifest_type: 'list' });
  t.is(typeof doc!._last_updated, 'number');
});

/** Every page of a listing by `n`, following `last`. */
async function pagesOf(repository: TagRepository, repo: string, n: number): Promise<string[][]> {
  const pages: string[][] = [];
  let last: string | undefined;
  for (;;) {
    const page = await repository.listNames(repo, { n, ...(last !== undefined ? { last } : {}) });
    pages.push(page.names);
    if (!page.more) break;
    last = page.names[page.names.length - 1];
  }
  return pages;
}

/**
 * listNames reads the database for every page, or, with the embedded engine's change marks,
 * cuts pages from every name of the repository read once: both must answer alike. (Only the
 * engine this process started has marks; on another backend the second is the first again.)
 */
function keptLister(keptNamesPerRepo?: number): TagRepository {
  const kept = collections(mongo.db, mongo.changeMarks);
  return new TagRepository(kept, new RepoContentRepository(kept), keptNamesPerRepo === undefined ? {} : { keptNamesPerRepo });
}

const listers: Array<[string, () => TagRepository]> = [
  ['read page by page', () => tags],
  ['pages cut from the kept names', () => keptLister()],
  ['a repository with more names than are kept', () => keptLister(4)],
];

for (const [how, make] of listers) {
  test(`listNames pages names in byte order, each name once (${how})`, async (t) => {
    const lister = make();
    const repo = await newRepo();
    const names = ['b', 'a', 'C', '_x', 'a.1', 'a-1', 'z9', 'Z', '0'];
    for (const n of names) {
      await tags.upsert(repo, n, 2, digest(), 'image');
      await tags.upsert(repo, n, 1, digest(), 'image');
    }
    const sorted = [...names].sort();
    t.deepEqual((await lister.listNames(repo, {})).names, sorted);
    const pages = await pagesOf(lister, repo, 2);
    t.deepEqual(pages.flat(), sorted);
    t.true(pages.slice(0, -1).every((p) => p.length === 2));
    t.deepEqual((await lister.listNames(repo, { last: 'a.1' })).names, sorted.filter((n) => n > 'a.1'));
    t.deepEqual((await lister.listNames(repo, { last: 'a.0', n: 2 })).names, ['a.1', 'b'], 'after a name that is not there');
    t.deepEqual(await lister.listNames(repo, { n: 9 }), { names: sorted, more: false });
    t.deepEqual(await lister.listNames(repo, { n: 8 }), { names: sorted.slice(0, 8), more: true });
    t.deepEqual(await lister.listNames(repo, { n: 100, last: 'zzz' }), { names: [], more: false });

    // changes made through another handle (another process) are in the next page read
    await tags.upsert(repo, 'b0', 2, digest(), 'image');
    await tags.deleteByName(repo, 'z9');
    const changed = [...sorted.filter((n) => n !== 'z9'), 'b0'].sort();
    t.deepEqual((await lister.listNames(repo, {})).names, changed);
    t.deepEqual((await pagesOf(lister, repo, 3)).flat(), changed);
    t.deepEqual(await lister.listNames(repo, { last: 'b', n: 1 }), { names: ['b0'], more: false });
  });
}

test('deleteByName removes both schema versions and the v1 tag; deleteByManifest only what points at it', async (t) => {
  const repo = await newRepo();
  const m = digest();
  await tags.upsert(repo, 'x', 2, m, 'image');
  await tags.upsert(repo, 'x', 1, digest(), 'image');
  await tags.setV1ImageId(repo, 'x', 'a'.repeat(64));
  await tags.upsert(repo, 'y', 2, m, 'image');
  await tags.upsert(repo, 'z', 2, digest(), 'image');

  const removed = await tags.deleteByName(repo, 'x');
  t.is(removed.length, 2);
  t.deepEqual(await tags.findByName(repo, 'x'), []);
  t.is(await tags.v1ImageId(repo, 'x'), null);

  const byManifest = await tags.deleteByManifest(repo, m);
  t.deepEqual(
    byManifest.map((r) => r.name),
    ['y'],
  );
  t.deepEqual((await tags.listNames(repo, {})).names, ['z']);
  const assoc = await c.repoContentUnits.find({ repo_id: repo, unit_type_id: UNIT_TYPES.tag }).toArray();
  t.is(assoc.length, 1);
  t.deepEqual(await tags.deleteByName(repo, 'nope'), []);
});

test('v1 tags: one scratchpad entry per tag, replaced on re-push, also under racing pushes', async (t) => {
  const repo = await newRepo();
  await tags.setV1ImageId(repo, 'v1', '1'.repeat(64));
  await tags.setV1ImageId(repo, 'v1', '2'.repeat(64));
  await tags.setV1ImageId(repo, 'other', '3'.repeat(64));
  await Promise.all(Array.from({ length: 20 }, (_, i) => tags.setV1ImageId(repo, 'raced', String(i % 10).repeat(64))));
  const doc = await c.repos.findOne({ _id: repo });
  const entries = doc!.scratchpad.tags;
  t.is(entries.filter((e) => e.tag === 'v1').length, 1);
  t.is(entries.filter((e) => e.tag === 'raced').length, 1);
  t.is(await tags.v1ImageId(repo, 'v1'), '2'.repeat(64));
  t.is(await tags.v1ImageId(repo, 'other'), '3'.repeat(64));
});

test('manifest units: insert-if-absent by digest, exact bytes, membership per repository', async (t) => {
  const repoA = await newRepo();
  const repoB = await newRepo();
  const m = ociManifest({ config: configBlob(), layers: [randomBlob()], annotations: { a: 'b' } });
  const parsed = parseManifest(m.bytes, m.mediaType);
  const units = await Promise.all(Array.from({ length: 10 }, () => manifests.insertIfAbsent(parsed, m.bytes)));
  t.is(new Set(units.map((u) => u.id)).size, 1);
  t.is(await c.manifests.countDocuments({ digest: m.digest }), 1);

  t.is(await manifests.findInRepo(repoA, parsed.digest), null);
  await manifests.addToRepo(repoA, units[0]!);
  const stored = await manifests.findInRepo(repoA, parsed.digest, { content: true });
  t.true(stored!.content!.equals(m.bytes));
  t.deepEqual(stored!.annotations, { a: 'b' });
  t.is(stored!.configMediaType, 'application/vnd.oci.image.config.v1+json');
  t.is((await manifests.findInRepo(repoA, parsed.digest))!.content, undefined);
  t.is(await manifests.findInRepo(repoB, parsed.digest), null);
  t.deepEqual(await manifests.missingInRepo(repoB, [parsed.digest]), [parsed.digest]);
  t.deepEqual(await manifests.missingInRepo(repoA, [parsed.digest]), []);

  const doc = await c.manifests.findOne({ digest: m.digest });
  t.like(doc, { schema_version: 2, media_type: m.mediaType, size: m.bytes.length, _content_type_id: 'docker_manifest' });
  t.deepEqual(doc!.blob_digests, parsed.blobDigests);

  await manifests.removeFromRepo(repoA, units[0]!);
  t.is(await manifests.findInRepo(repoA, parsed.digest), null);
  t.is(await c.manifests.countDocuments({ digest: m.digest }), 1, 'the unit stays for garbage collection');
});

test('list units keep entries with platforms; referrers are found by subject within the repository', async (t) => {
  const repo = await newRepo();
  const img = ociManifest({ config: configBlob(), layers: [] });
  const idx = ociIndex([{ manifest: img, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }], { subject: img, artifactType: 'application/x-sig' });
  const unit = await manifests.insertIfAbsent(parseManifest(idx.bytes, idx.mediaType), idx.bytes);
  t.is(unit.kind, 'list');
  await manifests.addToRepo(repo, unit);
  const stored = await manifests.findInRepo(repo, idx.digest as Digest);
  t.deepEqual(stored!.manifests, [{ digest: img.digest, mediaType: img.mediaType, size: img.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }]);
  const refs = await manifests.referrers(repo, img.digest as Digest);
  t.deepEqual(
    refs.map((r) => [r.digest, r.artifactType]),
    [[idx.digest, 'application/x-sig']],
  );
  t.deepEqual(await manifests.referrers(await newRepo(), img.digest as Digest), []);
});

test('missingBlobsInRepo needs the blob unit and its association', async (t) => {
  const repo = await newRepo();
  const held = digest();
  const unassociated = digest();
  const absent = digest();
  for (const d of [held, unassociated]) {
    await c.blobs.insertOne({ _id: randomUUID(), digest: d, size: 1, ...pulpFields(UNIT_TYPES.blob) });
  }
  const heldDoc = await c.blobs.findOne({ digest: held });
  await repoContent.associate(repo, UNIT_TYPES.blob, heldDoc!._id);
  t.deepEqual((await manifests.missingBlobsInRepo(repo, [held, unassociated, absent, absent])).sort(), [absent, unassociated].sort());
  t.deepEqual(await manifests.missingBlobsInRepo(repo, []), []);
});
