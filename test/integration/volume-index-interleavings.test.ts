import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import anyTest, { type TestFn } from 'ava';
import { parseRepositoryName, parseTag } from '../../src/domain/names.ts';
import { inspectArchive } from '../../src/domain/volumes/archive-inspector.ts';
import { SnapshotRepository } from '../../src/metadata/snapshot-repository.ts';
import { VolregError } from '../../src/domain/errors.ts';
import { VolumeService, type VolumeManifests } from '../../src/services/volume-service.ts';
import { gate, heldAt } from '../helpers/held-services.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The snapshot index is written after the tag, without a transaction. These hold one side of a
 * push or a delete at the step where another request can slip in, and check that /api/v1 then
 * still tells the truth about what each tag holds.
 */

const test = anyTest as TestFn<{ server: TestServer; work: string; archives: Buffer[] }>;

test.before(async (t) => {
  const server = await startTestServer({ label: 'volume_index' });
  const work = await mkdtemp(join(tmpdir(), 'volreg-volume-index-'));
  const archives: Buffer[] = [];
  for (const n of [1, 2, 3]) {
    const dir = join(work, `tree${n}`);
    await mkdir(dir);
    await writeFile(join(dir, 'data.txt'), `contents ${n}\n`);
    // one entry a restore refuses (the server stores it and counts it: unsafeEntries)
    if (n === 2) await symlink('/etc/hostname', join(dir, 'outside'));
    archives.push(execFileSync('tar', ['-C', dir, '-czf', '-', '.']));
  }
  t.context = { server, work, archives };
});

test.after.always(async (t) => {
  await t.context.server?.close();
  await rm(t.context.work, { recursive: true, force: true });
});

interface SnapshotReply {
  manifestDigest: string;
  host: string | null;
  unsafeEntries: number | null;
  source: 'api' | 'oci';
}

