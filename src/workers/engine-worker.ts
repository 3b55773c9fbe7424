import { parentPort, workerData } from 'node:worker_threads';
import { startEngine, type RunningEngine } from '../mongo-engine/index.ts';
import { CHANGE_MARK_KEYS } from '../metadata/collections.ts';
import { writeFailure, type EngineReply, type EngineRequest, type EngineThreadData, type LogFn } from './engine-protocol.ts';

/**
 * The worker side of engine-thread.ts: runs the embedded engine on this thread until asked
 * to close. Its log lines go to the service's logger; a failed journal write is published in
 * the shared failure cell before any write hears of it.
 */
const port = parentPort!;
const { opts, failure, changeMarks } = workerData as EngineThreadData;

function post(m: EngineReply): void {
  port.postMessage(m);
}

const log: LogFn = (msg, fields, level) => {
  try {
    post({ op: 'log', msg, ...(fields ? { fields } : {}), ...(level ? { level } : {}) });
  } catch {
    // a field that cannot be cloned: the line without it
    post({ op: 'log', msg, ...(level ? { level } : {}) });
  }
};

let engine: RunningEngine | undefined;
const started = startEngine({ ...opts, log, onFailure: (reason) => writeFailure(failure, reason), changeMarks: { buffer: changeMarks, keys: CHANGE_MARK_KEYS } }).then(
  (e) => {
    engine = e;
    post({ op: 'ready', uri: e.uri });
  },
  (err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    post({ op: 'error', name: e.name, message: e.message });
    port.close();
  },
);

port.on('message', (m: EngineRequest) => {
  if (m.op !== 'close') return;
  void started
    .then(() => engine?.close())
    .catch((err: unknown) => log('engine close failed', { error: String(err) }))
    .finally(() => {
      post({ op: 'closed' });
      port.close();
    });
});
