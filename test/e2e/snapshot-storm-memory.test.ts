import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { spawnServer } from '../helpers/server.ts';
import { MIB, PeakRss } from './upload-faults-client.ts';

/**
 * Many hosts pushing snapshots at once. The README sizes a server at 10 MB per concurrent
 * snapshot upload, counted from a fresh start; counted from a warmed-up server (the inspection
 * thread started), 48 at once grew it by 3.1-5.2 MB each here. This holds it under 8.
 */

const run = promisify(execFile);
const UPLOADS = 48;
/** per concurrent snapshot upload, over a warmed-up server (the /v2 part alone costs 2.5-3 MB) */
const GROWTH_PER_UPLOAD = 8 * MIB;

test('48 snapshot uploads at once grow the server by less than 8 MB each', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-snapshot-storm-'));
  await writeFile(join(dir, 'data.bin'), randomBytes(16 * MIB));
  await run('tar', ['-czf', join(dir, 'snap.tar.gz'), '-C', dir, 'data.bin']);
  const srv = await spawnServer({ dataDir: join(dir, 'data'), env: { VOLREG_LOG_LEVEL: 'warn' } });
  const push = (name: string, rate: string): Promise<string> =>
    run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--limit-rate', rate, '-T', join(dir, 'snap.tar.gz'), `${srv.url}/api/v1/volumes/${name}/tags/t`]).then(
      (r) => r.stdout,
    );
  const rss = new PeakRss(srv.child.pid!);
  try {
    // the inspection thread starts on first use: it is not growth per upload
    t.is(await push('warm', '1000M'), '201');
    const baseline = await rss.from();
    const codes = await Promise.all(Array.from({ length: UPLOADS }, (_, i) => push(`storm-${i}`, '8M')));
    t.deepEqual(
      codes.filter((c) => c !== '201'),
      [],
    );
    const peak = rss.peak;
    const perUpload = (peak - baseline) / UPLOADS;
    t.log(`baseline ${Math.round(baseline / MIB)} MiB, peak ${Math.round(peak / MIB)} MiB: ${(perUpload / MIB).toFixed(1)} MiB per upload`);
    t.true(perUpload < GROWTH_PER_UPLOAD, `${(perUpload / MIB).toFixed(1)} MiB per concurrent snapshot upload`);
  } finally {
    rss.stop();
    srv.kill('SIGTERM');
    await srv.waitExit();
    await rm(dir, { recursive: true, force: true });
  }
});
