import { Readable } from 'node:stream';
import anyTest, { type TestFn } from 'ava';
import type { Collection } from 'mongodb';
import { pino } from 'pino';
import type { Digest } from '../../src/domain/digest.ts';
import { isVolregError } from '../../src/domain/errors.ts';
import { parseRepositoryName } from '../../src/domain/names.ts';
import { collectGarbage, type GcReport } from '../../src/maintenance/gc.ts';
import { BlobRepository } from '../../src/metadata/blob-repository.ts';
import { collections, type Collections } from '../../src/metadata/collections.ts';
import { RepoContentRepository } from '../../src/metadata/repo-content-repository.ts';
import { UploadRepository } from '../../src/metadata/upload-repository.ts';
import { BlobService } from '../../src/services/blob-service.ts';
import { ManifestService } from '../../src/services/manifest-service.ts';
import { UploadService } from '../../src/services/upload-service.ts';
import type { BlobStore } from '../../src/storage/blob-store.ts';
import { configBlob, ociManifest, randomBlob, type Blob } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, getManifest, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { gate, heldAt, manifestServiceWith, type Gate } from '../helpers/held-services.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Garbage collection and pushes, interleaved on purpose: a push is held at the exact step
 * where a collection could slip in (with a grace period of 0 and a clock two hours ahead, so
 * nothing is protected by its age), a collection runs to its end, then the push goes on. An
 * acknowledged push must have all its bytes; otherwise it must be refused and leave nothing
 * visible. gc-race.test.ts runs the same kinds of races freely, as they come.
 */

const test = anyTest as TestFn<{ server: TestServer; c: Collections; marked: Collections; store: BlobStore }>;

