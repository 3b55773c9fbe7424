import { Worker } from 'node:worker_threads';
import type { DigestAlgorithm } from '../domain/digest.ts';
import { SlotRing } from '../workers/slot-ring.ts';
import { HELPER_THREAD_LIMITS } from '../workers/heap-settings.ts';
import { HELPER_IDLE_END_MS, IdleEnd } from '../workers/idle-end.ts';
import { WRITE_BATCH_BYTES } from './pipelined-copy.ts';

/**
 * Hashing on a worker thread, so an upload's digest is computed while the main thread reads
 * the socket and writes the disk (sha256 is about as costly as all the I/O together). The
 * worker keeps one hash per key and applies a key's operations in order; updates are acked so
 * the caller can bound what is in flight (backpressure).
 *
 * Bytes reach the worker through a fixed ring of shared slots (RING_SLOTS x SLOT_BYTES): the
 * main thread copies a piece into a free slot and posts its number; the worker hashes it and
 * acks, which frees the slot. Memory is that ring, whatever the upload size and count, and no
 * garbage is made per chunk.
 *
 * The worker is an evaluated script (plain JavaScript, node built-ins only) so it loads the
 * same way however the service was started. If it dies, pending calls reject and the next
 * call starts a new one with `generation` bumped: callers treat hash state of an older
 * generation as lost and recompute it (the fs driver re-reads the upload's data file).
 *
 * A worker that holds no hash and has nothing in flight for a while (idle-end.ts) ends, and the next
 * call starts one again: a thread and its ring kept after the last upload held 7-14 MB, which a
 * download right after paid on top of its own (README.md, "Benchmark"); starting one costs a
 * few tens of milliseconds, once per burst of uploads. No hash state is lost by it.
 */
const WORKER_SOURCE = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const ring = workerData.ring;
const SLOT = workerData.slotBytes;
const { createHash } = require('node:crypto');
const { open } = require('node:fs/promises');
const hashes = new Map();
const chains = new Map();

function inOrder(key, task) {
  const prev = chains.get(key) || Promise.resolve();
  const next = prev.then(task);
  const tail = next.then(() => undefined, () => undefined);
  chains.set(key, tail);
  tail.then(() => { if (chains.get(key) === tail) chains.delete(key); });
  return next;
}

function need(key) {
  const h = hashes.get(key);
  if (!h) throw new Error('no hash for this key');
  return h;
}

