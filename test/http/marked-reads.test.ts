import test, { type ExecutionContext } from 'ava';
import { MongoClient } from 'mongodb';
import { collections, UNIT_TYPES } from '../../src/metadata/collections.ts';
import { blobOf, configBlob, ociManifest, randomBlob, schema1Unsigned, MT, type Blob, type Built } from '../helpers/manifest-fixtures.ts';
import { getManifest, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Reads the server keeps between requests (tags by name, what a repository holds) stay true to
 * the database: a change made by any client of the engine, here a second driver connection
 * standing in for another process or an operator, is seen by the next request. And they are
 * kept: a repeated read does not ask the database, nor does a write to another repository
 * make it ask.
 */

let server: TestServer;
let other: MongoClient;
test.before(async () => {
  server = await startTestServer({ label: 'http_marked_reads' });
  other = new MongoClient(server.config.mongodbUrl!);
  await other.connect();
});
test.after.always(async () => {
  await other?.close();
  await server?.close();
});

const elsewhere = () => collections(other.db(server.config.mongodbDatabase));

/** find commands the engine has answered so far (every client) */
async function finds(): Promise<number> {
  const status = await server.db.admin().command({ serverStatus: 1 });
  return Number((status['opcounters'] as Record<string, number>)['query'] ?? 0);
}

/**
 * No find since `before`, where reads are kept. Only the embedded engine this test process
 * started shares its change marks (test/helpers/mongo.ts); on another backend (MONGODB_URL), as
 * with an external MongoDB in production, every read asks the database, and what the requests
 * answered is all there is to check.
 */
async function askedNothingSince(t: ExecutionContext, before: number, why?: string): Promise<void> {
  if (server.changeMarks) t.is(await finds(), before, why);
}

test.serial('reads are kept exactly when the database is the embedded engine', (t) => {
  t.is(server.changeMarks !== undefined, server.backend === 'engine', server.backend);
});

async function pushedImage(repo: string, tag: string): Promise<{ manifest: Built; layer: Blob }> {
  const config = configBlob();
  const layer = randomBlob(512);
  await pushBlobs(server.url, repo, [config, layer]);
  const manifest = ociManifest({ config, layers: [layer] });
  const put = await putManifest(server.url, repo, tag, manifest);
  if (put.status !== 201) throw new Error(`push failed: ${put.status} ${put.body.toString()}`);
  return { manifest, layer };
}

const headBlob = (repo: string, b: Blob) => request(server.url, `/v2/${repo}/blobs/${b.digest}`, { method: 'HEAD' });

test.serial('a pull by tag repeated is answered without a find; a tag moved by another client is seen at once', async (t) => {
  const repo = repoName('marked-tag');
  const a = await pushedImage(repo, 'v1');
  const b = await pushedImage(repo, 'b');
  t.is((await getManifest(server.url, repo, 'v1', MT.ociManifest)).headers['docker-content-digest'], a.manifest.digest);

  const before = await finds();
  const again = await getManifest(server.url, repo, 'v1', MT.ociManifest);
  t.is(again.status, 200);
  t.is(again.headers['docker-content-digest'], a.manifest.digest);
  await askedNothingSince(t, before, 'the second pull asked the database nothing');

  const moved = await elsewhere().tags.updateOne({ repo_id: repo, name: 'v1', schema_version: 2 }, { $set: { manifest_digest: b.manifest.digest } });
  t.is(moved.modifiedCount, 1);
  t.is((await getManifest(server.url, repo, 'v1', MT.ociManifest)).headers['docker-content-digest'], b.manifest.digest);

  await elsewhere().tags.deleteMany({ repo_id: repo, name: 'v1' });
  t.is((await getManifest(server.url, repo, 'v1', MT.ociManifest)).status, 404);
});

test.serial('a blob HEAD repeated asks nothing; an association removed by another client is a 404 at once', async (t) => {
  const repo = repoName('marked-blob');
  const blob = blobOf(Buffer.from(`held ${Date.now()}`));
  await pushBlobs(server.url, repo, [blob]);
  t.is((await headBlob(repo, blob)).status, 200);
  const before = await finds();
  t.is((await headBlob(repo, blob)).status, 200);
  await askedNothingSince(t, before, 'the second HEAD asked the database nothing');

  const unit = await elsewhere().blobs.findOne({ digest: blob.digest });
  const removed = await elsewhere().repoContentUnits.deleteMany({ repo_id: repo, unit_type_id: UNIT_TYPES.blob, unit_id: unit!._id });
  t.is(removed.deletedCount, 1);
  t.is((await headBlob(repo, blob)).status, 404);
  t.is((await request(server.url, `/v2/${repo}/blobs/${blob.digest}`)).status, 404);
});

test.serial('a manifest by digest whose association another client removed is a 404 at once', async (t) => {
  const repo = repoName('marked-digest');
  const { manifest } = await pushedImage(repo, 'latest');
  t.is((await getManifest(server.url, repo, manifest.digest)).status, 200);
  await elsewhere().repoContentUnits.deleteMany({ repo_id: repo, unit_type_id: UNIT_TYPES.manifest });
  t.is((await getManifest(server.url, repo, manifest.digest)).status, 404);
  t.is((await getManifest(server.url, repo, 'latest', MT.ociManifest)).status, 404, 'the tag points at a manifest the repository no longer holds');
});

test.serial("a push whose blobs are held asks nothing but its writes: its own writes are kept, and another client's removal is still seen", async (t) => {
  const repo = repoName('marked-push');
  const config = configBlob();
  const layer = randomBlob(512);
  await pushBlobs(server.url, repo, [config, layer]);
  t.is((await headBlob(repo, layer)).status, 200); // the holding is read once, and kept

  const before = await finds();
  const first = ociManifest({ config, layers: [layer], annotations: { n: '1' } });
  t.is((await putManifest(server.url, repo, 'v1', first)).status, 201);
  await askedNothingSince(t, before, 'the check after the writes was answered by what the push wrote');

  // the kept holding of the manifest goes once another client removes it
  const unit = await elsewhere().manifests.findOne({ digest: first.digest });
  t.is((await elsewhere().repoContentUnits.deleteMany({ repo_id: repo, unit_type_id: UNIT_TYPES.manifest, unit_id: unit!._id })).deletedCount, 1);
  t.is((await getManifest(server.url, repo, first.digest, MT.ociManifest)).status, 404);
  // and a push of the same manifest holds it again
  t.is((await putManifest(server.url, repo, 'v1', first)).status, 201);
  t.is((await getManifest(server.url, repo, first.digest, MT.ociManifest)).status, 200);
});

test.serial('a pull right after a push of a tag pulled before asks nothing and gets what was pushed; a second client moving the tag is still seen', async (t) => {
  const repo = repoName('marked-repush');
  const a = await pushedImage(repo, 'latest');
  t.is((await getManifest(server.url, repo, 'latest', MT.ociManifest)).headers['docker-content-digest'], a.manifest.digest); // kept
  const config = configBlob();
  await pushBlobs(server.url, repo, [config]);
  const b = ociManifest({ config, layers: [a.layer] });

  const before = await finds();
  t.is((await putManifest(server.url, repo, 'latest', b)).status, 201);
  const pulled = await getManifest(server.url, repo, 'latest', MT.ociManifest);
  t.is(pulled.headers['docker-content-digest'], b.digest);
  t.true(pulled.body.equals(b.bytes));
  await askedNothingSince(t, before, 'neither the push nor the pull after it asked the database');

  t.is((await elsewhere().tags.updateOne({ repo_id: repo, name: 'latest', schema_version: 2 }, { $set: { manifest_digest: a.manifest.digest } })).modifiedCount, 1);
  t.is((await getManifest(server.url, repo, 'latest', MT.ociManifest)).headers['docker-content-digest'], a.manifest.digest);
});

test.serial('a schema 1 push to a tag name kept with its schema 2 unit: both are pulled by their Accept, neither moved the other', async (t) => {
  const repo = repoName('marked-both');
  const s2 = await pushedImage(repo, 'both');
  t.is((await getManifest(server.url, repo, 'both', MT.ociManifest)).headers['docker-content-digest'], s2.manifest.digest); // kept
  const s1 = schema1Unsigned({ name: repo, tag: 'both', layers: [s2.layer] });
  t.is((await putManifest(server.url, repo, 'both', s1)).status, 201);
  t.is((await getManifest(server.url, repo, 'both', MT.ociManifest)).headers['docker-content-digest'], s2.manifest.digest);
  t.is((await getManifest(server.url, repo, 'both', MT.schema1)).headers['docker-content-digest'], s1.digest);
  const units = await elsewhere().tags.find({ repo_id: repo, name: 'both' }).toArray();
  t.deepEqual(units.map((u) => [u.schema_version, u.manifest_digest]).sort(), [[1, s1.digest], [2, s2.manifest.digest]]);
});

test.serial('pushes to another repository, or of another tag, leave what was read here in place', async (t) => {
  const repo = repoName('marked-quiet');
  const { manifest } = await pushedImage(repo, 'stable');
  t.is((await getManifest(server.url, repo, 'stable', MT.ociManifest)).status, 200);
  await pushedImage(repoName('marked-busy'), 'x');
  const before = await finds();
  const r = await getManifest(server.url, repo, 'stable', MT.ociManifest);
  t.is(r.headers['docker-content-digest'], manifest.digest);
  await askedNothingSince(t, before);

  // nor does a push of another tag to this repository
  await pushedImage(repo, 'other');
  const before2 = await finds();
  t.is((await getManifest(server.url, repo, 'stable', MT.ociManifest)).headers['docker-content-digest'], manifest.digest);
  await askedNothingSince(t, before2);

  // and a push to this tag is seen by the next pull
  const next = await pushedImage(repo, 'stable');
  t.is((await getManifest(server.url, repo, 'stable', MT.ociManifest)).headers['docker-content-digest'], next.manifest.digest);
});

test.serial('pulls racing a run of pushes to one tag never see a version older than the last acknowledged push', async (t) => {
  const repo = repoName('marked-race');
  const versions = new Map<string, number>(); // manifest digest -> version
  let acked = -1;
  let done = false;
  const stale: string[] = [];
  let reads = 0;
  const reader = async (): Promise<void> => {
    while (!done) {
      const floor = acked;
      const r = await getManifest(server.url, repo, 'moving', MT.ociManifest);
      reads++;
      if (floor < 0) continue;
      const seen = r.status === 200 ? versions.get(String(r.headers['docker-content-digest'])) : undefined;
      if (seen === undefined || seen < floor) stale.push(`acknowledged ${floor}, pulled ${r.status} ${seen ?? r.headers['docker-content-digest']}`);
    }
  };
  const writer = async (): Promise<void> => {
    try {
      for (let v = 0; v < 30; v++) {
        const config = configBlob({ version: v });
        const layer = randomBlob(256);
        await pushBlobs(server.url, repo, [config, layer]);
        const manifest = ociManifest({ config, layers: [layer] });
        versions.set(manifest.digest, v);
        const put = await putManifest(server.url, repo, 'moving', manifest);
        if (put.status !== 201) throw new Error(`push ${v}: ${put.status}`);
        acked = v;
      }
    } finally {
      done = true;
    }
  };
  await Promise.all([writer(), ...Array.from({ length: 8 }, reader)]);
  t.deepEqual(stale, []);
  t.true(reads > 30, `${reads} pulls raced the pushes`);
});

/**
 * Commands (any but this count's own serverStatus) the engine answered while `f` ran, the least
 * of three tries: the driver's periodic hello may land in one of them.
 */
async function commandsDuring(f: () => Promise<unknown>): Promise<number> {
  const count = async (): Promise<number> => {
    const ops = (await server.db.admin().command({ serverStatus: 1 }))['opcounters'] as Record<string, number>;
    return Object.values(ops).reduce((a, b) => a + b, 0);
  };
  let least = Infinity;
  for (let i = 0; i < 3; i++) {
    const before = await count();
    await f();
    least = Math.min(least, (await count()) - before - 1);
  }
  return least;
}

const tagList = async (repo: string, query = ''): Promise<{ tags: string[]; link: string | undefined }> => {
  const r = await request(server.url, `/v2/${repo}/tags/list${query}`);
  if (r.status !== 200) throw new Error(`tags/list: ${r.status} ${r.body.toString()}`);
  return { tags: r.json<{ tags: string[] }>().tags, link: r.headers['link'] as string | undefined };
};

test.serial("tags/list: a listing repeated, whole or by pages, asks nothing; another client's renames and deletes are in the next page", async (t) => {
  const repo = repoName('marked-list');
  for (const tag of ['a', 'b', 'c']) await pushedImage(repo, tag);
  t.deepEqual((await tagList(repo)).tags, ['a', 'b', 'c']);
  if (server.changeMarks) {
    t.is(await commandsDuring(() => tagList(repo)), 0, 'the whole list again');
    t.is(await commandsDuring(() => tagList(repo, '?n=1&last=a')), 0, 'a page of it');
    await pushedImage(repoName('marked-list-other'), 'x');
    t.is(await commandsDuring(() => tagList(repo)), 0, 'after a push to another repository');
  }
  const first = await tagList(repo, '?n=2');
  t.deepEqual(first.tags, ['a', 'b']);
  t.truthy(first.link);

  const renamed = await elsewhere().tags.updateMany({ repo_id: repo, name: 'b' }, { $set: { name: 'b2' } });
  t.true(renamed.modifiedCount > 0);
  t.deepEqual((await tagList(repo)).tags, ['a', 'b2', 'c']);
  await elsewhere().tags.deleteMany({ repo_id: repo, name: 'c' });
  const next = await tagList(repo, '?n=2&last=b');
  t.deepEqual(next.tags, ['b2'], 'the page after b, as the database now holds it');
  t.is(next.link, undefined, 'and nothing follows');

  await pushedImage(repo, 'd');
  t.deepEqual((await tagList(repo, '?n=5')).tags, ['a', 'b2', 'd'], "this server's own push");
});
