import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { pushSnapshotCreatedAt } from '../helpers/backup-ages.ts';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { steppedClock } from '../helpers/stepped-clock.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * `volreg ls --stale AGE [VOLUME...]`, the check a cron job runs: the volumes whose latest
 * snapshot is older than AGE, and those named that hold none, with exit 8; nothing and exit 0
 * when every one is recent (README "Monitoring backups").
 */

const DAY = 24 * 3600 * 1000;
let server: TestServer;
let work = '';
let tar: Buffer = Buffer.alloc(0);

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-ls-stale' });
  work = await mkdtemp(join(tmpdir(), 'volreg-ls-stale-'));
  tar = await buildTar([{ name: 'f', body: 'data' }]);
  await mkdir(join(work, 'volume'));
  await writeFile(join(work, 'volume', 'data'), 'today');
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

const volreg = (args: string[], env?: Record<string, string>) => runVolreg(args, { url: server.url, cwd: work, env });
const rows = (table: string): string[][] => table.trim().split('\n').slice(1).map((l) => l.split(/\s+/));

interface StaleJson {
  olderThanSeconds: number;
  checked: number;
  stale: Array<{ volume: string; latest: { tag: string; created: string } | null; ageSeconds: number | null }>;
}

test.serial('lists the volumes not backed up within the age and those named that hold none; exit 8, or 0 and silence', async (t) => {
  t.is((await volreg(['push', '-q', join(work, 'volume'), 'stale/fresh:nightly'])).code, 0);
  // 3d1h and half a minute: ages are judged by the registry's Date header, whole seconds, so an
  // age of exactly 3d1h would read 3d0h59m59s when the check runs within the push's second
  await pushSnapshotCreatedAt(server.url, 'stale/forgotten', 'nightly', new Date(Date.now() - 3 * DAY - 3600_000 - 30_000), tar);
  await pushSnapshotCreatedAt(server.url, 'stale/forgotten', 'before', new Date(Date.now() - 9 * DAY), tar);

  const all = await volreg(['ls', '--stale', '26h']);
  t.is(all.code, 8, all.stderr);
  t.deepEqual(rows(all.stdout).map((r) => [r[0], r[1], r[3]]), [['stale/forgotten', 'nightly', '3d1h']]);
  t.regex(all.stdout, /^VOLUME\s+LATEST\s+CREATED\s+AGE$/m);
  t.regex(all.stderr, /^volreg ls: 1 of 2 volumes have no snapshot newer than 26h$/m);

  const fine = await volreg(['ls', '--stale', '26h', 'stale/fresh']);
  t.is(fine.code, 0, fine.stderr);
  t.is(fine.stdout, '', 'nothing to say: nothing said (cron mails only output)');
  t.is(fine.stderr, '');
  t.is((await volreg(['ls', '--stale', '4d'])).code, 0, 'every volume has a snapshot newer than 4 days');

  const named = await volreg(['ls', '--stale', '1d12h', 'stale/fresh', 'stale/never-pushed', 'stale/forgotten']);
  t.is(named.code, 8);
  t.deepEqual(rows(named.stdout).map((r) => [r[0], r[3]]), [['stale/never-pushed', 'NONE'], ['stale/forgotten', '3d1h']]);

  const json = await volreg(['ls', '--stale', '93600', '--json', '-q', 'stale/forgotten', 'stale/never-pushed', 'stale/fresh']);
  t.is(json.code, 8);
  t.is(json.stderr, '');
  const report = JSON.parse(json.stdout) as StaleJson;
  t.is(report.olderThanSeconds, 93600);
  t.is(report.checked, 3);
  t.deepEqual(report.stale.map((s) => s.volume), ['stale/never-pushed', 'stale/forgotten']);
  t.is(report.stale[0]!.latest, null);
  t.is(report.stale[1]!.latest!.tag, 'nightly');
  t.true(report.stale[1]!.ageSeconds! >= (3 * DAY + 3600_000) / 1000 - 5 && report.stale[1]!.ageSeconds! < (3 * DAY + 3600_000) / 1000 + 600, String(report.stale[1]!.ageSeconds));
});

test.serial('deleting the latest snapshot\'s tag ages the volume to the one before; with none left it is gone, or NONE when named', async (t) => {
  await pushSnapshotCreatedAt(server.url, 'stale/db', 'monday', new Date(Date.now() - 5 * DAY), tar);
  t.is((await volreg(['push', '-q', join(work, 'volume'), 'stale/db:today'])).code, 0);
  t.is((await volreg(['ls', '--stale', '26h', 'stale/db'])).code, 0);

  t.is((await volreg(['rm', '-q', 'stale/db:today'])).code, 0);
  const older = await volreg(['ls', '--stale', '26h', 'stale/db']);
  t.is(older.code, 8);
  t.deepEqual(rows(older.stdout).map((r) => [r[0], r[1], r[3]]), [['stale/db', 'monday', '5d']]);

  t.is((await volreg(['rm', '-q', 'stale/db:monday'])).code, 0);
  const none = await volreg(['ls', '--stale', '26h', 'stale/db']);
  t.is(none.code, 8);
  t.deepEqual(rows(none.stdout).map((r) => [r[0], r[3]]), [['stale/db', 'NONE']]);
  const all = JSON.parse((await volreg(['ls', '--stale', '26h', '--json'])).stdout) as StaleJson;
  t.false(all.stale.some((s) => s.volume === 'stale/db'), 'not a volume any more');
});

test.serial('ages are judged by the registry\'s clock: a host whose clock is days ahead judges the same', async (t) => {
  const clock = await steppedClock();
  try {
    t.is((await volreg(['push', '-q', join(work, 'volume'), 'stale/clock:nightly'])).code, 0);
    await clock.step('+3d');
    const ahead = await volreg(['ls', '--stale', '26h', 'stale/clock'], clock.env);
    t.is(ahead.code, 0, ahead.stdout + ahead.stderr);
  } finally {
    await clock.close();
  }
});

test('bad usage is exit 2, found before the registry is asked', async (t) => {
  for (const [args, message] of [
    [['ls', '--stale', '1.5h'], /--stale wants an age such as 26h/],
    [['ls', '--stale', '0'], /--stale wants an age/],
    [['ls', '--stale', '26h', '--host', 'web-01'], /--host does not apply/],
    [['ls', '--stale', '26h', '--limit', '5'], /--limit does not apply/],
    [['ls', '--stale', '26h', 'Team/App'], /Team\/App/],
    [['ls', 'stale/a', 'stale/b'], /one volume at a time/],
  ] as const) {
    const r = await runVolreg([...args], { url: 'http://127.0.0.1:1', cwd: work });
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
});
