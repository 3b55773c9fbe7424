import type { EngineOptions } from '../mongo-engine/index.ts';
import type { LogFn, LogLevel } from '../mongo-engine/engine-state.ts';

export type { LogFn };

/** Messages and shared state between engine-thread.ts and engine-worker.ts. */
export type EngineListen = Pick<EngineOptions, 'dbPath' | 'host' | 'port' | 'socketPath'>;

export interface EngineThreadData {
  opts: EngineListen;
  /** the failure cell (below) */
  failure: SharedArrayBuffer;
  /** the engine's change marks (mongo-engine/change-marks.ts) */
  changeMarks: SharedArrayBuffer;
}

export type EngineRequest = { op: 'close' };

export type EngineReply =
  | { op: 'ready'; uri: string }
  | { op: 'error'; name: string; message: string }
  | { op: 'log'; msg: string; fields?: Record<string, unknown>; level?: LogLevel }
  | { op: 'closed' };

/**
 * Why the engine accepts no writes, readable from the service's thread at any moment: the
 * health checks ask synchronously, and a write refused for it must never be answered before
 * the reason can be read. Layout: an Int32 byte length (0: no failure), then UTF-8 text.
 */
const MAX_REASON_BYTES = 1024;

export function newFailureCell(): SharedArrayBuffer {
  return new SharedArrayBuffer(4 + MAX_REASON_BYTES);
}

export function writeFailure(cell: SharedArrayBuffer, reason: string): void {
  const length = new Int32Array(cell, 0, 1);
  if (Atomics.load(length, 0) !== 0) return; // the first failure is the one that counts
  const text = Buffer.from(reason || 'unknown failure').subarray(0, MAX_REASON_BYTES);
  new Uint8Array(cell, 4, text.length).set(text);
  Atomics.store(length, 0, text.length);
}

export function readFailure(cell: SharedArrayBuffer): string | undefined {
  const n = Atomics.load(new Int32Array(cell, 0, 1), 0);
  return n === 0 ? undefined : Buffer.from(new Uint8Array(cell, 4, n)).toString('utf8');
}
