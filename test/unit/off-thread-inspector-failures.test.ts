import { Readable } from 'node:stream';
import test, { type ExecutionContext } from 'ava';
import { VolregError } from '../../src/domain/errors.ts';
import { OffThreadInspector } from '../../src/workers/off-thread-inspector.ts';
import { InspectionWorkerFaults } from '../helpers/inspection-faults.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * When the inspection's worker cannot start or dies, the inspection rejects with 503
 * UNAVAILABLE (retry), never with a verdict on the archive, the operator's log hears Node's own
 * reason, and the next inspection starts a new worker. Serial, and in a file of its own: one
 * case takes every file descriptor of this process for a moment.
 */

let tar: Buffer = Buffer.alloc(0);
test.before(async () => {
  tar = await buildTar([{ name: 'data.txt', body: 'inspect me '.repeat(3000) }]);
});

function inspectorWith(fault: InspectionWorkerFaults['fault']): { inspector: OffThreadInspector; faults: InspectionWorkerFaults; failures: Error[] } {
  const faults = new InspectionWorkerFaults();
  faults.fault = fault;
  const failures: Error[] = [];
  const inspector = new OffThreadInspector({ startWorker: faults.start, onFailure: (err) => failures.push(err) });
  return { inspector, faults, failures };
}

async function isUnavailable(t: ExecutionContext, inspection: Promise<unknown>, why: RegExp): Promise<void> {
  const err = await t.throwsAsync(inspection);
  t.true(err instanceof VolregError, String(err));
  t.is((err as VolregError).code, 'UNAVAILABLE');
  t.is((err as VolregError).status, 503);
  t.deepEqual((err as VolregError).headers, { 'Retry-After': '1' });
  t.regex(err!.message, why);
}

for (const [fault, why, reason] of [
  // as seen in production: Node's 'error' event "Worker initialization failure: EMFILE"
  ['out-of-descriptors', /could not start/, /Worker initialization failure: EMFILE/],
  // new Worker throws when the system gives no thread
  ['thread-refused', /could not start/, /EAGAIN|ENOMEM/],
  ['dies-mid-inspection', /stopped/, /exited/],
] as const) {
  test.serial(`${fault}: the inspection is unavailable, the log has Node's reason, the next one works`, async (t) => {
    const { inspector, faults, failures } = inspectorWith(fault);
    try {
      await isUnavailable(t, inspector.inspect(Readable.from([tar])), why);
      t.is(faults.injected, 1);
      t.is(failures.length, 1, 'told once');
      t.regex(failures[0]!.message, reason);

      faults.fault = 'none';
      const ok = await inspector.inspect(Readable.from([tar]));
      t.is(ok.entries, 1);
    } finally {
      inspector.close();
      await faults.stopWorkers();
    }
  });
}

test.serial('every inspection running on a worker that dies is unavailable', async (t) => {
  const { inspector, faults } = inspectorWith('dies-mid-inspection');
  try {
    const running = Array.from({ length: 3 }, () => inspector.inspect(Readable.from([tar])));
    for (const r of running) await isUnavailable(t, r, /stopped/);
  } finally {
    inspector.close();
    await faults.stopWorkers();
  }
});
