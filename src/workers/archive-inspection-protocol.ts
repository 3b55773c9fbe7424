import type { ErrorCode } from '../domain/errors.ts';
import type { ArchiveInspection, InspectOptions } from '../domain/volumes/archive-inspector.ts';

/** Messages between off-thread-inspector.ts and archive-inspection-worker.ts. */
export type InspectionRequest =
  | { op: 'start'; id: number; opts: InspectOptions }
  | { op: 'data'; id: number; slot: number; len: number }
  | { op: 'end'; id: number }
  | { op: 'abort'; id: number };

export type InspectionReply =
  | { op: 'ack'; slot: number }
  | { op: 'done'; id: number; result: ArchiveInspection }
  | { op: 'fail'; id: number; error: { code?: ErrorCode; message: string; detail?: unknown } };

/** The worker's `workerData`: the shared slot ring and the size of one slot. */
export interface InspectionWorkerData {
  ring: SharedArrayBuffer;
  slotBytes: number;
}
