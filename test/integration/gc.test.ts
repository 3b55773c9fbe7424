import { Readable } from 'node:stream';
import anyTest, { type TestFn } from 'ava';
import { pino } from 'pino';
import { digestOf, type Digest } from '../../src/domain/digest.ts';
import { collectGarbage, type GcOptions, type GcReport } from '../../src/maintenance/gc.ts';
import { collections, type Collections } from '../../src/metadata/collections.ts';
import type { BlobStore } from '../../src/storage/blob-store.ts';
import { ACCEPT_ALL, getManifest, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { configBlob, MT, ociIndex, ociManifest, randomBlob, type Blob, type Built } from '../helpers/manifest-fixtures.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { tarOfFiles } from '../helpers/tree.ts';

/**
 * Garbage collection against the real server: content is pushed over HTTP, GC runs in this
 * process on the server's database and blob store, and everything left must still pull
 * byte-identical. Content is aged by running GC with a clock two hours ahead.
 */

const test = anyTest as TestFn<{ server: TestServer; c: Collections; store: BlobStore }>;

test.before(async (t) => {
  const server = await startTestServer({ label: 'gc', env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  t.context = { server, c: collections(server.db), store: server.services.blobStore! };
});

test.after.always(async (t) => {
  await t.context.server?.close();
});

// GC sweeps the whole registry, so the tests of this file run one at a time.
const HOURS_AHEAD = () => new Date(Date.now() + 2 * 3600_000);
const logger = pino({ level: process.env.VOLREG_TEST_LOG ?? 'silent' });

function gc(t: { context: { c: Collections; store: BlobStore } }, opts: Partial<GcOptions> = {}): Promise<GcReport> {
  return collectGarbage({
    collections: t.context.c,
    blobStore: t.context.store,
    logger,
    graceSeconds: 3600,
    deleteUntagged: false,
    dryRun: false,
    now: HOURS_AHEAD,
    ...opts,
  });
}

interface Image {
  config: Blob;
  layers: Blob[];
  manifest: Built;
}

function image(layers = [randomBlob(300)]): Image {
  const config = configBlob();
  return { config, layers, manifest: ociManifest({ config, layers }) };
}

async function pushImage(base: string, repo: string, img: Image, reference: string): Promise<void> {
  await pushBlobs(base, repo, [img.config, ...img.layers]);
  const r = await putManifest(base, repo, reference, img.manifest);
  if (r.status !== 201) throw new Error(`manifest push failed: ${r.status} ${r.body.toString()}`);
}

async function blobState(t: { context: { c: Collections; store: BlobStore } }, digest: string): Promise<{ unit: boolean; bytes: boolean }> {
  return {
    unit: (await t.context.c.blobs.findOne({ digest })) !== null,
    bytes: (await t.context.store.stat(digest as Digest)) !== null,
  };
}

/** GET the tag's manifest and every blob it names: all byte-identical to what was pushed. */
async function pullsIdentical(base: string, repo: string, tag: string, img: Image): Promise<boolean> {
  const m = await getManifest(base, repo, tag, ACCEPT_ALL);
  if (m.status !== 200 || !m.body.equals(img.manifest.bytes)) return false;
  for (const b of [img.config, ...img.layers]) {
    const r = await request(base, `/v2/${repo}/blobs/${b.digest}`);
    if (r.status !== 200 || !r.body.equals(b.bytes)) return false;
  }
  return true;
}

async function deleteBlob(base: string, repo: string, digest: string): Promise<void> {
  const r = await request(base, `/v2/${repo}/blobs/${digest}`, { method: 'DELETE' });
  if (r.status !== 202) throw new Error(`blob delete failed: ${r.status}`);
}

test.serial('a blob no repository holds goes after the grace period (unit, then bytes); within it, it stays', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-orphan');
  const blob = randomBlob(1000);
  await pushBlobs(url, repo, [blob]);
  await deleteBlob(url, repo, blob.digest);
  t.deepEqual(await blobState(t, blob.digest), { unit: true, bytes: true });

  const withinGrace = await gc(t, { now: () => new Date() });
  t.deepEqual(await blobState(t, blob.digest), { unit: true, bytes: true }, 'younger than the grace period: kept');
  t.is(withinGrace.blobUnits.count, 0);

  const report = await gc(t);
  t.deepEqual(await blobState(t, blob.digest), { unit: false, bytes: false });
  t.true(report.blobUnits.count >= 1);
  t.true(report.blobBytes.bytes >= blob.size);
  t.is(report.errors, 0);
});

test.serial('a blob a HEAD found stays for the push that skipped uploading it, however old it was', async (t) => {
  const base = t.context.server.url;
  const repo = repoName('gc-head');
  const img = image();
  const notAsked = randomBlob(200);
  const blobs = [img.config, ...img.layers];
  await pushBlobs(base, repo, [...blobs, notAsked]);
  // pushed long ago, and since then no manifest kept them (the last tag using them went away)
  const longAgo = new Date(Date.now() - 3 * 3600_000);
  const digests = [...blobs, notAsked].map((b) => b.digest);
  const units = await t.context.c.blobs.find({ digest: { $in: digests } }).toArray();
  await t.context.c.blobs.updateMany({ digest: { $in: digests } }, { $set: { _last_updated: Math.floor(longAgo.getTime() / 1000) } });
  await t.context.c.repoContentUnits.updateMany({ repo_id: repo, unit_id: { $in: units.map((u) => u._id) } }, { $set: { updated: longAgo.toISOString() } });

  // a client pushing an image that uses them finds them and skips their upload...
  const asked = Date.now();
  for (const b of blobs) t.is((await request(base, `/v2/${repo}/blobs/${b.digest}`, { method: 'HEAD' })).status, 200);
  const unitOf = new Map(units.map((u) => [u.digest, u._id]));
  for (const b of blobs) {
    const assoc = await t.context.c.repoContentUnits.findOne({ repo_id: repo, unit_id: unitOf.get(b.digest)! });
    t.true(Date.parse(assoc!.updated) >= asked - 1000, 'the HEAD held the blob again');
  }
  // ...a collection runs before its manifest arrives (on the real clock, an hour's grace)...
  await gc(t, { now: () => new Date(), deleteUntagged: true });
  t.is((await request(base, `/v2/${repo}/blobs/${notAsked.digest}`, { method: 'HEAD' })).status, 404, 'the blob nobody asked for was collected');
  // ...and the manifest still finds everything it references
  const put = await putManifest(base, repo, 'v1', img.manifest);
  t.is(put.status, 201, put.body.toString());
  t.true(await pullsIdentical(base, repo, 'v1', img));
});

test.serial('a blob a kept manifest references stays even without any repository holding it', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-ref');
  const img = image();
  await pushImage(url, repo, img, 'v1');
  const layer = img.layers[0]!;
  await deleteBlob(url, repo, layer.digest);
  await gc(t);
  t.deepEqual(await blobState(t, layer.digest), { unit: true, bytes: true });
  t.deepEqual(await blobState(t, img.config.digest), { unit: true, bytes: true });
  const m = await getManifest(url, repo, 'v1', ACCEPT_ALL);
  t.true(m.body.equals(img.manifest.bytes));
  // pushed again (the commit is a no-op on the bytes GC kept), the image pulls whole again
  await pushBlobs(url, repo, [layer]);
  t.true(await pullsIdentical(url, repo, 'v1', img));
});

test.serial('a blob shared by two repositories stays after one deletes it', async (t) => {
  const { url } = t.context.server;
  const [a, b] = [repoName('gc-share-a'), repoName('gc-share-b')];
  const blob = randomBlob(2048);
  await pushBlobs(url, a, [blob]);
  await pushBlobs(url, b, [blob]);
  await deleteBlob(url, a, blob.digest);
  await gc(t, { deleteUntagged: false });
  t.deepEqual(await blobState(t, blob.digest), { unit: true, bytes: true });
  const r = await request(url, `/v2/${b}/blobs/${blob.digest}`);
  t.is(r.status, 200);
  t.true(r.body.equals(blob.bytes));
  t.is((await request(url, `/v2/${a}/blobs/${blob.digest}`)).status, 404);
});

test.serial('an untagged manifest goes only with deleteUntagged, and its blobs with it; a manifest an index holds stays', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-untagged');
  const shared = randomBlob(500);
  const old = image([shared, randomBlob(700)]);
  const current = image([shared, randomBlob(600)]);
  await pushImage(url, repo, old, 'latest');
  await pushImage(url, repo, current, 'latest'); // moves the tag: `old` is untagged now
  // an index tagged `multi` holding a manifest pushed by digest only
  const child = image();
  await pushImage(url, repo, child, child.manifest.digest);
  const index = ociIndex([{ manifest: child.manifest, platform: { os: 'linux', architecture: 'amd64' } }]);
  t.is((await putManifest(url, repo, 'multi', index)).status, 201);

  const without = await gc(t);
  t.is(without.untaggedManifests.count, 0);
  t.is((await getManifest(url, repo, old.manifest.digest, ACCEPT_ALL)).status, 200, 'kept without deleteUntagged');

  const dry = await gc(t, { deleteUntagged: true, dryRun: true });
  t.true(dry.untaggedManifests.count >= 1);
  t.true(dry.manifestUnits.count >= 1);
  t.is((await getManifest(url, repo, old.manifest.digest, ACCEPT_ALL)).status, 200, 'a dry run deletes nothing');

  const report = await gc(t, { deleteUntagged: true });
  t.is(report.errors, 0);
  t.is(report.untaggedManifests.count, dry.untaggedManifests.count, 'the dry run reported what the real run did');
  t.is(report.manifestUnits.count, dry.manifestUnits.count);
  t.is(report.blobUnits.count, dry.blobUnits.count);
  t.is(report.blobBytes.bytes, dry.blobBytes.bytes);
  t.is((await getManifest(url, repo, old.manifest.digest, ACCEPT_ALL)).status, 404);
  t.is(await t.context.c.manifests.findOne({ digest: old.manifest.digest }), null, 'the unit went with its last repository');
  t.deepEqual(await blobState(t, old.layers[1]!.digest), { unit: false, bytes: false }, 'a layer only the old manifest used goes');
  t.deepEqual(await blobState(t, old.config.digest), { unit: false, bytes: false });
  t.deepEqual(await blobState(t, shared.digest), { unit: true, bytes: true }, 'a layer the current manifest shares stays');

  t.is((await getManifest(url, repo, child.manifest.digest, ACCEPT_ALL)).status, 200, 'an index holds it');
  t.true(await pullsIdentical(url, repo, 'latest', current));
  const multi = await getManifest(url, repo, 'multi', ACCEPT_ALL);
  t.true(multi.body.equals(index.bytes));
  for (const b of [child.config, ...child.layers]) t.true((await request(url, `/v2/${repo}/blobs/${b.digest}`)).body.equals(b.bytes));
});

