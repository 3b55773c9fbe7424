import { createServer } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runTorture, type TortureMode } from './crash-torture-run.ts';

/**
 * The crash torture (crash-torture-run.ts), bounded for the suite: a few cycles of a mixed
 * workload ended by kill -9, each followed by a check of everything acknowledged. Longer runs:
 * VOLREG_TORTURE_CYCLES=100 VOLREG_TORTURE_SEED=7 npx ava --timeout=2h test/e2e/crash-torture.test.ts
 * (a failure names its seed; the same seed chooses the same operations and kill moments, though
 * how far each request got when the kill came is up to the machine).
 */

const seed = Number(process.env.VOLREG_TORTURE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const cycles = (mode: TortureMode): number => Number(process.env.VOLREG_TORTURE_CYCLES ?? (mode === 'serve' ? 5 : 2));
const verbose = process.env.VOLREG_TORTURE_LOG === '1';

/**
 * A free port below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up by
 * default): the database gets this port back after each kill, and while it is down a port in
 * that range may be handed to an outgoing connection (even the service's own driver connecting to
 * it, TCP connecting to itself), which would make the restart fail with EADDRINUSE.
 */
async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const bound = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (bound) return port;
  }
}

for (const mode of ['serve', 'database'] as const) {
  const what = mode === 'serve' ? 'kill -9 of volreg serve (and gc inside it)' : 'kill -9 of volreg serve, of volreg gc beside it, or of the database alone';
  test(`crash torture, ${what}: everything acknowledged is there and whole after every restart`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), `volreg-torture-${mode}-`));
    try {
      const report = await runTorture({
        seed,
        cycles: cycles(mode),
        dir,
        mode,
        dbPort: Number(process.env.VOLREG_TORTURE_DB_PORT ?? (await freePort())),
        log: (line) => (verbose ? process.stderr.write(`${line}\n`) : t.log(line)),
      });
      t.log(`seed ${seed}: ${JSON.stringify(report.counts)}`);
      t.deepEqual(report.violations, [], `seed ${seed} (VOLREG_TORTURE_SEED=${seed} to run it again)`);
      t.true((report.counts['manifest pushes acknowledged'] ?? 0) > 0, 'the workload pushed something');
      t.true((report.counts.checks ?? 0) >= cycles(mode), 'every cycle was checked');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
