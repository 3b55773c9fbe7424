import { newChangeMarks } from '../mongo-engine/change-marks.ts';
import type { RunningEngine } from '../mongo-engine/index.ts';
import { newFailureCell, readFailure, type EngineListen, type EngineReply, type EngineThreadData, type LogFn } from './engine-protocol.ts';
import { HELPER_THREAD_LIMITS } from './heap-settings.ts';
import { startModuleWorker } from './module-worker.ts';

/** A running embedded engine on its thread, with the change marks it shares. */
export type EngineThread = RunningEngine & { changeMarks: SharedArrayBuffer };

/**
 * The embedded MongoDB engine on a thread of its own (engine-worker.ts), same contract as
 * `startEngine`: the service still reaches it only through the driver, over its socket.
 *
 * Why: in the service's thread every database command competes with request handling for one
 * core and one heap. On its own thread the engine uses another core, and its documents stay
 * out of the service's garbage collections; manifest PUTs and blob HEADs at 16-32 clients
 * gain 15-25% (bench/README.md).
 *
 * The engine's change marks are shared with this thread (`changeMarks`): what the service
 * read from the metadata stays valid, without asking again, until they move (see
 * metadata/marked-cache.ts).
 *
 * Start-up errors come back with their name and message (DbPathLockedError among them). A
 * thread that stops on its own (a crash) counts as a failure: `failure()` says so, and the
 * health checks report it.
 */
export async function startEngineThread(opts: EngineListen, log: LogFn): Promise<EngineThread> {
  const cell = newFailureCell();
  const changeMarks = newChangeMarks();
  const data: EngineThreadData = { opts, failure: cell, changeMarks };
  const worker = startModuleWorker(import.meta.url, './engine-worker', data, HELPER_THREAD_LIMITS);
  let stopped: string | undefined;
  let closing: Promise<void> | undefined;
  let onClosed: (() => void) | undefined;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));

  const uri = await new Promise<string>((resolve, reject) => {
    worker.on('message', (m: EngineReply) => {
      switch (m.op) {
        case 'ready':
          resolve(m.uri);
          break;
        case 'error':
          reject(Object.assign(new Error(m.message), { name: m.name }));
          break;
        case 'log':
          log(m.msg, m.fields, m.level);
          break;
        case 'closed':
          onClosed?.();
          break;
      }
    });
    worker.on('error', (err) => {
      stopped ??= `the engine thread failed: ${err.message}`;
      reject(err);
    });
    worker.on('exit', (code) => {
      if (closing) return;
      stopped ??= `the engine thread stopped (exit ${code})`;
      reject(new Error(stopped));
      log('embedded engine stopped', { exitCode: code });
    });
  }).catch(async (err: unknown) => {
    await worker.terminate();
    throw err;
  });

  return {
    uri,
    changeMarks,
    failure: () => readFailure(cell) ?? stopped,
    close: () => {
      closing ??= (async () => {
        if (stopped) return;
        // The engine writes its snapshot on close; only then is the thread ended.
        const closed = new Promise<void>((resolve) => (onClosed = resolve));
        worker.postMessage({ op: 'close' });
        await Promise.race([closed, exited]);
        await worker.terminate();
      })();
      return closing;
    },
  };
}