async function push(url: string, name: string, tag: string, body: Buffer, host: string): Promise<SnapshotReply> {
  const res = await fetch(`${url}/api/v1/volumes/${name}/tags/${tag}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'X-Volreg-Host': host } });
  if (res.status !== 201) throw new Error(`push: ${res.status} ${await res.text()}`);
  return (await res.json()) as SnapshotReply;
}

async function json<T>(url: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T };
}

type Listing = { total: number; snapshots: Array<{ tag: string; manifestDigest: string }> };
type Volumes = { volumes: Array<{ volume: string; snapshots: number; latest: { tag: string; manifestDigest: string } }> };

test.serial('a delete racing a push of the same tag removes only what it read: the pushed snapshot stays tagged', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/delete';
  const a = await push(server.url, name, 't', archives[0]!, 'host-a');

  const held = gate();
  const real = server.services.manifests;
  const manifests = Object.assign(Object.create(real) as VolumeManifests, { delete: heldAt(held, 'before', real.delete.bind(real)) });
  const volumes = new VolumeService(server.services.blobs, manifests, new SnapshotRepository(server.db), inspectArchive);
  const deleting = volumes.delete(parseRepositoryName(name), parseTag('t'));
  await held.reached; // the delete has read snapshot A
  const b = await push(server.url, name, 't', archives[1]!, 'host-b');
  held.open();
  const deleted = await deleting;

  t.is(String(deleted.manifestDigest), a.manifestDigest, 'the delete reports what it read');
  const now = await json<SnapshotReply>(`${server.url}/api/v1/volumes/${name}/tags/t`);
  t.is(now.status, 200, 'the later push keeps its tag');
  t.is(now.body.manifestDigest, b.manifestDigest);
  t.is(now.body.host, 'host-b');
  const list = await json<Listing>(`${server.url}/api/v1/volumes/${name}/tags`);
  t.deepEqual(list.body.snapshots.map((s) => [s.tag, s.manifestDigest]), [['t', b.manifestDigest]]);
});

test.serial('two pushes to one tag that index in the other order than they tag: listings show the snapshot the tag holds', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/push';

  const held = gate();
  const index = new SnapshotRepository(server.db);
  const snapshots = Object.assign(Object.create(index) as SnapshotRepository, {
    // the push has tagged, read the index and the tag, and is about to index its snapshot: held
    replaceStale: heldAt(held, 'before', index.replaceStale.bind(index)),
  });
  const volumes = new VolumeService(server.services.blobs, server.services.manifests, snapshots, inspectArchive);
  const pushingA = volumes.put(parseRepositoryName(name), parseTag('t'), Readable.from([archives[0]!]), { host: 'host-a', labels: {} });
  await held.reached;
  const b = await push(server.url, name, 't', archives[1]!, 'host-b'); // tagged and indexed
  held.open();
  await pushingA; // indexes A only where the document is still the one it read: it is not

  const list = await json<Listing>(`${server.url}/api/v1/volumes/${name}/tags`);
  t.is(list.status, 200);
  t.deepEqual(list.body.snapshots.map((s) => [s.tag, s.manifestDigest]), [['t', b.manifestDigest]]);
  t.is(list.body.total, 1);
  const vols = await json<Volumes>(`${server.url}/api/v1/volumes`);
  const v = vols.body.volumes.find((x) => x.volume === name);
  t.is(v?.latest.manifestDigest, b.manifestDigest);
  t.is(v?.snapshots, 1);
  const meta = await json<SnapshotReply>(`${server.url}/api/v1/volumes/${name}/tags/t`);
  t.is(meta.body.host, 'host-b', 'described from the config of the snapshot the tag holds');
  t.is(meta.body.source, 'api', 'and from what its push recorded: nothing of it is lost');
  t.is(meta.body.unsafeEntries, 1);
});

test.serial('a push whose index write is lost: its snapshot is described again whole from its tag', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/lost';
  const index = new SnapshotRepository(server.db);
  // as a crash right after the tag leaves it: no document for this tag at all
  const snapshots = Object.assign(Object.create(index) as SnapshotRepository, { replaceStale: async () => undefined });
  const volumes = new VolumeService(server.services.blobs, server.services.manifests, snapshots, inspectArchive);
  const pushed = await volumes.put(parseRepositoryName(name), parseTag('t'), Readable.from([archives[1]!]), { host: 'host-b', labels: { k: 'v' } });
  t.is(await index.get(name, 't'), null, 'nothing indexed');

  const meta = await json<SnapshotReply & { labels: Record<string, string>; entries: number; created: string }>(`${server.url}/api/v1/volumes/${name}/tags/t`);
  t.is(meta.status, 200);
  t.like(meta.body, {
    manifestDigest: pushed.manifestDigest,
    host: 'host-b',
    labels: { k: 'v' },
    entries: pushed.entries!,
    created: pushed.created,
    unsafeEntries: 1,
    source: 'api',
  });
  const list = await json<{ snapshots: SnapshotReply[] }>(`${server.url}/api/v1/volumes/${name}/tags`);
  t.like(list.body.snapshots[0], { manifestDigest: pushed.manifestDigest, unsafeEntries: 1, source: 'api' });
  t.like(await index.get(name, 't'), { manifestDigest: pushed.manifestDigest, host: 'host-b', unsafeEntries: 1, source: 'api' }, 'indexed by the read');
});

test.serial('a reader that looked at the tag before a push and a verify leaves what they wrote in the index', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/reader';
  await push(server.url, name, 't', archives[0]!, 'host-a');

  const held = gate();
  const real = server.services.manifests;
  const manifests = Object.assign(Object.create(real) as VolumeManifests, { get: heldAt(held, 'after', real.get.bind(real)) });
  const reader = new VolumeService(server.services.blobs, manifests, new SnapshotRepository(server.db), inspectArchive);
  const reading = reader.get(parseRepositoryName(name), parseTag('t'));
  await held.reached; // the reader has looked at the tag: it held A
  const b = await push(server.url, name, 't', archives[1]!, 'host-b');
  const verified = await fetch(`${server.url}/api/v1/volumes/${name}/tags/t/verify`, { method: 'POST' });
  t.is(verified.status, 200);
  await verified.arrayBuffer();
  held.open();
  await reading;

  const index = await new SnapshotRepository(server.db).get(name, 't');
  t.like(index, { manifestDigest: b.manifestDigest, host: 'host-b', source: 'api', unsafeEntries: 1, lastVerify: { ok: true } });
  const meta = await json<SnapshotReply & { lastVerify: { ok: boolean } | null }>(`${server.url}/api/v1/volumes/${name}/tags/t`);
  t.is(meta.body.manifestDigest, b.manifestDigest);
  t.is(meta.body.lastVerify?.ok, true, 'the verify result stays with the snapshot');
});

test.serial('a tag moved, deleted or added through /v2: the snapshot listing and the volume list follow the tags', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/v2';
  await push(server.url, name, 'keep', archives[0]!, 'h');
  await push(server.url, name, 'drop', archives[1]!, 'h');
  const other = await push(server.url, name, 'other', archives[2]!, 'h3');
  // the manifest of "other" pushed through /v2 to "keep": the index still names the old one
  const accept = { Accept: 'application/vnd.oci.image.manifest.v1+json' };
  const m = Buffer.from(await (await fetch(`${server.url}/v2/${name}/manifests/other`, { headers: accept })).arrayBuffer());
  const moved = await fetch(`${server.url}/v2/${name}/manifests/keep`, { method: 'PUT', body: new Uint8Array(m), headers: { 'Content-Type': accept.Accept } });
  t.is(moved.status, 201);
  await moved.arrayBuffer();
  const del = await fetch(`${server.url}/v2/${name}/manifests/drop`, { method: 'DELETE' });
  t.is(del.status, 202);
  await del.arrayBuffer();
  // and a tag no document names (as a crash between tag and index, or a push through /v2 leaves)
  const added = await fetch(`${server.url}/v2/${name}/manifests/extra`, { method: 'PUT', body: new Uint8Array(m), headers: { 'Content-Type': accept.Accept } });
  t.is(added.status, 201);
  await added.arrayBuffer();

  // the volume list first: it must not count "drop" nor show "keep" as it was
  const vols = await json<Volumes>(`${server.url}/api/v1/volumes`);
  const v = vols.body.volumes.find((x) => x.volume === name);
  t.is(v?.snapshots, 3);
  const list = await json<Listing>(`${server.url}/api/v1/volumes/${name}/tags`);
  t.deepEqual(list.body.snapshots.map((s) => [s.tag, s.manifestDigest]).sort(), [
    ['extra', other.manifestDigest],
    ['keep', other.manifestDigest],
    ['other', other.manifestDigest],
  ]);
  t.is(list.body.total, 3);
});

test.serial('a push that dies before its tag leaves the tag and the index as they were', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/crash';
  const before = await push(server.url, name, 't', archives[0]!, 'host-a');
  // the push dies once its layer, config and push record are stored, before its tag
  const died = new Error('crashed');
  const real = server.services.manifests;
  const manifests = Object.assign(Object.create(real) as VolumeManifests, { put: () => Promise.reject(died) });
  const index = new SnapshotRepository(server.db);
  const volumes = new VolumeService(server.services.blobs, manifests, index, inspectArchive);
  await t.throwsAsync(volumes.put(parseRepositoryName(name), parseTag('t'), Readable.from([archives[1]!]), { host: 'host-b', labels: {} }), { is: died });
  t.is(String((await index.get(name, 't'))?.manifestDigest), before.manifestDigest);

  const list = await json<Listing>(`${server.url}/api/v1/volumes/${name}/tags`);
  t.deepEqual(list.body.snapshots.map((s) => [s.tag, s.manifestDigest]), [['t', before.manifestDigest]]);
  const meta = await json<SnapshotReply>(`${server.url}/api/v1/volumes/${name}/tags/t`);
  t.is(meta.body.host, 'host-a');
});

test.serial('a push refused at its tag leaves the verify result of the snapshot the tag holds', async (t) => {
  const { server, archives } = t.context;
  const name = 'race/refused';
  const held = await push(server.url, name, 't', archives[0]!, 'host-a');
  const verified = await fetch(`${server.url}/api/v1/volumes/${name}/tags/t/verify`, { method: 'POST' });
  t.is(verified.status, 200);
  await verified.arrayBuffer();
  // refused at the tag's own write (a precondition a racing push made false since the early check)
  const refused = new VolregError('PRECONDITION_FAILED', 'tag t does not match the precondition');
  const real = server.services.manifests;
  const manifests = Object.assign(Object.create(real) as VolumeManifests, { put: () => Promise.reject(refused) });
  const volumes = new VolumeService(server.services.blobs, manifests, new SnapshotRepository(server.db), inspectArchive);
  await t.throwsAsync(volumes.put(parseRepositoryName(name), parseTag('t'), Readable.from([archives[1]!]), { host: 'host-b', labels: {} }), { is: refused });

  const meta = await json<SnapshotReply & { lastVerify: { ok: boolean } | null }>(`${server.url}/api/v1/volumes/${name}/tags/t`);
  t.is(meta.body.manifestDigest, held.manifestDigest);
  t.is(meta.body.lastVerify?.ok, true);
});