async function feed(h, path, start, end) {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let pos = start;
    while (pos < end) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
      if (bytesRead === 0) throw new Error('file shorter than expected');
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

parentPort.on('message', (m) => {
  inOrder(m.key, async () => {
    switch (m.op) {
      case 'create': hashes.set(m.key, createHash(m.alg)); return undefined;
      case 'update': need(m.key).update(new Uint8Array(ring, m.slot * SLOT, m.len)); return undefined;
      case 'feed': await feed(need(m.key), m.path, m.start, m.end); return undefined;
      case 'digest': { const h = need(m.key); hashes.delete(m.key); return h.digest('hex'); }
      case 'drop': hashes.delete(m.key); return undefined;
      default: throw new Error('unknown operation');
    }
  }).then(
    (value) => { if (m.seq) parentPort.postMessage({ seq: m.seq, value }); },
    (err) => { if (m.seq) parentPort.postMessage({ seq: m.seq, error: String((err && err.message) || err), code: err && err.code }); },
  );
});
`;

type Reply = { seq: number; value?: unknown; error?: string; code?: string };

// A slot holds one write batch of an upload: one message and one ack per batch, not per piece
// of it (a ring of 16 x 256 KiB took three per batch, for the same memory).
const SLOT_BYTES = WRITE_BATCH_BYTES;
const RING_SLOTS = 8;

export class HashWorkerError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'HashWorkerError';
  }
}

export class HashWorker {
  private worker: Worker | null = null;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private ring: SlotRing | null = null;
  /** per key, the posting of its updates so far: pieces reach the worker in order */
  private readonly posting = new Map<string, Promise<void>>();
  /** keys whose hash the worker holds (created, neither digested nor dropped) */
  private readonly held = new Set<string>();
  private readonly idleEnd: IdleEnd;
  /** Bumped whenever a worker starts or goes away: hash state of older generations is gone. */
  generation = 0;

  constructor(idleEndMs = HELPER_IDLE_END_MS) {
    this.idleEnd = new IdleEnd(idleEndMs, () => this.close());
  }

  create(key: string, algorithm: DigestAlgorithm): void {
    this.held.add(key);
    this.send({ op: 'create', key, alg: algorithm });
  }

  /**
   * Feeds bytes; resolves once the worker has hashed them. The buffers are read (copied into
   * ring slots) but neither kept nor changed. Calls for one key are hashed in call order.
   */
  update(key: string, bufs: Buffer[], total: number): Promise<void> {
    let acked: Promise<unknown> = Promise.resolve();
    const posted = (this.posting.get(key) ?? Promise.resolve()).then(async () => {
      const acks: Promise<unknown>[] = [];
      let index = 0;
      let offset = 0;
      for (let left = total; left > 0; ) {
        const { slot, ring } = await this.acquireSlot();
        const len = Math.min(SLOT_BYTES, left);
        const view = new Uint8Array(ring.buffer, slot * SLOT_BYTES, len);
        for (let filled = 0; filled < len; ) {
          const buf = bufs[index]!;
          const n = Math.min(buf.length - offset, len - filled);
          view.set(buf.subarray(offset, offset + n), filled);
          filled += n;
          offset += n;
          if (offset === buf.length) {
            index++;
            offset = 0;
          }
        }
        left -= len;
        const release = (): void => ring.release(slot);
        acks.push(this.call({ op: 'update', key, slot, len }).then(release, (err: unknown) => {
          release();
          throw err;
        }));
      }
      acked = Promise.all(acks);
      acked.catch(() => undefined);
    });
    const tail = posted.then(
      () => undefined,
      () => undefined,
    );
    this.posting.set(key, tail);
    void tail.then(() => {
      if (this.posting.get(key) === tail) this.posting.delete(key);
    });
    return posted.then(() => acked).then(() => undefined);
  }

  /** Feeds bytes [start, end) of a file. */
  feedFile(key: string, path: string, start: number, end: number): Promise<void> {
    if (end <= start) return Promise.resolve();
    return this.call({ op: 'feed', key, path, start, end }) as Promise<void>;
  }

  /** Finishes the hash of `key` (and forgets it): lowercase hex. */
  async digest(key: string): Promise<string> {
    this.held.delete(key);
    return String(await this.call({ op: 'digest', key }));
  }

  drop(key: string): void {
    this.held.delete(key);
    if (!this.worker) return;
    this.send({ op: 'drop', key });
    this.endWhenIdle();
  }

  close(): void {
    const w = this.worker;
    this.worker = null;
    this.generation++;
    this.held.clear();
    this.dropRing();
    this.idleEnd.cancel();
    const e = new HashWorkerError('hash worker closed');
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    if (w) void w.terminate();
  }

  /** Ends the worker once it has held no hash and had nothing in flight for the idle wait. */
  private endWhenIdle(): void {
    if (this.idle()) this.idleEnd.arm(() => this.idle());
  }

  private idle(): boolean {
    return this.worker !== null && this.held.size === 0 && this.pending.size === 0 && this.posting.size === 0;
  }

  private ensure(): Worker {
    this.idleEnd.cancel();
    if (this.worker) return this.worker;
    // No inherited flags: the script is CommonJS and needs no loader (--input-type=module or
    // --import=tsx in the parent must not change how it is read).
    const ring = new SlotRing(SLOT_BYTES, RING_SLOTS);
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { ring: ring.buffer, slotBytes: SLOT_BYTES }, resourceLimits: HELPER_THREAD_LIMITS });
    this.ring = ring;
    this.generation++;
    w.on('message', (r: Reply) => {
      const p = this.pending.get(r.seq);
      if (!p) return;
      this.pending.delete(r.seq);
      if (this.pending.size === 0) w.unref();
      if (r.error !== undefined) p.reject(new HashWorkerError(r.error, r.code));
      else p.resolve(r.value);
      this.endWhenIdle();
    });
    const fail = (err: unknown): void => {
      if (this.worker !== w) return;
      this.worker = null;
      this.generation++;
      this.held.clear();
      this.dropRing();
      this.idleEnd.cancel();
      const e = new HashWorkerError(`hash worker stopped: ${err instanceof Error ? err.message : String(err)}`);
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exit ${code}`)));
    // Idle, it must not keep the process alive (listeners added after this would ref it again).
    w.unref();
    this.worker = w;
    return w;
  }

  private send(msg: Record<string, unknown>): void {
    this.ensure().postMessage({ ...msg, seq: 0 });
  }

  private call(msg: Record<string, unknown>): Promise<unknown> {
    const w = this.ensure();
    const seq = ++this.seq;
    const result = new Promise<unknown>((resolve, reject) => this.pending.set(seq, { resolve, reject }));
    if (this.pending.size === 1) w.ref();
    w.postMessage({ ...msg, seq });
    return result;
  }

  /** A free slot of the current worker's ring; a ring that went with its worker is retried on the next. */
  private async acquireSlot(): Promise<{ slot: number; ring: SlotRing }> {
    for (;;) {
      this.ensure();
      const ring = this.ring!;
      const slot = await ring.acquire();
      if (slot !== null) return { slot, ring };
    }
  }

  /** The worker is gone: its ring too (a slot acked late is not returned to a new one). */
  private dropRing(): void {
    this.ring?.close();
    this.ring = null;
  }
}
