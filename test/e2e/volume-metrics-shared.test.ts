import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { latestByVolume, scrape, valueOf, type Sample } from '../helpers/backup-ages.ts';
import { spawnServer } from '../helpers/server.ts';
import { standaloneEngine } from '../helpers/standalone-engine.ts';

/**
 * Two `volreg serve` processes behind one balancer share a data directory and a standalone
 * engine (README "Using a real MongoDB"); Prometheus scrapes either. A snapshot pushed (or a tag
 * deleted) through one shows in the other's /metrics within VOLREG_METRICS_VOLUMES_MAX_AGE.
 */

const run = promisify(execFile);
const MAX_AGE_SECONDS = 2;

/** Scrapes `url` until `holds` says yes; gives up after a bound far above MAX_AGE_SECONDS. */
async function scrapeUntil(url: string, holds: (s: Sample[]) => boolean): Promise<Sample[] | null> {
  for (let tries = 0; tries < 60; tries++) {
    const { samples } = await scrape(url);
    if (holds(samples)) return samples;
    await new Promise((r) => setTimeout(r, 500));
  }
  return null;
}

test('a snapshot pushed or deleted through one serve process shows in the other\'s /metrics', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-metrics-shared-'));
  const engine = await standaloneEngine(join(root, 'engine'));
  const env = { VOLREG_MONGODB_URL: engine.url, VOLREG_METRICS_VOLUMES_MAX_AGE: String(MAX_AGE_SECONDS) };
  const a = await spawnServer({ dataDir: join(root, 'data'), env });
  const b = await spawnServer({ dataDir: join(root, 'data'), env });
  try {
    t.is(valueOf((await scrape(b.url)).samples, 'volreg_volumes'), 0);
    const archive = join(root, 'app.tar');
    await writeFile(archive, execFileSync('tar', ['-C', new URL('.', import.meta.url).pathname, '-cf', '-', 'volume-metrics-shared.test.ts']));
    const pushed = JSON.parse((await run('curl', ['-fsS', '-T', archive, `${a.url}/api/v1/volumes/team/app-data/tags/nightly`])).stdout) as { created: string };

    const seen = await scrapeUntil(b.url, (s) => latestByVolume(s).has('team/app-data'));
    t.truthy(seen, 'the push through the other process shows');
    t.is(latestByVolume(seen!).get('team/app-data'), Date.parse(pushed.created) / 1000);
    t.is(valueOf(seen!, 'volreg_volumes'), 1);

    t.is(valueOf((await scrape(a.url)).samples, 'volreg_volumes'), 1);
    await run('curl', ['-fsS', '-X', 'DELETE', `${b.url}/api/v1/volumes/team/app-data/tags/nightly`]);
    const gone = await scrapeUntil(a.url, (s) => valueOf(s, 'volreg_volumes') === 0);
    t.truthy(gone, 'the delete through the other process shows');
    t.false(latestByVolume(gone!).has('team/app-data'));
  } finally {
    a.kill('SIGKILL');
    b.kill('SIGKILL');
    await Promise.all([a.waitExit(), b.waitExit()]);
    await engine.stop();
    await rm(root, { recursive: true, force: true });
  }
});

test('/metrics answers with NaN volume figures, and logs the failure once per scrape, while the shared engine is down', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-metrics-down-'));
  const engine = await standaloneEngine(join(root, 'engine'));
  const server = await spawnServer({ dataDir: join(root, 'data'), env: { VOLREG_MONGODB_URL: engine.url, VOLREG_METRICS_VOLUMES_MAX_AGE: '1' } });
  const notRead = (): number => (server.stdout() + server.stderr()).split('\n').filter((l) => l.includes('volume figures for /metrics not read')).length;
  try {
    const archive = join(root, 'app.tar');
    await writeFile(archive, execFileSync('tar', ['-C', new URL('.', import.meta.url).pathname, '-cf', '-', 'volume-metrics-shared.test.ts']));
    await run('curl', ['-fsS', '-T', archive, `${server.url}/api/v1/volumes/team/app-data/tags/nightly`]);
    const up = (await scrape(server.url)).samples;
    t.is(valueOf(up, 'volreg_volumes'), 1);
    t.true(latestByVolume(up).has('team/app-data'));

    await engine.stop();
    await new Promise((r) => setTimeout(r, 1_200)); // past VOLREG_METRICS_VOLUMES_MAX_AGE
    for (const scrapes of [1, 2]) {
      const { samples } = await scrape(server.url); // a non-200 throws
      t.true(Number.isNaN(valueOf(samples, 'volreg_volumes')), 'volume count unknown');
      t.true(Number.isNaN(valueOf(samples, 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds')), 'oldest unknown');
      t.is(latestByVolume(samples).size, 0, 'no volume series from figures that could not be read');
      t.true(samples.some((s) => s.name.startsWith('volreg_storage_')), 'the rest of /metrics is still there');
      // the log line reaches the pipe after the reply may have: wait for it, then for any more
      for (let waited = 0; notRead() < scrapes && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 300));
      t.is(notRead(), scrapes, 'one warning per failed scrape, not one per gauge');
    }
  } finally {
    server.kill('SIGKILL');
    await server.waitExit();
    await engine.stop();
    await rm(root, { recursive: true, force: true });
  }
});
