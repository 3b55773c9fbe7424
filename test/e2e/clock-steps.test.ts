import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { configBlob, ociManifest, randomBlob, type Blob } from '../helpers/manifest-fixtures.ts';
import { spawnServer, type SpawnedServer } from '../helpers/server.ts';
import { steppedClock, type SteppedClock } from '../helpers/stepped-clock.ts';

/**
 * `volreg serve` on a wall clock the test steps while it runs (test/helpers/stepped-clock.ts):
 * a step forward does not make the purge take an upload a client is still sending, nor garbage
 * collection the layers of a push whose manifest is still to come, and a step back does not
 * list a new backup below older ones.
 */
let clock: SteppedClock;
let server: SpawnedServer;
let dataDir = '';

test.before(async () => {
  clock = await steppedClock();
  dataDir = await mkdtemp(join(tmpdir(), 'volreg-clock-steps-'));
  server = await spawnServer({
    dataDir,
    // a zone 12:45 ahead of UTC with daylight saving: nothing stored or shown may depend on it
    env: { ...clock.env, TZ: 'Pacific/Chatham', VOLREG_UPLOAD_PURGE_AFTER: '3', VOLREG_UPLOAD_PURGE_INTERVAL: '1', VOLREG_GC_INTERVAL: '1', VOLREG_GC_GRACE: '3', VOLREG_GC_DELETE_UNTAGGED: 'true' },
  });
});

test.after.always(async () => {
  server?.kill('SIGKILL');
  await server?.waitExit();
  await clock?.close();
  await rm(dataDir, { recursive: true, force: true });
});

/** resolves once the server has logged `line` `runs` more times (the purge's, garbage collection's) */
async function ran(line: string, runs: number): Promise<void> {
  const count = (): number => server.stdout().split(line).length;
  const target = count() + runs;
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(100)) if (count() >= target) return;
  throw new Error(`"${line}" was not logged`);
}
const purgeRuns = (runs: number) => ran('abandoned uploads purged', runs);
const gcRuns = (runs: number) => ran('gc finished', runs);

/**
 * The clock set right again, once the purge and collection runs that began before have ended:
 * the kernel's clock, which stamps files, is never stepped here, so a run that took its cutoff
 * on a clock stepped forward would take files written after the step for old ones.
 */
async function setRight(): Promise<void> {
  await clock.step('+0');
  await Promise.all([purgeRuns(2), gcRuns(2)]);
}

test.serial('an upload between chunks outlives a forward step past the purge age; left idle, it is purged', async (t) => {
  const start = await fetch(`${server.url}/v2/clock/upload/blobs/uploads/`, { method: 'POST' });
  t.is(start.status, 202);
  const session = new URL(start.headers.get('location')!, server.url).href;
  const chunk = (from: number) =>
    fetch(session, { method: 'PATCH', body: Buffer.alloc(1024, 1), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${from}-${from + 1023}` } });
  t.is((await chunk(0)).status, 202);
  await clock.step('+2h');
  await purgeRuns(2);
  const next = await chunk(1024);
  t.is(next.status, 202, await next.text());
  t.is(next.headers.get('range'), '0-2047');
  // nothing more comes: the purge takes it once it has been idle the purge age (3 s)
  await sleep(4000);
  await purgeRuns(1);
  t.is((await fetch(session)).status, 404);
  await setRight();
});

test.serial('a snapshot pushed after a step back is listed, and summed up, as the newest; a retention query by age does not take it', async (t) => {
  const api = `${server.url}/api/v1/volumes/clock/back`;
  // the smallest tar: two zero blocks
  const push = (tag: string) => fetch(`${api}/tags/${tag}`, { method: 'PUT', body: Buffer.alloc(1024) });
  t.is((await push('before')).status, 201);
  await clock.step('-40d');
  const after = await push('after');
  t.is(after.status, 201);
  const [older, newer] = await Promise.all(['before', 'after'].map(async (tag) => ((await (await fetch(`${api}/tags/${tag}`)).json()) as { created: string }).created));
  t.true(newer! > older!, `${newer} after ${older}`);
  t.regex(older!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.true(Math.abs(Date.parse(older!) - Date.now()) < 60_000, older);
  const list = (await (await fetch(`${api}/tags`)).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(
    list.snapshots.map((s) => s.tag),
    ['after', 'before'],
  );
  const volumes = (await (await fetch(`${server.url}/api/v1/volumes`)).json()) as { volumes: Array<{ volume: string; latest: { tag: string } }> };
  t.is(volumes.volumes.find((v) => v.volume === 'clock/back')?.latest.tag, 'after');
  // "older than 30 days", asked by a host whose clock is right
  const month = Math.floor(Date.now() / 1000) - 30 * 24 * 3600;
  const old = (await (await fetch(`${api}/tags?until=${month}`)).json()) as { snapshots: unknown[] };
  t.deepEqual(old.snapshots, []);
  await setRight();
});

test.serial('layers uploaded before a forward step past the grace period stay until their manifest comes', async (t) => {
  const [config, layer]: Blob[] = [configBlob(), randomBlob(4096)];
  for (const blob of [config!, layer!]) {
    const res = await fetch(`${server.url}/v2/clock/gc/blobs/uploads/?digest=${blob.digest}`, { method: 'POST', body: new Uint8Array(blob.bytes), headers: { 'Content-Type': 'application/octet-stream' } });
    t.is(res.status, 201);
  }
  await clock.step('+2h');
  await gcRuns(2);
  const manifest = ociManifest({ config: config!, layers: [layer!] });
  const put = await fetch(`${server.url}/v2/clock/gc/manifests/v1`, { method: 'PUT', body: new Uint8Array(manifest.bytes), headers: { 'Content-Type': manifest.mediaType } });
  t.is(put.status, 201, await put.text());
  t.is((await fetch(`${server.url}/v2/clock/gc/blobs/${layer!.digest}`)).status, 200);
  await setRight();
});