test.before(async (t) => {
  const server = await startTestServer({ label: 'gc_interleave', env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0' } });
  // on another backend (MONGODB_URL) there are no marks, and both modes below ask the database
  t.is(server.changeMarks !== undefined, server.backend === 'engine', 'the embedded engine shares its change marks');
  t.context = { server, c: collections(server.db), marked: collections(server.db, server.changeMarks), store: server.services.blobStore! };
});

/**
 * The manifest pushes below run twice: reading every answer from the database (as with an
 * external MongoDB), and keeping answers while the embedded engine's change marks stay put (as
 * `volreg serve` runs), where the push's own writes are kept too and a collection must still be seen.
 */
const MODES = [
  { mode: 'asking the database', pick: (x: { c: Collections }) => x.c },
  { mode: 'keeping reads by change marks', pick: (x: { marked: Collections }) => x.marked },
] as const;

test.after.always(async (t) => {
  await t.context.server?.close();
});

const logger = pino({ level: 'silent' });

function gcNow(c: Collections, store: BlobStore): Promise<GcReport> {
  return collectGarbage({ collections: c, blobStore: store, logger, graceSeconds: 0, deleteUntagged: true, dryRun: false, now: () => new Date(Date.now() + 2 * 3600_000) });
}

/** A ManifestService whose next manifest insert, or next tag write, waits at a gate. */
function manifestServiceHeldAt(c: Collections, step: 'insert' | 'tag'): { manifests: ManifestService; held: Gate } {
  const held = gate();
  const manifests = manifestServiceWith(c, (real) =>
    step === 'insert'
      ? { manifests: { insertIfAbsent: heldAt(held, 'before', real.manifests.insertIfAbsent.bind(real.manifests)) } }
      : { tags: { upsert: heldAt(held, 'before', real.tags.upsert.bind(real.tags)) } },
  );
  return { manifests, held };
}

/** A new repository holding a config and a layer, pushed through HTTP. */
async function repoWithBlobs(server: TestServer, label: string): Promise<{ repo: string; config: Blob; layer: Blob }> {
  const repo = repoName(label);
  const config = configBlob();
  const layer = randomBlob(3000);
  await pushBlobs(server.url, repo, [config, layer]);
  return { repo, config, layer };
}

// GC sweeps the whole database, so the tests of this file run one at a time.
for (const { mode, pick } of MODES) {
  test.serial(`a manifest push held between its reference check and its insert while GC takes the blobs away is refused, and nothing of it is visible (${mode})`, async (t) => {
    const { server, store } = t.context;
    const c = pick(t.context);
    const { repo, config, layer } = await repoWithBlobs(server, 'interleave-manifest');
    const m = ociManifest({ config, layers: [layer] });

    const { manifests, held } = manifestServiceHeldAt(c, 'insert');
    const push = manifests.put(parseRepositoryName(repo), 'v1', m.bytes, m.mediaType);
    push.catch(() => undefined);
    await held.reached; // the references were checked and found
    const report = await gcNow(c, store);
    // the interleaving happened: GC took both blobs, units and bytes
    t.true(report.blobUnits.count >= 2, JSON.stringify(report));
    t.is(await store.stat(layer.digest as Digest), null);
    held.open();

    const err = await t.throwsAsync(push);
    t.true(isVolregError(err) && err.code === 'MANIFEST_BLOB_UNKNOWN', String(err));
    t.is((await getManifest(server.url, repo, 'v1', ACCEPT_ALL)).status, 404);
    t.is((await getManifest(server.url, repo, m.digest, ACCEPT_ALL)).status, 404);
  });
}

for (const { mode, pick } of MODES) {
  test.serial(`a manifest push held before its tag while GC finds the manifest untagged: acknowledged means pullable by tag with every blob (${mode})`, async (t) => {
    const { server, store } = t.context;
    const c = pick(t.context);
    const { repo, config, layer } = await repoWithBlobs(server, 'interleave-tag');
    const m = ociManifest({ config, layers: [layer] });

    const { manifests, held } = manifestServiceHeldAt(c, 'tag');
    const push = manifests.put(parseRepositoryName(repo), 'v1', m.bytes, m.mediaType);
    push.catch(() => undefined);
    await held.reached; // stored and held by the repository, not yet tagged
    const report = await gcNow(c, store);
    t.true(report.untaggedManifests.count >= 1, JSON.stringify(report)); // GC took it for untagged
    held.open();

    const outcome = await push.then(
      () => 'acknowledged',
      (err: unknown) => (isVolregError(err) ? err.code : String(err)),
    );
    const byTag = await getManifest(server.url, repo, 'v1', ACCEPT_ALL);
    t.log(`the push: ${outcome}`);
    if (outcome === 'acknowledged') {
      t.true(byTag.status === 200 && byTag.body.equals(m.bytes), `GET by tag: ${byTag.status}`);
      for (const b of [config, layer]) {
        const r = await request(server.url, `/v2/${repo}/blobs/${b.digest}`);
        t.true(r.status === 200 && r.body.equals(b.bytes), `blob ${b.digest}: ${r.status}`);
      }
    } else {
      t.is(outcome, 'MANIFEST_BLOB_UNKNOWN');
      t.is(byTag.status, 404);
    }
  });
}

for (const { mode, pick } of MODES) {
  test.serial(`a manifest push held before its tag while GC takes it as untagged but its blobs stay (another tagged manifest uses them): held again and acknowledged, pullable by tag (${mode})`, async (t) => {
    const { server, store } = t.context;
    const c = pick(t.context);
    const { repo, config, layer } = await repoWithBlobs(server, 'interleave-retag');
    const other = ociManifest({ config, layers: [layer], annotations: { keeps: 'the blobs' } });
    t.is((await putManifest(server.url, repo, 'other', other)).status, 201);
    const m = ociManifest({ config, layers: [layer] });

    const { manifests, held } = manifestServiceHeldAt(c, 'tag');
    const push = manifests.put(parseRepositoryName(repo), 'v1', m.bytes, m.mediaType);
    push.catch(() => undefined);
    await held.reached;
    const report = await gcNow(c, store);
    t.true(report.untaggedManifests.count >= 1 && report.manifestUnits.count >= 1, JSON.stringify(report)); // taken, unit and all
    held.open();

    await push; // acknowledged
    const byTag = await getManifest(server.url, repo, 'v1', ACCEPT_ALL);
    t.true(byTag.status === 200 && byTag.body.equals(m.bytes), `GET by tag: ${byTag.status}`);
    for (const b of [config, layer]) {
      const r = await request(server.url, `/v2/${repo}/blobs/${b.digest}`);
      t.true(r.status === 200 && r.body.equals(b.bytes), `blob ${b.digest}: ${r.status}`);
    }
    // and the next collection keeps it: it is tagged now
    await gcNow(c, store);
    t.is((await getManifest(server.url, repo, 'v1', ACCEPT_ALL)).status, 200);
  });
}

/** A BlobService whose next unit upsert (the step after the commit) waits at a gate. */
function blobServiceHeldAtRecord(c: Collections, store: BlobStore): { blobs: BlobService; held: Gate } {
  const units = new BlobRepository(c);
  const held = gate();
  const gatedUnits = Object.assign(Object.create(units) as BlobRepository, { upsert: heldAt(held, 'before', units.upsert.bind(units)) });
  return { blobs: new BlobService({ store, units: gatedUnits, membership: new RepoContentRepository(c) }), held };
}

test.serial('a blob push held between its commit and its record while GC removes the bytes is refused and not made visible', async (t) => {
  const { server, c, store } = t.context;
  const first = repoName('interleave-first');
  const second = repoName('interleave-second');
  const blob = randomBlob(5000);
  await pushBlobs(server.url, first, [blob]);
  // no repository holds it any more: GC may collect it
  t.is((await request(server.url, `/v2/${first}/blobs/${blob.digest}`, { method: 'DELETE' })).status, 202);

  const { blobs, held } = blobServiceHeldAtRecord(c, store);
  const push = blobs.ingest(second, Readable.from([blob.bytes]), { expectedDigest: blob.digest as Digest });
  push.catch(() => undefined);
  await held.reached; // committed (the bytes were there: refreshed, not rewritten), not yet recorded
  const report = await gcNow(c, store);
  t.true(report.blobBytes.count >= 1, JSON.stringify(report));
  t.is(await store.stat(blob.digest as Digest), null);
  held.open();

  const err = await t.throwsAsync(push);
  t.true(isVolregError(err) && err.code === 'BLOB_UPLOAD_INVALID', String(err));
  t.is((await request(server.url, `/v2/${second}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
  // pushed again, it is whole
  await pushBlobs(server.url, second, [blob]);
  const r = await request(server.url, `/v2/${second}/blobs/${blob.digest}`);
  t.true(r.status === 200 && r.body.equals(blob.bytes));
});

test.serial('a chunked upload whose finishing PUT is held before its record while GC removes the bytes is refused, and its session is gone', async (t) => {
  const { server, c, store } = t.context;
  const first = repoName('interleave-chunked-first');
  const second = repoName('interleave-chunked-second');
  const blob = randomBlob(6000);
  await pushBlobs(server.url, first, [blob]);
  t.is((await request(server.url, `/v2/${first}/blobs/${blob.digest}`, { method: 'DELETE' })).status, 202);

  const { blobs, held } = blobServiceHeldAtRecord(c, store);
  const uploads = new UploadService({ store, blobs, sessions: new UploadRepository(c) });
  const started = await uploads.start(second);
  if (started.kind !== 'session') throw new Error('expected an upload session');
  await uploads.append(second, started.id, Readable.from([blob.bytes.subarray(0, 4000)]));
  const finish = uploads.finish(second, started.id, blob.digest as Digest, Readable.from([blob.bytes.subarray(4000)]));
  finish.catch(() => undefined);
  await held.reached; // committed, not yet recorded
  const report = await gcNow(c, store);
  t.true(report.blobBytes.count >= 1, JSON.stringify(report));
  held.open();

  const err = await t.throwsAsync(finish);
  t.true(isVolregError(err) && err.code === 'BLOB_UPLOAD_INVALID', String(err));
  t.is((await request(server.url, `/v2/${second}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
  const status = await t.throwsAsync(uploads.status(second, started.id));
  t.true(isVolregError(status) && status.code === 'BLOB_UPLOAD_UNKNOWN', String(status));
  t.is(await c.uploads.findOne({ _id: started.id }), null, 'no session document is left for the purge to find');
});

test.serial('a cross-repository mount held before its record while GC removes the blob falls back to "not mounted"', async (t) => {
  const { server, c, store } = t.context;
  const from = repoName('interleave-from');
  const to = repoName('interleave-to');
  const blob = randomBlob(4000);
  await pushBlobs(server.url, from, [blob]);

  const { blobs, held } = blobServiceHeldAtRecord(c, store);
  const mount = blobs.mount(from, to, blob.digest as Digest);
  await held.reached; // the source held it; not yet recorded in the target
  t.is((await request(server.url, `/v2/${from}/blobs/${blob.digest}`, { method: 'DELETE' })).status, 202);
  const report = await gcNow(c, store);
  t.true(report.blobBytes.count >= 1, JSON.stringify(report));
  held.open();

  t.is(await mount, null);
  t.is((await request(server.url, `/v2/${to}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
});

for (const { mode, pick } of MODES) {
  test.serial(`a blob push whose reused unit a collection deletes before the push holds it records a new unit: acknowledged means held (${mode})`, async (t) => {
    const { server, store } = t.context;
    const c = pick(t.context);
    const first = repoName('interleave-reused-first');
    const second = repoName('interleave-reused-second');
    const blob = randomBlob(3500);
    await pushBlobs(server.url, first, [blob]);
    // no repository holds it any more: a collection may delete its unit
    t.is((await request(server.url, `/v2/${first}/blobs/${blob.digest}`, { method: 'DELETE' })).status, 202);
    const reused = await c.blobs.findOne({ digest: blob.digest });
    t.truthy(reused);

    const units = new BlobRepository(c);
    // known by digest, as after a HEAD: the upsert's answer is then kept as the unit's, until its mark moves
    t.is((await units.findByDigest(blob.digest as Digest))?.id, reused!._id);
    const membership = new RepoContentRepository(c);
    const held = gate();
    const gatedMembership = Object.assign(Object.create(membership) as RepoContentRepository, { associate: heldAt(held, 'before', membership.associate.bind(membership)) });
    const push = new BlobService({ store, units, membership: gatedMembership }).ingest(second, Readable.from([blob.bytes]), { expectedDigest: blob.digest as Digest });
    await held.reached; // the upsert reused the unit; not yet held by the repository
    // what a collection does once it found the unit unheld (the bytes, just committed again, stay)
    t.is((await c.blobs.deleteOne({ _id: reused!._id })).deletedCount, 1);
    held.open();

    t.deepEqual(await push, { digest: blob.digest, size: blob.bytes.length });
    const now = await c.blobs.findOne({ digest: blob.digest });
    t.truthy(now, 'the blob has a unit');
    const holdings = await c.repoContentUnits.find({ repo_id: second, unit_type_id: 'docker_blob' }).toArray();
    t.deepEqual(holdings.map((h) => h.unit_id), [now!._id], 'the repository holds the unit that exists, and nothing else');
    const r = await request(server.url, `/v2/${second}/blobs/${blob.digest}`);
    t.true(r.status === 200 && r.body.equals(blob.bytes));
  });
}

test.serial('a collection that deletes a unit a push then holds, while another push records a new unit of its digest, moves the holding to the new unit', async (t) => {
  const { server, c, store } = t.context;
  const first = repoName('interleave-moved-first');
  const holder = repoName('interleave-moved-holder');
  const blob = randomBlob(2500);
  await pushBlobs(server.url, first, [blob]);
  t.is((await request(server.url, `/v2/${first}/blobs/${blob.digest}`, { method: 'DELETE' })).status, 202);
  const old = (await c.blobs.findOne({ digest: blob.digest }))!;
  const membership = new RepoContentRepository(c);
  await membership.ensureRepo(holder);

  // Right after the collection deletes the unit: one push (which had reused it) holds the old id,
  // another records a new unit of the same digest.
  let replacement: string | undefined;
  const blobs = new Proxy(c.blobs, {
    get(target, prop, receiver) {
      if (prop !== 'deleteOne') return Reflect.get(target, prop, receiver) as unknown;
      return async (...args: Parameters<typeof target.deleteOne>) => {
        const res = await target.deleteOne(...args);
        // this blob's unit only: the collection sweeps whatever else earlier tests left unheld
        if (res.deletedCount === 1 && (args[0] as { _id?: unknown })._id === old._id && replacement === undefined) {
          replacement = `${old._id}-new`;
          await target.insertOne({ ...old, _id: replacement });
          await membership.associate(holder, 'docker_blob', old._id);
        }
        return res;
      };
    },
  });
  const report = await collectGarbage({ collections: { ...c, blobs }, blobStore: store, logger, graceSeconds: 0, deleteUntagged: false, dryRun: false, now: () => new Date(Date.now() + 2 * 3600_000) });
  t.truthy(replacement, 'the collection deleted the unit');
  t.is(report.errors, 0, JSON.stringify(report));
  const holdings = await c.repoContentUnits.find({ repo_id: holder, unit_type_id: 'docker_blob' }).toArray();
  t.deepEqual(holdings.map((h) => h.unit_id), [replacement]);
  const r = await request(server.url, `/v2/${holder}/blobs/${blob.digest}`);
  t.true(r.status === 200 && r.body.equals(blob.bytes));
});

/**
 * `units` whose delete of `unit` first lets `push` run to its end, and then, should the delete
 * take the unit, stops the collection right there (as a kill or a lost connection would) before
 * it can check again and put the unit back. `deleted` tells what the delete took.
 */
function stoppingAfterItsDelete<D extends { _id: string; _last_updated: number }>(
  units: Collection<D>,
  unit: D,
  push: () => Promise<void>,
): { collection: Collection<D>; deleted: () => number | undefined } {
  let deleted: number | undefined;
  const collection = new Proxy(units, {
    get(target, prop, receiver) {
      if (prop !== 'deleteOne') return Reflect.get(target, prop, receiver) as unknown;
      return async (...args: Parameters<typeof target.deleteOne>) => {
        if ((args[0] as { _id?: unknown })._id !== unit._id || deleted !== undefined) return target.deleteOne(...args);
        // A collection takes only units stamped before it began (whole seconds), so any push after
        // it read the unit stamps a later second; the collection's clock runs two hours ahead, the push's does not.
        while (Math.floor(Date.now() / 1000) <= unit._last_updated) await new Promise((r) => setTimeout(r, 50));
        await push();
        const res = await target.deleteOne(...args);
        deleted = res.deletedCount;
        if (deleted === 1) throw new Error('the collection stopped right after its delete');
        return res;
      };
    },
  });
  return { collection, deleted: () => deleted };
}

test.serial('a push that reuses a unit a collection is about to delete makes the delete miss: a collection stopping right after it loses nothing acknowledged', async (t) => {
  const { server, c, store } = t.context;
  const first = repoName('interleave-stopped-first');
  const second = repoName('interleave-stopped-second');
  const layer = randomBlob(4500);
  await pushBlobs(server.url, first, [layer]);
  t.is((await request(server.url, `/v2/${first}/blobs/${layer.digest}`, { method: 'DELETE' })).status, 202);
  const unit = (await c.blobs.findOne({ digest: layer.digest }))!;
  const config = configBlob();
  const m = ociManifest({ config, layers: [layer] });

  // The collection found the unit unheld; right before its delete, a whole push reuses it and is
  // acknowledged. Should the delete take the unit, the collection stops there (a kill, a lost
  // connection) before it could check again and put it back.
  const { collection: blobs, deleted } = stoppingAfterItsDelete(c.blobs, unit, async () => {
    await pushBlobs(server.url, second, [layer, config]);
    t.is((await putManifest(server.url, second, 'v1', m)).status, 201);
  });
  await collectGarbage({ collections: { ...c, blobs }, blobStore: store, logger, graceSeconds: 0, deleteUntagged: false, dryRun: false, now: () => new Date(Date.now() + 2 * 3600_000) });
  t.is(deleted(), 0, 'the delete missed the unit the push had reused');
  // the next collection, as any later run
  const report = await gcNow(c, store);
  t.is(report.errors, 0, JSON.stringify(report));
  const pulled = await getManifest(server.url, second, 'v1', ACCEPT_ALL);
  t.is(pulled.status, 200);
  const r = await request(server.url, `/v2/${second}/blobs/${layer.digest}`);
  t.true(r.status === 200 && r.body.equals(layer.bytes), `layer: ${r.status}`);
});

test.serial('a push that reuses a manifest unit a collection is about to delete makes the delete miss: a collection stopping right after it loses nothing acknowledged', async (t) => {
  const { server, c, store } = t.context;
  const { repo: first, config, layer } = await repoWithBlobs(server, 'interleave-stopped-manifest-first');
  const second = repoName('interleave-stopped-manifest-second');
  const m = ociManifest({ config, layers: [layer] });
  t.is((await putManifest(server.url, first, m.digest, m)).status, 201);
  t.is((await request(server.url, `/v2/${first}/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
  const unit = (await c.manifests.findOne({ digest: m.digest }))!;

  const { collection: manifests, deleted } = stoppingAfterItsDelete(c.manifests, unit, async () => {
    await pushBlobs(server.url, second, [layer, config]);
    t.is((await putManifest(server.url, second, 'v1', m)).status, 201);
  });
  await collectGarbage({ collections: { ...c, manifests }, blobStore: store, logger, graceSeconds: 0, deleteUntagged: false, dryRun: false, now: () => new Date(Date.now() + 2 * 3600_000) });
  t.is(deleted(), 0, 'the delete missed the unit the push had reused');
  t.is((await gcNow(c, store)).errors, 0);
  const pulled = await getManifest(server.url, second, 'v1', ACCEPT_ALL);
  t.true(pulled.status === 200 && pulled.body.equals(m.bytes), `manifest: ${pulled.status}`);
});

test.serial('bytes a tagged manifest uses whose blob record is gone get their record back from a collection, held by the manifest\'s repository, instead of being deleted', async (t) => {
  const { server, c, store } = t.context;
  const repo = repoName('interleave-lost-record');
  const layer = randomBlob(5500);
  const config = configBlob();
  await pushBlobs(server.url, repo, [layer, config]);
  t.is((await putManifest(server.url, repo, 'v1', ociManifest({ config, layers: [layer] }))).status, 201);
  // the record lost (as a collection stopped between its delete and its re-check left it before the rule above)
  t.is((await c.blobs.deleteOne({ digest: layer.digest })).deletedCount, 1);

  const dry = await collectGarbage({ collections: c, blobStore: store, logger, graceSeconds: 0, deleteUntagged: true, dryRun: true, now: () => new Date(Date.now() + 2 * 3600_000) });
  t.true(dry.restoredBlobs.count >= 1, JSON.stringify(dry));
  t.is(await c.blobs.countDocuments({ digest: layer.digest }), 0, 'a dry run restores nothing');
  const report = await gcNow(c, store);
  t.is(report.errors, 0, JSON.stringify(report));
  t.true(report.restoredBlobs.count >= 1, JSON.stringify(report));
  t.is(await c.blobs.countDocuments({ digest: layer.digest }), 1);
  const r = await request(server.url, `/v2/${repo}/blobs/${layer.digest}`);
  t.true(r.status === 200 && r.body.equals(layer.bytes), `layer: ${r.status}`);
  // and it stays: the next collection finds it held and used
  t.is((await gcNow(c, store)).restoredBlobs.count, 0);
  t.is((await request(server.url, `/v2/${repo}/blobs/${layer.digest}`, { method: 'HEAD' })).status, 200);
});

test.serial('a blob push that GC does not touch is recorded as before (the re-check costs no false refusal)', async (t) => {
  const { server, c, store } = t.context;
  const repo = repoName('interleave-plain');
  const blob = randomBlob(2000);
  const { blobs, held } = blobServiceHeldAtRecord(c, store);
  const push = blobs.ingest(repo, Readable.from([blob.bytes]), { expectedDigest: blob.digest as Digest });
  await held.reached;
  held.open();
  t.deepEqual(await push, { digest: blob.digest, size: blob.bytes.length });
  const r = await request(server.url, `/v2/${repo}/blobs/${blob.digest}`);
  t.true(r.status === 200 && r.body.equals(blob.bytes));
});

for (const { mode, pick } of MODES) {
  test.serial(`a push reusing a manifest unit that a collection deletes before the push holds it: the manifest is held again, never acknowledged over nothing (${mode})`, async (t) => {
    const { server, store } = t.context;
    const c = pick(t.context);
    const { repo, config, layer } = await repoWithBlobs(server, 'interleave-reused-unit');
    // the blobs stay referenced by another tagged manifest, so only the unit is at stake
    t.is((await putManifest(server.url, repo, 'keeper', ociManifest({ config, layers: [layer], annotations: { keeper: 'yes' } }))).status, 201);
    const m = ociManifest({ config, layers: [layer] });
    t.is((await putManifest(server.url, repo, 'old', m)).status, 201);
    // deleted by digest: its unit stays, unheld, until a collection
    t.is((await request(server.url, `/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);

    const held = gate();
    const manifests = manifestServiceWith(c, (real) => ({ manifests: { addToRepo: heldAt(held, 'before', real.manifests.addToRepo.bind(real.manifests)) } }));
    const push = manifests.put(parseRepositoryName(repo), 'v1', m.bytes, m.mediaType);
    push.catch(() => undefined);
    await held.reached; // the push found the old unit and will reuse it
    const report = await gcNow(c, store);
    t.true(report.manifestUnits.count >= 1, JSON.stringify(report)); // the collection deleted that unit
    held.open();
    await push;

    const byTag = await getManifest(server.url, repo, 'v1', ACCEPT_ALL);
    t.is(byTag.status, 200, 'the acknowledged tag pulls');
    t.true(byTag.body.equals(m.bytes));
    t.is((await getManifest(server.url, repo, m.digest, ACCEPT_ALL)).status, 200);
    // and a second collection leaves it alone: it is held by a unit that exists
    await gcNow(c, store);
    t.is((await getManifest(server.url, repo, 'v1', ACCEPT_ALL)).status, 200);
    t.is((await request(server.url, `/v2/${repo}/blobs/${layer.digest}`)).status, 200);
  });
}