test.serial('with deleteUntagged, an untagged referrer of a tagged manifest stays, and so does an untagged subject of a tagged referrer', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-referrers');
  const subject = image();
  await pushImage(url, repo, subject, 'app');
  const sigBlob = randomBlob(64);
  const emptyConfig = configBlob();
  const signature = ociManifest({ config: emptyConfig, layers: [sigBlob], subject: subject.manifest, artifactType: 'application/vnd.example.sig' });
  await pushBlobs(url, repo, [emptyConfig, sigBlob]);
  t.is((await putManifest(url, repo, signature.digest, signature)).status, 201);

  const other = image();
  await pushImage(url, repo, other, other.manifest.digest); // untagged
  const sbomLayer = randomBlob(80);
  const sbomConfig = configBlob();
  const sbom = ociManifest({ config: sbomConfig, layers: [sbomLayer], subject: other.manifest });
  await pushBlobs(url, repo, [sbomConfig, sbomLayer]);
  t.is((await putManifest(url, repo, 'sbom', sbom)).status, 201); // the referrer is tagged

  const dangling = image();
  await pushImage(url, repo, dangling, dangling.manifest.digest); // untagged, nothing refers to it

  await gc(t, { deleteUntagged: true });
  t.is((await getManifest(url, repo, signature.digest, ACCEPT_ALL)).status, 200, 'referrer of a tagged manifest');
  t.is((await getManifest(url, repo, other.manifest.digest, ACCEPT_ALL)).status, 200, 'subject of a tagged referrer');
  t.is((await getManifest(url, repo, dangling.manifest.digest, ACCEPT_ALL)).status, 404, 'untagged and unreferenced');
  t.true((await request(url, `/v2/${repo}/blobs/${sigBlob.digest}`)).body.equals(sigBlob.bytes));
  t.true(await pullsIdentical(url, repo, 'app', subject));
  t.deepEqual(await blobState(t, dangling.layers[0]!.digest), { unit: false, bytes: false });
  // what gc took from the repository is taken from its tally too
  const tally = (await t.context.c.repos.findOne({ _id: repo }))?.content_unit_counts ?? {};
  const held = await t.context.c.repoContentUnits.aggregate<{ _id: string; n: number }>([{ $match: { repo_id: repo } }, { $group: { _id: '$unit_type_id', n: { $sum: 1 } } }]).toArray();
  t.deepEqual(Object.fromEntries(Object.entries(tally).filter(([, n]) => n !== 0)), Object.fromEntries(held.map((h) => [h._id, h.n])));
});

