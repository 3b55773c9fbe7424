import { Long } from 'bson';
import { randomBytes } from 'node:crypto';
import { engineError } from './errors.ts';
import { MAX_BSON_OBJECT_SIZE } from './wire-protocol.ts';

/**
 * Server-side cursors: the remaining results of a find/aggregate/list command, handed out
 * in batches by getMore. Ids are random positive int64s. A cursor dies when exhausted,
 * killed, idle for longer than the timeout, or when the connection that opened it closes.
 */

export interface CursorBatch {
  docs: Buffer[];
  id: Long;
}

interface OpenCursor {
  id: bigint;
  ns: string;
  connectionId: number;
  items: readonly unknown[];
  pos: number;
  toRaw: (item: unknown) => Buffer;
  /** performance.now(): a stepped wall clock must not sweep a cursor in use, nor keep an idle one */
  lastUsed: number;
}

/** mongod caps a batch at 16 MiB of documents; leave room for the reply envelope. */
const MAX_BATCH_BYTES = MAX_BSON_OBJECT_SIZE - 64 * 1024;
export const DEFAULT_FIRST_BATCH = 101;
export const CURSOR_IDLE_TIMEOUT_MS = 10 * 60 * 1000;

function fillBatch(items: readonly unknown[], from: number, max: number, toRaw: (item: unknown) => Buffer): { docs: Buffer[]; next: number } {
  const docs: Buffer[] = [];
  let bytes = 0;
  let i = from;
  while (i < items.length && docs.length < max) {
    const raw = toRaw(items[i]);
    if (docs.length > 0 && bytes + raw.length > MAX_BATCH_BYTES) break;
    docs.push(raw);
    bytes += raw.length;
    i++;
  }
  return { docs, next: i };
}

export class CursorManager {
  private readonly cursors = new Map<bigint, OpenCursor>();

  get openCount(): number {
    return this.cursors.size;
  }

  /**
   * Produces the first batch; keeps a cursor open only if results remain.
   * batchSize 0 means "open the cursor but return nothing yet", as mongod does.
   */
  open<T>(ns: string, connectionId: number, items: readonly T[], toRaw: (item: T) => Buffer, batchSize: number | undefined, singleBatch: boolean): CursorBatch {
    const max = batchSize === undefined ? DEFAULT_FIRST_BATCH : batchSize;
    const conv = toRaw as (item: unknown) => Buffer;
    const { docs, next } = fillBatch(items, 0, max, conv);
    if (next >= items.length || singleBatch) return { docs, id: Long.ZERO };
    const id = this.newId();
    this.cursors.set(id, { id, ns, connectionId, items, pos: next, toRaw: conv, lastUsed: performance.now() });
    return { docs, id: Long.fromBigInt(id) };
  }

  getMore(id: Long, ns: string, batchSize: number | undefined): CursorBatch {
    const key = id.toBigInt();
    const c = this.cursors.get(key);
    if (!c) throw engineError('CursorNotFound', `cursor id ${id.toString()} not found`);
    if (c.ns !== ns) {
      throw engineError('Unauthorized', `Requested getMore on namespace '${ns}', but cursor belongs to a different namespace ${c.ns}`);
    }
    const { docs, next } = fillBatch(c.items, c.pos, batchSize && batchSize > 0 ? batchSize : Infinity, c.toRaw);
    c.pos = next;
    c.lastUsed = performance.now();
    if (next >= c.items.length) {
      this.cursors.delete(key);
      return { docs, id: Long.ZERO };
    }
    return { docs, id };
  }

  kill(ids: Long[]): { killed: Long[]; notFound: Long[] } {
    const killed: Long[] = [];
    const notFound: Long[] = [];
    for (const id of ids) {
      if (this.cursors.delete(id.toBigInt())) killed.push(id);
      else notFound.push(id);
    }
    return { killed, notFound };
  }

  closeForConnection(connectionId: number): void {
    for (const [id, c] of this.cursors) if (c.connectionId === connectionId) this.cursors.delete(id);
  }

  sweepIdle(now = performance.now(), timeoutMs = CURSOR_IDLE_TIMEOUT_MS): number {
    let n = 0;
    for (const [id, c] of this.cursors) {
      if (now - c.lastUsed > timeoutMs) {
        this.cursors.delete(id);
        n++;
      }
    }
    return n;
  }

  clear(): void {
    this.cursors.clear();
  }

  private newId(): bigint {
    for (;;) {
      const id = randomBytes(8).readBigUInt64LE() & 0x7fffffffffffffffn;
      if (id !== 0n && !this.cursors.has(id)) return id;
    }
  }
}
