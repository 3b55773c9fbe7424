import { closeSync, openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { InspectionRequest } from '../../src/workers/archive-inspection-protocol.ts';
import { startInspectionWorker, type StartInspectionWorker } from '../../src/workers/off-thread-inspector.ts';

/**
 * Starts the archive inspection's worker as the service does, with a fault a test switches on:
 *
 * - 'thread-refused': the system gives no thread, and `new Worker` throws Node's own
 *   ERR_WORKER_INIT_FAILED (here: a thread asking for a stack no machine can map);
 * - 'out-of-descriptors': the real worker, started while this process has no free file
 *   descriptor, so Node reports `Worker initialization failure: EMFILE` in an 'error' event (as
 *   seen in production). Every descriptor of the process is taken for a moment: only for a
 *   process doing nothing else meanwhile (no server, no database connections);
 * - 'dies-mid-inspection': the real worker, terminated when the first bytes of an archive would
 *   reach it (they never do, so it cannot answer first).
 *
 * A fault applies to the next worker started: `stopWorkers` ends the running one.
 */
export class InspectionWorkerFaults {
  fault: 'none' | 'thread-refused' | 'out-of-descriptors' | 'dies-mid-inspection' = 'none';
  /** workers started with a fault */
  injected = 0;
  private readonly workers: Worker[] = [];

  readonly start: StartInspectionWorker = (data) => {
    const fault = this.fault;
    if (fault !== 'none') this.injected++;
    if (fault === 'thread-refused') return new Worker('', { eval: true, resourceLimits: { stackSizeMb: 1e12 } });
    const worker = fault === 'out-of-descriptors' ? whileOutOfDescriptors(() => startInspectionWorker(data)) : startInspectionWorker(data);
    if (fault === 'dies-mid-inspection') {
      const post = worker.postMessage.bind(worker);
      worker.postMessage = (m: InspectionRequest) => (m.op === 'data' ? void worker.terminate() : post(m));
    }
    this.workers.push(worker);
    return worker;
  };

  /** Ends the workers started so far (the inspector then starts a new one for the next inspection). */
  async stopWorkers(): Promise<void> {
    for (const w of this.workers.splice(0)) await w.terminate();
  }
}

/**
 * Runs `start` with every file descriptor of the process taken, and gives them back once the
 * worker has reported (online, failed or exited): it sets up its event loop, which needs
 * descriptors, on its own thread after `start` returns.
 */
function whileOutOfDescriptors(start: () => Worker): Worker {
  const held: number[] = [];
  const release = (): void => {
    for (const fd of held.splice(0)) closeSync(fd);
  };
  try {
    for (;;) held.push(openSync('/dev/null', 'r'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EMFILE') {
      release();
      throw err;
    }
  }
  try {
    const worker = start();
    for (const event of ['online', 'error', 'exit']) worker.once(event, release);
    return worker;
  } catch (err) {
    release();
    throw err;
  }
}