test.serial('bytes without a blob unit (a crash after commit) go after the grace period', async (t) => {
  const bytes = Buffer.from(`crash leftover ${Date.now()} ${Math.random()}`);
  const w = await t.context.store.createUpload();
  await w.append(Readable.from([bytes]));
  const { digest } = await w.commit();
  t.is(digest, digestOf(bytes));

  await gc(t, { now: () => new Date() });
  t.not(await t.context.store.stat(digest), null, 'younger than the grace period: kept');
  const dry = await gc(t, { dryRun: true });
  t.not(await t.context.store.stat(digest), null, 'a dry run deletes nothing');
  t.true(dry.orphanBytes.count >= 1);
  const report = await gc(t);
  t.is(await t.context.store.stat(digest), null);
  t.true(report.orphanBytes.bytes >= bytes.length);
});

test.serial('a dry run deletes nothing and reports what a run would', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-dry');
  const blob = randomBlob(4096);
  await pushBlobs(url, repo, [blob]);
  await deleteBlob(url, repo, blob.digest);
  const counts = async () => ({
    blobs: await t.context.c.blobs.countDocuments(),
    manifests: await t.context.c.manifests.countDocuments(),
    assocs: await t.context.c.repoContentUnits.countDocuments(),
    stored: (await collect(t.context.store.list())).length,
  });
  const before = await counts();
  const dry = await gc(t, { dryRun: true, deleteUntagged: true });
  t.deepEqual(await counts(), before);
  t.true(dry.blobUnits.count >= 1);
  t.true(dry.dryRun);
  const real = await gc(t, { deleteUntagged: true });
  t.is(real.blobUnits.count, dry.blobUnits.count);
  t.is(real.freedBytes, dry.freedBytes);
  t.deepEqual(await blobState(t, blob.digest), { unit: false, bytes: false });
});

