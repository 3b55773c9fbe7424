import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { VolregError, isVolregError } from '../domain/errors.ts';
import type { AppendOptions } from './blob-store.ts';
import type { ByteBudget } from './byte-budget.ts';
import { LATE, within } from '../domain/within.ts';
import { streamGarbage } from './stream-garbage.ts';

/**
 * Copying a request body into an upload's data file: batches of socket chunks written at
 * increasing positions with a few writes in flight, each batch hashed (on the hash worker) at
 * the same time, so reading, hashing and the disk overlap while memory stays bounded: by a few
 * batches per upload, and by a budget all uploads share (byte-budget.ts).
 */

// Writes are gathered up to this size before going to disk, with a few in flight.
export const WRITE_BATCH_BYTES = 512 * 1024;
/** a gathered batch waits this long for the client's next bytes, then goes on as it is */
const SLOW_SOURCE_MS = 50;
const MAX_WRITES_IN_FLIGHT = 4;

class WriteFailure {
  constructor(readonly cause: unknown) {}
}

export interface CopyHooks {
  /** hashes the same bytes (on the hash worker); resolves once they are hashed */
  hash: (bufs: Buffer[], n: number) => Promise<void>;
  /** told after each batch reached the file (background write-back counts it) */
  written: (n: number) => void;
  /** asked before each batch is written; throws (a VolregError) when there is no room for it */
  room: (n: number) => Promise<void>;
  /** told when the copy starts and stops waiting for the source's next bytes (not for the disk) */
  awaitingSource?: (waiting: boolean) => void;
  /** bytes read and not yet written and hashed, shared with every other copy */
  budget: ByteBudget;
  limits: AppendOptions;
}

/**
 * Writes batches at increasing positions of one file with a few writes in flight, so reading
 * and hashing the next bytes overlap the disk. Memory stays at about MAX_WRITES_IN_FLIGHT
 * batches.
 */
class PipelinedWriter {
  private readonly inflight = new Set<Promise<void>>();
  private failure: { err: unknown } | null = null;

  constructor(
    private readonly fh: FileHandle,
    private pos: number,
    private readonly hooks: CopyHooks,
  ) {}

  /**
   * Queues a write (and the hashing of the same bytes), which gives `taken` back to the budget
   * once both are over; resolves once there is room for more.
   */
  async write(bufs: Buffer[], n: number, taken: number): Promise<void> {
    if (this.failure) this.hooks.budget.give(taken);
    this.check();
    const done: Promise<void> = Promise.all([
      writeAll(this.fh, bufs, n, this.pos).then(() => this.hooks.written(n)),
      this.hooks.hash(bufs, n),
    ]).then(
      () => {
        this.inflight.delete(done);
        this.hooks.budget.give(taken);
      },
      (err: unknown) => {
        this.failure ??= { err };
        this.inflight.delete(done);
        this.hooks.budget.give(taken);
      },
    );
    this.inflight.add(done);
    this.pos += n;
    while (this.inflight.size >= MAX_WRITES_IN_FLIGHT) await Promise.race(this.inflight);
    this.check();
  }

  /** Waits for every queued write; rethrows the first failure. */
  async drain(): Promise<void> {
    await this.settle();
    this.check();
  }

  /** Waits for everything in flight, ignoring failures (before truncating on an error). */
  async settle(): Promise<void> {
    await Promise.all([...this.inflight]);
  }

  private check(): void {
    if (this.failure) throw new WriteFailure(this.failure.err);
  }
}

/**
 * Copies `source` into `fh` from `position`, hashing on the way. Reading waits for room in
 * the writer, so memory stays bounded whatever the size (backpressure). Source failures
 * become BLOB_UPLOAD_INVALID; limit violations are VolregErrors; disk failures are rethrown.
 */
