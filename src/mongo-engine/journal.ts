import type { Document } from 'bson';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChangeSink, DdlOp } from './collection-store.ts';
import type { Durability, LogFn } from './engine-state.ts';
import { encodeCommit, encodeDdl, encodePut, encodeRemove } from './journal-format.ts';

/**
 * Append-only journal with group commit. Mutations append framed records to an in-memory
 * queue synchronously (in the order the catalog applied them); a single flusher writes
 * everything queued so far with one writev and one fdatasync, then acknowledges every
 * waiter covered by that flush. Concurrent writers therefore share fsyncs.
 *
 * A queued "rotate" marker switches to a new journal file at an exact point of the
 * sequence, which is how a snapshot is cut without stopping writes.
 *
 * Each batch ends with a commit record naming the offset where the batch began, so recovery can
 * tell a torn tail (the batch being written at a crash) from damage in synced bytes
 * (journal-format.ts).
 *
 * A failed write or sync stops the journal for good: memory then holds changes the disk may not.
 * A switch that cannot open a file because the process is out of descriptors for a moment has
 * written nothing, so it waits and tries again (the writes queued behind it wait with it).
 */

/** Errors of opening a file that pass once other files are closed. */
const OUT_OF_DESCRIPTORS = new Set(['EMFILE', 'ENFILE']);
const RETRY_FIRST_MS = 10;
const RETRY_MAX_MS = 1000;
const RETRY_WARN_EVERY_MS = 10_000;

/** What the journal opens files with (tests put failures in). */
export type OpenFile = (path: string, flags: string) => Promise<FileHandle>;

