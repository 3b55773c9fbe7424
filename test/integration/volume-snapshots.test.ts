import test from 'ava';
import { digestOf, type Digest } from '../../src/domain/digest.ts';
import type { RepositoryName, Tag } from '../../src/domain/names.ts';
import type { SnapshotInfo } from '../../src/domain/volumes/snapshot.ts';
import type { Db } from 'mongodb';
import { collections, type Collections } from '../../src/metadata/collections.ts';
import { RepoContentRepository, VOLUME_NOTE } from '../../src/metadata/repo-content-repository.ts';
import { SNAPSHOTS_COLLECTION, SnapshotRepository } from '../../src/metadata/snapshot-repository.ts';
import { up } from '../../migrations/0002-volume-snapshots.ts';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

let mongo: TestMongo;

test.before(async () => {
  mongo = await openTestMongo('volume-snapshots');
  await up(mongo.db);
});
test.after.always(async () => {
  await mongo?.close();
});

const snapshot = (volume: string, tag: string, created: string, over: Partial<SnapshotInfo> = {}): SnapshotInfo => ({
  volume: volume as RepositoryName,
  tag: tag as Tag,
  manifestDigest: digestOf(`m-${volume}-${tag}-${created}`),
  configDigest: digestOf(`c-${volume}-${tag}`),
  layer: { digest: digestOf(`l-${volume}-${tag}`), size: 100, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' },
  compression: 'gzip',
  uncompressed: { digest: digestOf('tar'), size: 10240 },
  entries: 3,
  unsafeEntries: 0,
  host: 'h1',
  labels: { a: 'b' },
  created,
  lastVerify: null,
  source: 'api',
  ...over,
});

test('migration 0002 is idempotent and indexes the collection', async (t) => {
  await up(mongo.db);
  const indexes = await mongo.db.collection(SNAPSHOTS_COLLECTION).listIndexes().toArray();
  const unique = indexes.find((i) => JSON.stringify(i.key) === JSON.stringify({ repo_id: 1, tag: 1 }));
  t.truthy(unique);
  t.true(unique!.unique === true);
  t.true(indexes.some((i) => JSON.stringify(i.key) === JSON.stringify({ repo_id: 1, created: -1 })));
});

test('the collection validator refuses a document without the required fields', async (t) => {
  await t.throwsAsync(mongo.db.collection(SNAPSHOTS_COLLECTION).insertOne({ _id: 'x', repo_id: 'r' } as never));
  await t.throwsAsync(mongo.db.collection(SNAPSHOTS_COLLECTION).insertOne({ ...{ _id: 'y', repo_id: 'r', tag: 't' }, compression: 'xz' } as never));
});

/** Indexes a snapshot over whatever its tag's document is now, as a push or reader that has just read it does. */
async function indexAs(repo: SnapshotRepository, info: SnapshotInfo): Promise<void> {
  await repo.replaceStale(info, await repo.read(info.volume, info.tag));
}

test('one document per tag; list is newest first with filters; verify is recorded for the seen manifest only', async (t) => {
  const repo = new SnapshotRepository(mongo.db);
  await indexAs(repo, snapshot('vol/a', 't1', '2024-01-01T00:00:00.000Z'));
  await indexAs(repo, snapshot('vol/a', 't2', '2024-02-01T00:00:00.000Z', { host: 'h2' }));
  const replaced = snapshot('vol/a', 't1', '2024-03-01T00:00:00.000Z');
  await indexAs(repo, replaced);
  await Promise.all([repo.replaceStale(snapshot('vol/b', 'x', '2024-01-05T00:00:00.000Z'), null), repo.replaceStale(snapshot('vol/b', 'x', '2024-01-06T00:00:00.000Z'), null)]);
  t.is(await mongo.db.collection(SNAPSHOTS_COLLECTION).countDocuments({ repo_id: 'vol/b' }), 1, 'racing first writes of one tag meet on the unique key');

  const all = await repo.list('vol/a', { limit: 10, offset: 0 });
  t.deepEqual(all.items.map((s) => s.tag), ['t1', 't2']);
  t.is(all.total, 2);
  t.deepEqual((await repo.list('vol/a', { host: 'h2', limit: 10, offset: 0 })).items.map((s) => s.tag), ['t2']);
  t.deepEqual((await repo.list('vol/a', { since: new Date('2024-02-15T00:00:00Z'), limit: 10, offset: 0 })).items.map((s) => s.tag), ['t1']);
  t.deepEqual((await repo.list('vol/a', { limit: 1, offset: 1 })).items.map((s) => s.tag), ['t2']);

  await repo.recordVerify('vol/a', 't1', digestOf('some other manifest') as Digest, { ok: false, at: '2024-04-01T00:00:00.000Z', problems: ['x'] });
  t.is((await repo.get('vol/a', 't1'))!.lastVerify, null, 'a verification of another manifest is not recorded');
  await repo.recordVerify('vol/a', 't1', replaced.manifestDigest, { ok: true, at: '2024-04-01T00:00:00.000Z', problems: [] });
  t.deepEqual((await repo.get('vol/a', 't1'))!.lastVerify, { ok: true, at: '2024-04-01T00:00:00.000Z', problems: [] });

  const names = await repo.volumeNames();
  t.true(names.includes('vol/a') && names.includes('vol/b'));
  t.deepEqual(names, [...names].sort());
  const indexed = await repo.indexedDigests(['vol/a', 'vol/b', 'vol/none']);
  t.deepEqual(
    indexed.get('vol/a')!.sort((x, y) => x.tag.localeCompare(y.tag)),
    [{ tag: 't1', manifestDigest: replaced.manifestDigest }, { tag: 't2', manifestDigest: (await repo.get('vol/a', 't2'))!.manifestDigest }],
  );
  t.deepEqual(indexed.get('vol/b')!.map((d) => d.tag), ['x']);
  t.false(indexed.has('vol/none'));
  t.is((await repo.summaries(['vol/none'])).get('vol/none'), undefined);
  const a = (await repo.summaries(['vol/a'])).get('vol/a')!;
  t.is(a.snapshots, 2);
  t.is(a.totalSize, 200);
  t.is(String(a.latest.tag), 't1');
  // several volumes from one read; of snapshots created at the same moment the first tag is the latest
  await indexAs(repo, snapshot('vol/tie', 'b', '2024-01-07T00:00:00.000Z'));
  await indexAs(repo, snapshot('vol/tie', 'a', '2024-01-07T00:00:00.000Z'));
  await indexAs(repo, snapshot('vol/tie', 'c', '2024-01-06T00:00:00.000Z'));
  const summaries = await repo.summaries(['vol/a', 'vol/tie', 'vol/none']);
  t.deepEqual([...summaries.keys()].sort(), ['vol/a', 'vol/tie']);
  t.deepEqual(summaries.get('vol/a'), a);
  t.is(String(summaries.get('vol/tie')!.latest.tag), 'a');
  t.is(summaries.get('vol/tie')!.snapshots, 3);

  await repo.delete('vol/a', 't2', digestOf('not it') as Digest);
  t.truthy(await repo.get('vol/a', 't2'), 'delete limited to a manifest leaves another one');
  await repo.delete('vol/a', 't2');
  await repo.delete('vol/a', 't2');
  t.is(await repo.get('vol/a', 't2'), null);
});

test('replaceStale replaces only the document the reader saw, inserts a missing one only while it is missing', async (t) => {
  const repo = new SnapshotRepository(mongo.db);
  await indexAs(repo, snapshot('vol/s', 't', '2024-04-30T00:00:00.000Z'));
  const seenByReader = await repo.read('vol/s', 't');
  const full = snapshot('vol/s', 't', '2024-05-01T00:00:00.000Z', { host: 'pusher', unsafeEntries: 2 });
  await indexAs(repo, full);
  // a reader that read the older document, and described what the tag held then: the push's stays
  await repo.replaceStale({ ...snapshot('vol/s', 't', '2024-04-29T00:00:00.000Z'), source: 'oci' }, seenByReader);
  const kept = (await repo.get('vol/s', 't'))!;
  t.is(kept.manifestDigest, full.manifestDigest);
  t.is(kept.host, 'pusher');
  t.is(kept.unsafeEntries, 2);
  // a reader that saw no document at all: the one written since stays too
  await repo.replaceStale({ ...full, host: null, unsafeEntries: null, source: 'oci' }, null);
  t.like(await repo.get('vol/s', 't'), { host: 'pusher', unsafeEntries: 2, source: 'api' });

  // nor a verify recorded since the read: the same manifest, a later write
  const beforeVerify = await repo.read('vol/s', 't');
  await repo.recordVerify('vol/s', 't', full.manifestDigest, { ok: true, at: '2024-05-01T12:00:00.000Z', problems: [] });
  await repo.replaceStale({ ...full, host: null, source: 'oci' }, beforeVerify);
  t.like(await repo.get('vol/s', 't'), { host: 'pusher', lastVerify: { ok: true } });

  const moved = snapshot('vol/s', 't', '2024-05-02T00:00:00.000Z', { host: null, source: 'oci' });
  await repo.replaceStale(moved, await repo.read('vol/s', 't'));
  t.is((await repo.get('vol/s', 't'))!.manifestDigest, moved.manifestDigest);
  t.is(await mongo.db.collection(SNAPSHOTS_COLLECTION).countDocuments({ repo_id: 'vol/s' }), 1);

  const fresh = snapshot('vol/s', 'new', '2024-05-03T00:00:00.000Z');
  await repo.replaceStale(fresh, null);
  t.is((await repo.get('vol/s', 'new'))!.manifestDigest, fresh.manifestDigest);
});

test('volume summaries are kept within their byte budget whatever labels their snapshots carry', async (t) => {
  const marks = collections(mongo.db, mongo.changeMarks).marks;
  if (!marks) {
    // no change marks on another backend: nothing is kept, every summary is read (README)
    t.not(mongo.backend, 'engine');
    return;
  }
  // the volumes each summary read asks about, by a spy on the collection's finds
  const asked: string[] = [];
  const coll = mongo.db.collection(SNAPSHOTS_COLLECTION);
  const spied = new Proxy(coll, {
    get: (target, prop, receiver) => {
      if (prop !== 'find') return Reflect.get(target, prop, receiver);
      return (filter: { repo_id?: { $in?: string[] } }, ...rest: unknown[]) => {
        asked.push(...(filter.repo_id?.$in ?? []));
        return (target.find as (...args: unknown[]) => unknown).call(target, filter, ...rest);
      };
    },
  });
  const db = { collection: () => spied } as unknown as Db;
  const budget = 1024 * 1024;
  const repo = new SnapshotRepository(db, marks, { keptSummaryBytes: budget });
  // labels as a config blob pushed through /v2 may carry (60 KB of them): each summary weighs about 250 KB
  const many: Record<string, string> = {};
  for (let i = 0; i < 2000; i++) many[`label-${i}`] = `v${i}`;
  const heavy = Array.from({ length: 20 }, (_, i) => `heavy/v${i}`);
  const light = Array.from({ length: 20 }, (_, i) => `light/v${i}`);
  for (const v of heavy) await indexAs(repo, snapshot(v, 't', '2024-05-01T00:00:00.000Z', { labels: many }));
  for (const v of light) await indexAs(repo, snapshot(v, 't', '2024-05-01T00:00:00.000Z'));
  await repo.summaries(light);
  asked.length = 0;
  t.is((await repo.summaries(light)).size, light.length);
  t.deepEqual(asked, [], 'light summaries are kept');

  await repo.summaries(heavy);
  asked.length = 0;
  t.is((await repo.summaries(heavy)).size, heavy.length);
  const kept = heavy.length - new Set(asked).size;
  t.true(kept * 200_000 <= budget, `${kept} heavy summaries kept within ${budget} bytes`);
});

test('the repositories remembered as noted volumes are bounded: one forgotten is noted again', async (t) => {
  const c = collections(mongo.db);
  let writes = 0;
  const repos = new Proxy(c.repos, {
    get: (target, prop, receiver) => {
      if (prop !== 'updateOne') return Reflect.get(target, prop, receiver);
      return (...args: unknown[]) => (writes++, (target.updateOne as (...a: unknown[]) => unknown).apply(target, args));
    },
  });
  const repoContent = new RepoContentRepository({ ...c, repos } as Collections, 2);
  const note = async (repo: string): Promise<number> => {
    const before = writes;
    await repoContent.markVolume(repo);
    return writes - before;
  };
  t.true((await note('noted/a')) > 0);
  t.true((await note('noted/b')) > 0);
  t.is(await note('noted/a'), 0, 'remembered');
  t.true((await note('noted/c')) > 0);
  t.is(await note('noted/a'), 0, 'the most recently noted stay');
  t.is(await note('noted/b'), 1, 'the least recently noted was forgotten, and is noted again');
  const noted = await mongo.db.collection('repos').countDocuments({ _id: { $in: ['noted/a', 'noted/b', 'noted/c'] } as never, [`notes.${VOLUME_NOTE}`]: true });
  t.is(noted, 3);
});
