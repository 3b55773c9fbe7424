import type { Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { VolregError } from '../domain/errors.ts';
import type { ArchiveInspection, InspectOptions } from '../domain/volumes/archive-inspector.ts';
import type { InspectionReply, InspectionRequest, InspectionWorkerData } from './archive-inspection-protocol.ts';
import { startModuleWorker } from './module-worker.ts';
import { SlotRing } from './slot-ring.ts';
import { HELPER_IDLE_END_MS, IdleEnd } from './idle-end.ts';
import { LATE, within } from '../domain/within.ts';

/**
 * `inspectArchive` on a worker thread (archive-inspection-worker.ts), same contract.
 *
 * Why: checking a snapshot means gunzip or zstd, a second sha256 and tar parsing over every
 * byte, on top of the upload's own hashing and I/O. On the main thread that work, and the
 * garbage its decoded buffers make for the main heap's collector (which also holds the
 * embedded database), slows every request. Here this thread only copies the compressed bytes
 * into a shared ring.
 *
 * One worker serves every inspection of the process; it is started on first use and does not
 * keep the process alive while idle. If it dies, running inspections fail and the next one
 * starts a new worker. With no inspection for a while (idle-end.ts) it ends, and the next one starts it
 * again: the decoder's chunks stay in the thread's heap and malloc arenas, 40-60 MB that the
 * process held long after the last snapshot push (README.md, "Benchmark"); a start costs
 * tens of milliseconds per push of a whole snapshot.
 *
 * Only a verdict on the bytes (ARCHIVE_INVALID, from the worker) rejects as one. When the
 * machinery fails instead (the worker cannot start, say for want of file descriptors, or dies,
 * or is closed), the inspection rejects with 503 UNAVAILABLE: that says nothing about the
 * archive, and a backup must never be called damaged for it.
 */
const SLOT_BYTES = 1024 * 1024;
const RING_SLOTS = 6;
/** how long a partly filled slot waits for the client's next bytes before it is sent as it is */
const PARTIAL_SLOT_WAIT_MS = 50;
/** how long an upload may hold a slot at all: one trickling steadily fills it only slowly */
const SLOT_HOLD_MS = 250;
/** Starts the worker (archive-inspection-worker.ts) with `data`. */
export type StartInspectionWorker = (data: InspectionWorkerData) => Worker;

export interface OffThreadInspectorOptions {
  /** how the worker is started (tests pass one that fails); by default startInspectionWorker */
  startWorker?: StartInspectionWorker;
  /** told of each failure of the machinery with Node's own error, for the log (clients only hear it is unavailable) */
  onFailure?: (err: Error) => void;
  /** how long the worker is kept with no inspection running (HELPER_IDLE_END_MS) */
  idleEndMs?: number;
}

/** The real worker, as the inspector starts it by default. */
export const startInspectionWorker: StartInspectionWorker = (data) => startModuleWorker(import.meta.url, './archive-inspection-worker', data);

/**
 * The inspection could not run. Its reason stays out of the reply (Node's message may name a
 * path): `why` is one of a few fixed phrases, the log has the rest.
 */
export function inspectionUnavailable(why: string): VolregError {
  return new VolregError('UNAVAILABLE', `the archive inspection is unavailable for a moment (${why}); retry shortly`, undefined, { 'Retry-After': '1' });
}

interface Running {
  resolve: (r: ArchiveInspection) => void;
  reject: (err: Error) => void;
}

export class OffThreadInspector {
  private worker: Worker | null = null;
  private ring: SlotRing | null = null;
  private nextId = 0;
  private readonly running = new Map<number, Running>();
  private readonly startWorker: StartInspectionWorker;
  private readonly onFailure: (err: Error) => void;
  private readonly idleEnd: IdleEnd;

  constructor(opts: OffThreadInspectorOptions = {}) {
    this.startWorker = opts.startWorker ?? startInspectionWorker;
    this.onFailure = opts.onFailure ?? (() => undefined);
    this.idleEnd = new IdleEnd(opts.idleEndMs ?? HELPER_IDLE_END_MS, () => this.endIdleWorker());
  }

  /** Reads `source` to its end (or until the verdict) and inspects it as inspectArchive would. */
  inspect(source: Readable, opts: InspectOptions = {}): Promise<ArchiveInspection> {
    let started: { worker: Worker; ring: SlotRing };
    try {
      started = this.ensure();
    } catch (err) {
      // Node throws when it cannot even create the thread (ERR_WORKER_INIT_FAILED: EAGAIN)
      this.onFailure(err instanceof Error ? err : new Error(String(err)));
      return Promise.reject(inspectionUnavailable('its worker thread could not start'));
    }
    const { worker, ring } = started;
    const id = ++this.nextId;
    const send = (m: InspectionRequest): void => worker.postMessage(m);
    const result = new Promise<ArchiveInspection>((resolve, reject) => this.running.set(id, { resolve, reject }));
    if (this.running.size === 1) worker.ref();
    send({ op: 'start', id, opts });
    const pump = async (): Promise<void> => {
      // Pieces are gathered into whole slots: the decoder's cost is per write, and socket
      // chunks are small (64 KiB), so one message per full slot costs a fraction of one per chunk.
      // But a slot is not held while the client is slow to send, nor for long: the ring is shared
      // by every upload, and a few clients trickling bytes would stall all the others.
      let slot: number | null = null;
      let filled = 0;
      let heldSince = 0;
      const post = (s: number): void => {
        send({ op: 'data', id, slot: s, len: filled });
        slot = null;
        filled = 0;
      };
      const chunks = (source as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      let finished = false;
      try {
        for (;;) {
          const next = chunks.next();
          let step = slot === null ? await next : await within(next, PARTIAL_SLOT_WAIT_MS);
          if (step === LATE) {
            if (slot !== null) post(slot);
            step = await next;
          }
          if (step.done) {
            finished = true;
            break;
          }
          const chunk = step.value;
          for (let off = 0; off < chunk.length && this.running.has(id); ) {
            if (slot === null) {
              slot = await ring.acquire();
              if (slot === null) return; // the worker is gone; its failure settled this inspection
              heldSince = performance.now();
            }
            const n = Math.min(ring.slotBytes - filled, chunk.length - off);
            ring.fill(slot, chunk.subarray(off, off + n), filled);
            filled += n;
            off += n;
            if (filled === ring.slotBytes || performance.now() - heldSince > SLOT_HOLD_MS) post(slot);
          }
          // The verdict came before the end (a refused archive): stop reading.
          if (!this.running.has(id)) return;
        }
        if (slot !== null) post(slot);
        send({ op: 'end', id });
      } finally {
        if (slot !== null) ring.release(slot);
        if (!finished) await chunks.return?.().catch(() => undefined);
      }
    };
    pump().catch((err: unknown) => {
      // The source failed (the client went away): that is the answer, as inspectArchive gives it.
      if (this.worker === worker) send({ op: 'abort', id });
      this.settle(id, (r) => r.reject(err instanceof Error ? err : new Error(String(err))));
    });
    return result;
  }

  close(): void {
    const w = this.worker;
    this.stopped(inspectionUnavailable('its worker thread was closed'));
    if (w) void w.terminate();
  }

  private ensure(): { worker: Worker; ring: SlotRing } {
    this.idleEnd.cancel();
    if (this.worker && this.ring) return { worker: this.worker, ring: this.ring };
    const ring = new SlotRing(SLOT_BYTES, RING_SLOTS);
    const worker = this.startWorker({ ring: ring.buffer, slotBytes: SLOT_BYTES });
    worker.on('message', (m: InspectionReply) => {
      if (m.op === 'ack') ring.release(m.slot);
      else if (m.op === 'done') this.settle(m.id, (r) => r.resolve(m.result));
      else if (m.error.code) {
        const e = m.error;
        this.settle(m.id, (r) => r.reject(new VolregError(e.code!, e.message, e.detail)));
      } else if (this.running.has(m.id)) {
        // not a verdict: the inspection itself broke (its source's own failures settle on this side)
        this.onFailure(new Error(`archive inspection failed: ${m.error.message}`));
        this.settle(m.id, (r) => r.reject(inspectionUnavailable('the inspection failed')));
      }
      // else the echo of an 'abort': the client went away, its request already answered for
    });
    // Node reports a thread that could not start (ERR_WORKER_INIT_FAILED: EMFILE) as 'error' before it came online
    let online = false;
    worker.once('online', () => (online = true));
    const fail = (err: Error, why: string): void => {
      if (this.worker !== worker) return;
      this.onFailure(err);
      this.stopped(inspectionUnavailable(why));
    };
    worker.on('error', (err) => fail(err, online ? 'its worker thread stopped' : 'its worker thread could not start'));
    worker.on('exit', (code) => fail(new Error(`archive inspection worker exited (code ${code})`), 'its worker thread stopped'));
    worker.unref();
    this.worker = worker;
    this.ring = ring;
    return { worker, ring };
  }

  private settle(id: number, how: (r: Running) => void): void {
    const r = this.running.get(id);
    if (!r) return;
    this.running.delete(id);
    if (this.running.size === 0) {
      this.worker?.unref();
      this.endWhenIdle();
    }
    how(r);
  }

  /** Ends the worker (quietly: not a failure) once no inspection has run for the idle wait. */
  private endWhenIdle(): void {
    if (this.worker) this.idleEnd.arm(() => this.worker !== null && this.running.size === 0);
    else this.idleEnd.cancel();
  }

  private endIdleWorker(): void {
    const w = this.worker!;
    this.worker = null; // before terminate: its 'exit' is then no failure
    this.ring?.close();
    this.ring = null;
    void w.terminate();
  }

  private stopped(err: VolregError): void {
    this.idleEnd.cancel();
    this.worker = null;
    this.ring?.close();
    this.ring = null;
    const running = [...this.running.values()];
    this.running.clear();
    for (const r of running) r.reject(err);
  }
}