export async function copyInto(source: Readable, fh: FileHandle, position: number, hooks: CopyHooks): Promise<number> {
  const opts = hooks.limits;
  const limit = opts.exactBytes ?? opts.maxBytes;
  const writer = new PipelinedWriter(fh, position, hooks);
  let total = 0;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  /** what the batch took from the budget (the writer gives it back once written) */
  let batchTaken = 0;
  const flush = async (): Promise<void> => {
    if (batchBytes === 0) return;
    const bufs = batch;
    const n = batchBytes;
    const taken = batchTaken;
    batch = [];
    batchBytes = 0;
    batchTaken = 0;
    try {
      await hooks.room(n);
    } catch (err) {
      hooks.budget.give(taken);
      throw err;
    }
    await writer.write(bufs, n, taken);
  };
  // A copy that must wait for the budget first sends what it holds on its way: every copy
  // waiting with a batch in hand would wait for ever.
  const take = async (n: number): Promise<number> => {
    const now = hooks.budget.tryTake(n);
    if (now > 0) return now;
    await flush();
    return hooks.budget.take(n);
  };
  // Stopping early (a limit broken) must not destroy the source: for an HTTP request that
  // would reset the connection before the error reply is sent.
  const chunks = source.iterator({ destroyOnReturn: false });
  let pending: Promise<unknown> | null = null;
  const awaiting = hooks.awaitingSource ?? (() => undefined);
  try {
    for (;;) {
      awaiting(true);
      const next = chunks.next();
      pending = next;
      // Only a wait for bytes not yet here can be slow: one a fast client already sent needs no timer.
      let step = batchBytes > 0 && source.readableLength === 0 ? await within(next, SLOW_SOURCE_MS) : await next;
      if (step === LATE) {
        // A slow client's bytes go on as they are, rather than hold their share of the budget
        // while it trickles (enough slow clients would hold it all, and stall every upload).
        awaiting(false);
        await flush();
        awaiting(true);
        step = await next;
      }
      pending = null;
      awaiting(false);
      if (step.done) break;
      const chunk: unknown = step.value;
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      if (buf.length === 0) continue;
      total += buf.length;
      if (limit !== undefined && total > limit) {
        if (opts.exactBytes !== undefined) {
          throw new VolregError('SIZE_INVALID', 'more bytes than the Content-Range announced', { expected: opts.exactBytes });
        }
        throw new VolregError('TOO_LARGE', 'upload exceeds the size limit', { limit });
      }
      // A batch stays within one slot of the hash worker's ring (one message for it) unless a
      // single chunk is larger.
      if (batchBytes + buf.length > WRITE_BATCH_BYTES) await flush();
      // (not `batchTaken += await take()`: that reads batchTaken before a flush inside take resets it)
      const got = await take(buf.length);
      batchTaken += got;
      batch.push(buf);
      batchBytes += buf.length;
      streamGarbage.streamed(buf.length);
      if (batchBytes >= WRITE_BATCH_BYTES) await flush();
    }
    await flush();
    await writer.drain();
  } catch (err) {
    awaiting(false);
    hooks.budget.give(batchTaken);
    // Let go of the source without destroying it; a read still pending settles on its own.
    if (pending) pending.catch(() => undefined);
    else await chunks.return?.(undefined).catch(() => undefined);
    // No write may land after the caller truncates back to the durable offset.
    await writer.settle();
    if (err instanceof WriteFailure) throw err.cause;
    if (isVolregError(err)) throw err;
    throw new VolregError('BLOB_UPLOAD_INVALID', 'upload body ended before it was complete');
  }
  if (opts.exactBytes !== undefined && total !== opts.exactBytes) {
    throw new VolregError('SIZE_INVALID', 'fewer bytes than the Content-Range announced', { expected: opts.exactBytes, received: total });
  }
  return total;
}

async function writeAll(fh: FileHandle, bufs: Buffer[], total: number, position: number): Promise<void> {
  const { bytesWritten } = await fh.writev(bufs, position);
  if (bytesWritten === total) return;
  // Short write: finish the rest one buffer at a time.
  let skip = bytesWritten;
  let pos = position + bytesWritten;
  for (const buf of bufs) {
    if (skip >= buf.length) {
      skip -= buf.length;
      continue;
    }
    let off = skip;
    skip = 0;
    while (off < buf.length) {
      const { bytesWritten: n } = await fh.write(buf, off, buf.length - off, pos);
      off += n;
      pos += n;
    }
  }
}