test.serial('an abandoned upload session is purged with the grace period', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-upload');
  const r = await request(url, `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  t.is(r.status, 202);
  const location = String(r.headers.location);
  const report = await gc(t, { uploads: t.context.server.services.uploads! });
  t.true(report.uploadsPurged >= 1);
  t.is((await request(url, location)).status, 404);
});

test.serial('a manifest list nobody holds goes before the manifests it contains', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-list');
  const child = image();
  await pushImage(url, repo, child, child.manifest.digest);
  const index = ociIndex([{ manifest: child.manifest }]);
  t.is((await putManifest(url, repo, 'idx', index)).status, 201);
  // the whole repository deleted by tag and digest: nothing holds the units any more
  t.is((await request(url, `/v2/${repo}/manifests/${index.digest}`, { method: 'DELETE' })).status, 202);
  t.is((await request(url, `/v2/${repo}/manifests/${child.manifest.digest}`, { method: 'DELETE' })).status, 202);
  const report = await gc(t);
  t.is(await t.context.c.manifestLists.findOne({ digest: index.digest }), null);
  t.is(await t.context.c.manifests.findOne({ digest: child.manifest.digest }), null);
  t.true(report.manifestListUnits.count >= 1);
  // its blobs are still held by the repository (pushed there), so they stay
  t.deepEqual(await blobState(t, child.config.digest), { unit: true, bytes: true });
});

test.serial('after GC every remaining tag still pulls byte-identical', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gc-final');
  const imgs = [image(), image([randomBlob(5000), randomBlob(10)])];
  await pushImage(url, repo, imgs[0]!, 'a');
  await pushImage(url, repo, imgs[1]!, 'b');
  await pushImage(url, repo, image(), 'gone');
  t.is((await request(url, `/v2/${repo}/manifests/gone`, { method: 'DELETE' })).status, 202);
  await gc(t, { deleteUntagged: true });
  await gc(t, { deleteUntagged: true });
  t.true(await pullsIdentical(url, repo, 'a', imgs[0]!));
  t.true(await pullsIdentical(url, repo, 'b', imgs[1]!));
  // and every tag of every repository of this file
  for (const tag of await t.context.c.tags.find({}).toArray()) {
    const m = await getManifest(url, tag.repo_id, tag.name, ACCEPT_ALL);
    t.is(m.status, 200, `${tag.repo_id}:${tag.name}`);
    if (m.headers['content-type'] === MT.ociManifest) {
      const doc = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
      for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
        const b = await request(url, `/v2/${tag.repo_id}/blobs/${d}`);
        t.is(b.status, 200);
        t.is(digestOf(b.body), d as Digest);
      }
    }
  }
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

test.serial("a snapshot's push record goes with its manifest, after the grace period; the kept snapshot's stays", async (t) => {
  const { url } = t.context.server;
  const volume = repoName('gc-snap');
  const push = async (tag: string): Promise<string> => {
    const r = await request(url, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'PUT', body: await tarOfFiles({ [`${tag}.txt`]: randomBlob(700).bytes }) });
    if (r.status !== 201) throw new Error(`snapshot push failed: ${r.status} ${r.body.toString()}`);
    return String((JSON.parse(r.body.toString()) as { manifestDigest: string }).manifestDigest);
  };
  const dropped = await push('dropped');
  const kept = await push('kept');
  t.is((await request(url, `/api/v1/volumes/${volume}/tags/dropped`, { method: 'DELETE' })).status, 200);
  const recorded = async (digest: string) => (await t.context.c.volumePushRecords.findOne({ _id: digest })) !== null;

  t.is((await gc(t, { deleteUntagged: true, now: () => new Date() })).pushRecords, 0, 'within the grace period nothing goes');
  const dry = await gc(t, { deleteUntagged: true, dryRun: true });
  t.true(dry.pushRecords >= 1);
  t.true(await recorded(dropped), 'a dry run deletes nothing');
  const real = await gc(t, { deleteUntagged: true });
  t.is(real.pushRecords, dry.pushRecords);
  t.false(await recorded(dropped));
  t.true(await recorded(kept));
  const meta = await request(url, `/api/v1/volumes/${volume}/tags/kept`);
  t.like(JSON.parse(meta.body.toString()), { manifestDigest: kept, source: 'api', unsafeEntries: 0 });
});

test.serial('notes of refused tag writes go once an hour old, whatever the grace period', async (t) => {
  const { c } = t.context;
  const at = (msAgo: number) => new Date(Date.now() - msAgo);
  const note = (id: string, recorded: Date) => ({
    _id: id,
    unit_id: `unit-${id}`,
    repo_id: 'gc-notes',
    name: 'latest',
    schema_version: 2 as const,
    manifest_digest: digestOf(Buffer.from(`pushed ${id}`)),
    previous_digest: digestOf(Buffer.from(`before ${id}`)),
    previous_type: 'image' as const,
    recorded,
  });
  await c.refusedTagWrites.insertMany([note('old', at(2 * 3600_000)), note('recent', at(10 * 60_000))]);
  const left = async () => (await c.refusedTagWrites.find({ repo_id: 'gc-notes' }).toArray()).map((d) => d._id).sort();

  const dry = await gc(t, { graceSeconds: 0, now: () => new Date(), dryRun: true });
  t.is(dry.refusedTagWrites, 1);
  t.deepEqual(await left(), ['old', 'recent'], 'a dry run deletes nothing');
  const real = await gc(t, { graceSeconds: 0, now: () => new Date() });
  t.is(real.refusedTagWrites, 1, 'with no grace period, a note ten minutes old stays');
  t.deepEqual(await left(), ['recent']);
  t.is((await gc(t, { graceSeconds: 0 })).refusedTagWrites, 1, 'an hour later it goes too');
  t.deepEqual(await left(), []);
});
