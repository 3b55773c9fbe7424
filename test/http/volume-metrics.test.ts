import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { planStats } from '../../src/mongo-engine/query-executor.ts';
import { latestByVolume, pushSnapshotCreatedAt, scrape, valueOf } from '../helpers/backup-ages.ts';
import { bodyWhen, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * /metrics says how recently each volume was backed up: the time of each volume's latest
 * snapshot, the oldest of them, and how many volumes there are, as the volume list has them
 * (README "Monitoring backups"). Volume names are in it only as far as VOLREG_METRICS_VOLUMES
 * lets them, and not at all by default when authentication is on (/metrics stays open).
 */

const DAY = 24 * 3600 * 1000;
let tar = Buffer.alloc(0);
const servers: TestServer[] = [];
const dir = mkdtempSync(join(tmpdir(), 'volreg-volume-metrics-'));

test.before(() => {
  tar = execFileSync('tar', ['-C', new URL('.', import.meta.url).pathname, '-cf', '-', 'volume-metrics.test.ts']);
});
test.after.always(async () => {
  for (const s of servers) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A server whose figures are read at every scrape whatever the backend (VOLREG_METRICS_VOLUMES_MAX_AGE=0). */
async function server(label: string, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ label, env: { VOLREG_METRICS_VOLUMES_MAX_AGE: '0', ...env } });
  servers.push(s);
  return s;
}

interface Listed {
  total: number;
  volumes: Array<{ volume: string; latest: { tag: string; created: string } }>;
}

async function volumeList(s: TestServer): Promise<Listed> {
  return JSON.parse((await bodyWhen('list', request(s.url, '/api/v1/volumes?limit=1000'), 200)).toString('utf8')) as Listed;
}

test('each volume\'s latest snapshot time, the oldest of them and the number of volumes, as the volume list has them', async (t) => {
  const s = await server('http_volume_metrics');
  const empty = await scrape(s.url);
  t.is(valueOf(empty.samples, 'volreg_volumes'), 0);
  t.true(Number.isNaN(valueOf(empty.samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds')), 'no volume: no oldest time (an alert on it stays quiet)');

  const threeDaysAgo = new Date(Date.now() - 3 * DAY);
  await bodyWhen('push', request(s.url, '/api/v1/volumes/team/app/tags/nightly', { method: 'PUT', body: tar }), 201);
  await pushSnapshotCreatedAt(s.url, 'team/forgotten', 'nightly', threeDaysAgo, tar);
  await pushSnapshotCreatedAt(s.url, 'team/forgotten', 'older', new Date(threeDaysAgo.getTime() - DAY), tar);

  const { samples, text } = await scrape(s.url);
  t.regex(text, /^# TYPE volreg_volume_latest_snapshot_timestamp_seconds gauge$/m);
  t.is(valueOf(samples, 'volreg_volumes'), 2);
  const listed = await volumeList(s);
  const latest = latestByVolume(samples);
  t.deepEqual([...latest.keys()].sort(), ['team/app', 'team/forgotten']);
  for (const v of listed.volumes) t.is(latest.get(v.volume), Date.parse(v.latest.created) / 1000, v.volume);
  t.is(latest.get('team/forgotten'), threeDaysAgo.getTime() / 1000, 'the newest created of the volume, not its oldest');
  t.is(valueOf(samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds'), threeDaysAgo.getTime() / 1000);
  // what the README's alert rule computes
  const overdue = [...latest].filter(([, at]) => Date.now() / 1000 - at > 26 * 3600).map(([v]) => v);
  t.deepEqual(overdue, ['team/forgotten']);
});

test('deleting the latest snapshot\'s tag makes the one before it the latest; a volume with none left is gone from the figures', async (t) => {
  const s = await server('http_volume_metrics_delete');
  const older = new Date(Date.now() - 5 * DAY);
  const newer = new Date(Date.now() - 2 * DAY);
  await pushSnapshotCreatedAt(s.url, 'team/db', 'monday', older, tar);
  await pushSnapshotCreatedAt(s.url, 'team/db', 'thursday', newer, tar);
  await bodyWhen('push', request(s.url, '/api/v1/volumes/team/web/tags/today', { method: 'PUT', body: tar }), 201);
  t.is(latestByVolume((await scrape(s.url)).samples).get('team/db'), newer.getTime() / 1000);

  await bodyWhen('delete', request(s.url, '/api/v1/volumes/team/db/tags/thursday', { method: 'DELETE' }), 200);
  let { samples } = await scrape(s.url);
  t.is(latestByVolume(samples).get('team/db'), older.getTime() / 1000, 'the volume is now backed up as of its older snapshot');
  t.is(valueOf(samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds'), older.getTime() / 1000);

  // through /v2 too (the snapshot index does not hear of it)
  await bodyWhen('v2 delete', request(s.url, '/v2/team/db/manifests/monday', { method: 'DELETE' }), 202);
  ({ samples } = await scrape(s.url));
  t.false(latestByVolume(samples).has('team/db'), 'no snapshot left: no series');
  t.is(valueOf(samples, 'volreg_volumes'), 1);
  t.is(valueOf(samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds'), latestByVolume(samples).get('team/web'));
});

test('VOLREG_METRICS_VOLUMES gives series to that many volumes, those backed up longest ago first; 0 names none', async (t) => {
  const few = await server('http_volume_metrics_few', { VOLREG_METRICS_VOLUMES: '2' });
  const none = await server('http_volume_metrics_none', { VOLREG_METRICS_VOLUMES: '0' });
  for (const s of [few, none]) {
    for (const [i, v] of ['team/a', 'team/b', 'team/c', 'team/d'].entries()) {
      // c and a backed up longest ago
      await pushSnapshotCreatedAt(s.url, v, 'nightly', new Date(Date.now() - [3, 1, 4, 0.5][i]! * DAY), tar);
    }
  }
  const f = (await scrape(few.url)).samples;
  t.deepEqual([...latestByVolume(f).keys()].sort(), ['team/a', 'team/c']);
  t.is(valueOf(f, 'volreg_volumes'), 4, 'the count is of every volume');

  const n = await scrape(none.url);
  t.is(latestByVolume(n.samples).size, 0);
  t.notRegex(n.text, /team\//, 'no volume name anywhere in /metrics');
  t.is(valueOf(n.samples, 'volreg_volumes'), 4);
  t.true(Date.now() / 1000 - valueOf(n.samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds')! > 4 * DAY / 1000 - 60, 'the oldest still alerts');
});

test('with authentication on, the open /metrics names no volume unless VOLREG_METRICS_VOLUMES asks', async (t) => {
  const htpasswd = join(dir, 'htpasswd');
  execFileSync('htpasswd', ['-B', '-C', '4', '-b', '-c', htpasswd, 'ops', 'secret'], { stdio: 'ignore' });
  const auth = { Authorization: `Basic ${Buffer.from('ops:secret').toString('base64')}` };
  const closed = await server('http_volume_metrics_auth', { VOLREG_AUTH_FILE: htpasswd });
  const named = await server('http_volume_metrics_auth_named', { VOLREG_AUTH_FILE: htpasswd, VOLREG_METRICS_VOLUMES: '10' });
  for (const s of [closed, named]) await pushSnapshotCreatedAt(s.url, 'secret-project/db', 'nightly', new Date(Date.now() - DAY), tar, auth);

  const c = await scrape(closed.url); // without credentials, as Prometheus scrapes
  t.notRegex(c.text, /secret-project/);
  t.is(valueOf(c.samples, 'volreg_volumes'), 1);
  t.true(valueOf(c.samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds')! > 0);
  t.deepEqual([...latestByVolume((await scrape(named.url)).samples).keys()], ['secret-project/db']);
});

test('with the embedded engine, a scrape of a store nobody changed reads nothing, and one after a push shows it', async (t) => {
  // not VOLREG_METRICS_VOLUMES_MAX_AGE=0: the change marks alone decide
  const s = await startTestServer({ label: 'http_volume_metrics_marks' });
  servers.push(s);
  if (!s.changeMarks) {
    // another backend shares no change marks: the figures are read again after VOLREG_METRICS_VOLUMES_MAX_AGE (README)
    t.not(s.backend, 'engine');
    return;
  }
  for (let i = 0; i < 20; i++) await bodyWhen('push', request(s.url, `/api/v1/volumes/marks/v${i}/tags/nightly`, { method: 'PUT', body: tar }), 201);
  t.is(valueOf((await scrape(s.url)).samples, 'volreg_volumes'), 20);
  const before = planStats.recordsExamined;
  const again = await scrape(s.url);
  t.is(planStats.recordsExamined - before, 0, 'nothing read');
  t.is(valueOf(again.samples, 'volreg_volumes'), 20);

  const tomorrow = new Date(Date.now() + DAY);
  await pushSnapshotCreatedAt(s.url, 'marks/v7', 'newer', tomorrow, tar);
  t.is(latestByVolume((await scrape(s.url)).samples).get('marks/v7'), tomorrow.getTime() / 1000, 'the push is seen by the very next scrape');
});
