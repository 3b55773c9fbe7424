/**
 * Change marks: counters in shared memory that the engine moves whenever it applies a change,
 * so a client in the same process can tell, without a round trip, that nothing it read from a
 * collection can have changed since. A reader notes the marks it depends on before it asks,
 * and keeps what it read only while they stay the same.
 *
 * Each change moves the counter of its namespace's slot and, when the document has a string
 * in the configured key field (before or after the change), the slot of that namespace and
 * key too, so a reader of one key's documents is not disturbed by changes to other keys. A
 * change the engine cannot place (DDL: drop, rename, index changes) moves slot 0, which every
 * reading counts. Slots are shared by hash: a collision only makes a reader look again.
 *
 * The counters move when a change is applied, before it is journaled or acknowledged, so a
 * reader that sees an answer of the engine also sees every mark that answer depends on.
 */
export const CHANGE_MARK_SLOTS = 4096;

export interface ChangeMarksOptions {
  /** from newChangeMarks() */
  buffer: SharedArrayBuffer;
  /** the field whose string value gets slots of its own (e.g. a repository id) */
  keyField?: string;
}

export function newChangeMarks(): SharedArrayBuffer {
  return new SharedArrayBuffer(CHANGE_MARK_SLOTS * Int32Array.BYTES_PER_ELEMENT);
}

/** The slot of a namespace (`db.collection`), or of a namespace and key; never 0. */
export function changeMarkSlot(ns: string, key?: string): number {
  // FNV-1a over the UTF-16 code units
  let h = 0x811c9dc5;
  const text = key === undefined ? ns : `${ns}\0${key}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return 1 + ((h >>> 0) % (CHANGE_MARK_SLOTS - 1));
}

/** The engine's side: moves the counters. */
export class ChangeMarker {
  private readonly counters: Int32Array;
  private readonly keyField: string | undefined;

  constructor(opts: ChangeMarksOptions) {
    this.counters = new Int32Array(opts.buffer);
    this.keyField = opts.keyField;
  }

  /** A document of `ns` was inserted, replaced or deleted (`before`/`after`: its views). */
  changed(ns: string, before: Record<string, unknown> | undefined, after: Record<string, unknown> | undefined): void {
    Atomics.add(this.counters, changeMarkSlot(ns), 1);
    if (this.keyField === undefined) return;
    const a = before?.[this.keyField];
    const b = after?.[this.keyField];
    if (typeof a === 'string') Atomics.add(this.counters, changeMarkSlot(ns, a), 1);
    if (typeof b === 'string' && b !== a) Atomics.add(this.counters, changeMarkSlot(ns, b), 1);
  }

  /** A change that may touch anything (DDL). */
  changedAll(): void {
    Atomics.add(this.counters, 0, 1);
  }
}

/**
 * The reader's side: one number that differs whenever any of `slots` (or slot 0) moved since
 * it was last read. Counters only grow (an Int32 wraps after 2^32 changes, which still differs).
 */
export function readChangeMarks(buffer: SharedArrayBuffer, slots: readonly number[]): number {
  const counters = new Int32Array(buffer);
  let sum = Atomics.load(counters, 0);
  for (const s of slots) sum += Atomics.load(counters, s);
  return sum;
}
