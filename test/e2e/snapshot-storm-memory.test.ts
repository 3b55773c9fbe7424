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
 * Many hosts pushing snapshots at once: the README sizes a server's memory at 6 MB per
 * concurrent snapshot upload, and this holds it to that. (Before the inspection thread took
 * its shared buffer's bytes as it read them, 60 at once peaked at 680 MB rather than 400; in
 * this test's setting, over a warmed-up server, 4.3-5.1 MB per upload against 3.1-3.9.)
 */

const run = promisify(execFile);
const UPLOADS = 48;
/** per concurrent snapshot upload, over a warmed-up server (the /v2 part alone costs 2.5-3 MB) */
const GROWTH_PER_UPLOAD = 6 * MIB;

test('48 snapshot uploads at once grow the server by less than 6 MB each', async (t) => {
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
