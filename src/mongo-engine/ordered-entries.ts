import { compareValues } from './bson-values.ts';

/**
 * The entries of one index in key order, for range predicates and sorts. Kept as a list of
 * sorted chunks (a B-tree of depth one): finding a position is two binary searches and an
 * insert or removal moves at most one chunk's worth of elements, so the cost stays flat from
 * ten to a million entries.
 *
 * Entries compare by their field values (mongod's BSON order, each field in its index
 * direction), then by record id, so every entry has exactly one position.
 */

export interface OrderedEntry {
  /** the value of each indexed field (view shape; undefined for a missing field) */
  readonly vals: readonly unknown[];
  readonly rid: string;
}

/** A position between entries: chunk number and offset within it. */
export interface EntryPosition {
  chunk: number;
  offset: number;
}

const MAX_CHUNK = 512;

export class OrderedEntries {
  private chunks: OrderedEntry[][] = [];
  private count = 0;
  private readonly dirs: ReadonlyArray<1 | -1>;

  constructor(dirs: ReadonlyArray<1 | -1>) {
    this.dirs = dirs;
  }

  get size(): number {
    return this.count;
  }

  compare(a: OrderedEntry, b: OrderedEntry): number {
    for (let i = 0; i < this.dirs.length; i++) {
      const c = compareValues(a.vals[i], b.vals[i]);
      if (c !== 0) return c * (this.dirs[i] as number);
    }
    return a.rid < b.rid ? -1 : a.rid > b.rid ? 1 : 0;
  }

  insert(e: OrderedEntry): void {
    if (this.chunks.length === 0) {
      this.chunks.push([e]);
      this.count++;
      return;
    }
    const tail = this.chunks[this.chunks.length - 1] as OrderedEntry[];
    if (this.compare(tail[tail.length - 1] as OrderedEntry, e) < 0) {
      // ascending keys (ObjectIds, timestamps) append without a search
      tail.push(e);
      this.count++;
      if (tail.length > MAX_CHUNK) this.chunks.push(tail.splice(MAX_CHUNK >> 1));
      return;
    }
    const pos = this.seek((x) => this.compare(x, e) < 0);
    // Past the end of the last chunk: append to it.
    const ci = pos.chunk < this.chunks.length ? pos.chunk : this.chunks.length - 1;
    const chunk = this.chunks[ci] as OrderedEntry[];
    const offset = pos.chunk < this.chunks.length ? pos.offset : chunk.length;
    chunk.splice(offset, 0, e);
    this.count++;
    if (chunk.length > MAX_CHUNK) this.chunks.splice(ci + 1, 0, chunk.splice(MAX_CHUNK >> 1));
  }

  /** Removes the entry equal to `e` (same values and record id); false when absent. */
  remove(e: OrderedEntry): boolean {
    const pos = this.seek((x) => this.compare(x, e) < 0);
    const chunk = this.chunks[pos.chunk];
    const found = chunk?.[pos.offset];
    if (!chunk || !found || this.compare(found, e) !== 0) return false;
    chunk.splice(pos.offset, 1);
    this.count--;
    if (chunk.length === 0) this.chunks.splice(pos.chunk, 1);
    return true;
  }

  clear(): void {
    this.chunks = [];
    this.count = 0;
  }

  /**
   * The position of the first entry for which `before` is false. `before` must be true on a
   * prefix of the order and false after it (a lower bound).
   */
  seek(before: (e: OrderedEntry) => boolean): EntryPosition {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const chunk = this.chunks[mid] as OrderedEntry[];
      if (before(chunk[chunk.length - 1] as OrderedEntry)) lo = mid + 1;
      else hi = mid;
    }
    if (lo === this.chunks.length) return { chunk: lo, offset: 0 };
    const chunk = this.chunks[lo] as OrderedEntry[];
    let a = 0;
    let b = chunk.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (before(chunk[mid] as OrderedEntry)) a = mid + 1;
      else b = mid;
    }
    return { chunk: lo, offset: a };
  }

  /**
   * Calls `visit` on the entries from `from` (inclusive) to `to` (exclusive), in index order
   * or reversed, until it returns true.
   */
  each(from: EntryPosition, to: EntryPosition, reverse: boolean, visit: (e: OrderedEntry) => boolean): void {
    const last = Math.min(to.chunk, this.chunks.length - 1);
    if (!reverse) {
      for (let c = from.chunk; c <= last; c++) {
        const chunk = this.chunks[c] as OrderedEntry[];
        const end = c === to.chunk ? to.offset : chunk.length;
        for (let o = c === from.chunk ? from.offset : 0; o < end; o++) if (visit(chunk[o] as OrderedEntry)) return;
      }
      return;
    }
    for (let c = last; c >= from.chunk; c--) {
      const chunk = this.chunks[c] as OrderedEntry[];
      const start = c === from.chunk ? from.offset : 0;
      for (let o = (c === to.chunk ? to.offset : chunk.length) - 1; o >= start; o--) if (visit(chunk[o] as OrderedEntry)) return;
    }
  }

  /** Builds the whole order at once from unsorted entries (index builds). */
  load(entries: OrderedEntry[]): void {
    entries.sort((a, b) => this.compare(a, b));
    this.chunks = [];
    for (let i = 0; i < entries.length; i += MAX_CHUNK >> 1) this.chunks.push(entries.slice(i, i + (MAX_CHUNK >> 1)));
    this.count = entries.length;
  }
}