type Queued = Buffer | { rotateTo: string; head: Buffer; done: (err?: Error) => void };

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class Journal implements ChangeSink, Durability {
  private fh: FileHandle;
  private readonly durable: boolean;
  private readonly log: LogFn;
  private readonly dirPath: string;
  private queue: Queued[] = [];
  private seq = 0;
  private flushedSeq = 0;
  private waiters: Waiter[] = [];
  private flushing = false;
  private failed: Error | undefined;
  private idle: Array<() => void> = [];
  /** bytes in the current journal file, including queued ones */
  bytes: number;
  /** bytes written to the current journal file */
  private fileOffset: number;
  onFlushed: (() => void) | undefined;
  /** told once, when a journal write fails, before any waiting write hears of it */
  onFailure: ((err: Error) => void) | undefined;
  private closing = false;

  constructor(
    fh: FileHandle,
    initialBytes: number,
    durable: boolean,
    dirPath: string,
    log: LogFn,
    private readonly openFile: OpenFile = (path, flags) => fs.promises.open(path, flags),
  ) {
    this.fh = fh;
    this.bytes = initialBytes;
    this.fileOffset = initialBytes;
    this.durable = durable;
    this.dirPath = dirPath;
    this.log = log;
  }

  put(ns: string, raw: Buffer): void {
    this.append(encodePut(ns, raw));
  }

  remove(ns: string, id: unknown): void {
    this.append(encodeRemove(ns, id));
  }

  ddl(op: DdlOp, args: Document): void {
    this.append(encodeDdl(op, args));
  }

  appendedSeq(): number {
    return this.seq;
  }

  failure(): Error | undefined {
    return this.failed;
  }

  waitDurable(seq: number): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.durable || seq <= this.flushedSeq) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  /** Queues a switch to a new journal file, which starts with `head`; resolves once it is in place. */
  rotate(newPath: string, head: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ rotateTo: newPath, head, done: (err) => (err ? reject(err) : resolve()) });
      this.bytes = 0;
      this.schedule();
    });
  }

  /** Resolves when everything queued so far has been written (and synced when durable). */
  drain(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.drain();
    await this.fh.close();
  }

  private append(frame: Buffer): void {
    this.queue.push(frame);
    this.bytes += frame.length;
    this.seq++;
    this.schedule();
  }

  private schedule(): void {
    if (this.flushing) return;
    this.flushing = true;
    // setImmediate lets every command already read from the sockets append before the flush.
    setImmediate(() => void this.flushLoop());
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch: Buffer[] = [];
        let rotate: Extract<Queued, { rotateTo: string }> | undefined;
        while (this.queue.length > 0) {
          const item = this.queue[0] as Queued;
          if (!Buffer.isBuffer(item)) {
            if (batch.length === 0) {
              rotate = item;
              this.queue.shift();
            }
            break;
          }
          batch.push(item);
          this.queue.shift();
        }
        if (rotate) {
          await this.switchFile(rotate);
          continue;
        }
        this.writeAll(batch);
        if (this.durable) await this.fh.datasync();
        // Frames are written in sequence order, so the count written is the highest durable seq.
        this.flushedSeq += batch.length;
        this.release();
      }
    } catch (err) {
      this.failed = err instanceof Error ? err : new Error(String(err));
      this.log('journal write failed; refusing further acknowledgements', { error: this.failed.message });
      this.onFailure?.(this.failed);
      for (const w of this.waiters) w.reject(this.failed);
      this.waiters = [];
      for (const q of this.queue) if (!Buffer.isBuffer(q)) q.done(this.failed);
      this.queue = [];
    } finally {
      this.flushing = false;
      const idle = this.idle;
      this.idle = [];
      for (const f of idle) f();
      this.onFlushed?.();
    }
  }

  /**
   * Appends synchronously: this only copies into the page cache (microseconds for metadata
   * batches) and saves a thread-pool round trip per group; the fsync stays asynchronous.
   */
  private writeAll(records: Buffer[]): void {
    const commit = encodeCommit(this.fileOffset);
    this.bytes += commit.length;
    const batch = [...records, commit];
    for (const b of batch) this.fileOffset += b.length;
    for (let rest = batch; rest.length > 0; ) rest = unwritten(rest, fs.writevSync(this.fh.fd, rest.slice(0, WRITEV_MAX)));
  }

  private async switchFile(r: Extract<Queued, { rotateTo: string }>): Promise<void> {
    try {
      // The new file is opened before the old one is let go, so a refused open leaves the journal as it was.
      const next = await this.whenDescriptorsFree('open the next journal file', () => this.openFile(r.rotateTo, 'a'));
      try {
        if (this.durable) await this.fh.datasync();
        await this.fh.close();
      } catch (err) {
        await next.close().catch(() => undefined);
        throw err;
      }
      this.fh = next;
      this.fileOffset = await startFile(this.fh, r.head);
      await this.whenDescriptorsFree('sync the database directory', () => syncDirectory(this.dirPath, this.openFile));
      r.done();
    } catch (err) {
      r.done(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  /** Runs `open`, again and again while the process is out of file descriptors (nothing is lost meanwhile). */
  private async whenDescriptorsFree<T>(what: string, open: () => Promise<T>): Promise<T> {
    let wait = RETRY_FIRST_MS;
    let warned = -Infinity; // the first refusal is warned of at once
    for (;;) {
      try {
        return await open();
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (this.closing || code === undefined || !OUT_OF_DESCRIPTORS.has(code)) throw err;
        if (performance.now() - warned >= RETRY_WARN_EVERY_MS) {
          warned = performance.now();
          this.log(`journal cannot ${what}: out of file descriptors; writes wait and it tries again`, { error: (err as Error).message }, 'warn');
        }
        await sleep(wait);
        wait = Math.min(wait * 2, RETRY_MAX_MS);
      }
    }
  }

  private release(): void {
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.seq <= this.flushedSeq) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }
}

/**
 * Writes `buffers` whole at the file's position. A write(2) may take only part of what it is
 * given and report no error (a full disk takes what fits; space freed meanwhile lets the next one
 * succeed): the rest is written in turn, never skipped, so a file is whole or the write fails.
 */
export async function writeWhole(fh: FileHandle, buffers: readonly Buffer[]): Promise<void> {
  for (let rest = [...buffers]; rest.length > 0; ) rest = unwritten(rest, (await fh.writev(rest.slice(0, WRITEV_MAX))).bytesWritten);
}

/** buffers at most one writev takes (IOV_MAX) */
const WRITEV_MAX = 1024;

/** What of `buffers` a write that took `n` bytes of them left (empty ones dropped); a write that took none of a non-empty rest fails. */
function unwritten(buffers: readonly Buffer[], n: number): Buffer[] {
  const left: Buffer[] = [];
  const none = n === 0;
  for (const b of buffers) {
    if (n >= b.length) n -= b.length;
    else {
      left.push(n > 0 ? b.subarray(n) : b);
      n = 0;
    }
  }
  if (none && left.length > 0) throw new Error('the file took no bytes of a write');
  return left;
}

/** Writes `head` into a journal file just created (still empty) and syncs it; the file's size. */
export async function startFile(fh: FileHandle, head: Buffer): Promise<number> {
  const size = (await fh.stat()).size;
  if (size > 0) return size;
  await writeWhole(fh, [head]);
  await fh.datasync();
  return head.length;
}

export async function syncDirectory(dir: string, openFile: OpenFile = (p, flags) => fs.promises.open(p, flags)): Promise<void> {
  const fh = await openFile(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
