/**
 * Change marks: counters in shared memory that the engine moves whenever it applies a change,
 * so a client in the same process can tell, without a round trip, that nothing it read can
 * have changed since. A reader notes the marks it depends on before it asks, and keeps what it
 * read only while they stay the same.
 *
 * A collection named in `keys` has its documents marked by the values of those fields (a
 * repository and a tag name, say): a change moves the slot of its document's key, before and
 * after the change, so a reader of the documents with one key (an equality query on every key
 * field) is not disturbed by changes to others. It also moves the slot of every leading part
 * of that key (the repository alone), for a reader of all the documents that share it (every
 * tag name of a repository). Every change also moves its namespace's slot, for readers of a
 * whole collection. DDL (drop, rename, index changes) moves slot 0, which every reading counts.
 * Slots are shared by hash: a collision only makes a reader look again.
 *
 * The counters move when a change is applied, before it is journaled or acknowledged, so a
 * reader that sees an answer of the engine also sees every mark that answer depends on.
 *
 * A change moves each slot it touches by exactly one. So a client that noted a key's mark,
 * then made one change to a document of that key, and reads the mark one higher once the
 * change is acknowledged, knows that no other change came in between: what its own write
 * left is what the database holds.
 */
export const CHANGE_MARK_SLOTS = 65536;

export interface ChangeMarksOptions {
  /** from newChangeMarks() */
  buffer: SharedArrayBuffer;
  /** per collection name (any database): the fields whose values key its marks */
  keys?: Readonly<Record<string, readonly string[]>>;
}

export function newChangeMarks(): SharedArrayBuffer {
  return new SharedArrayBuffer(CHANGE_MARK_SLOTS * Int32Array.BYTES_PER_ELEMENT);
}

/**
 * The slot of a namespace (`db.collection`), or of the documents of a namespace whose key
 * fields hold `key` (in the order of `keys`; a field without a string value counts as ''), or
 * whose leading key fields do when `key` is shorter; never 0.
 */
export function changeMarkSlot(ns: string, key?: readonly string[]): number {
  // FNV-1a over the UTF-16 code units
  let h = 0x811c9dc5;
  const text = key === undefined ? ns : `${ns}\0${key.join('\0')}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return 1 + ((h >>> 0) % (CHANGE_MARK_SLOTS - 1));
}

type View = Record<string, unknown>;

/** The engine's side: moves the counters. */
export class ChangeMarker {
  private readonly counters: Int32Array;
  private readonly keys: Readonly<Record<string, readonly string[]>>;

  constructor(opts: ChangeMarksOptions) {
    this.counters = new Int32Array(opts.buffer);
    this.keys = opts.keys ?? {};
  }

  /** A document of collection `name` in `ns` was inserted, replaced or deleted (`before`/`after`: its views). */
  changed(ns: string, name: string, before: View | undefined, after: View | undefined): void {
    Atomics.add(this.counters, changeMarkSlot(ns), 1);
    const fields = Object.prototype.hasOwnProperty.call(this.keys, name) ? this.keys[name] : undefined;
    if (!fields) return;
    // Exactly one move per slot: a key the change left alone, or slots that share a hash, move once.
    const slots = new Set<number>();
    for (const view of [before, after]) {
      if (!view) continue;
      const key = keyOf(view, fields);
      for (let n = 1; n <= key.length; n++) slots.add(changeMarkSlot(ns, key.slice(0, n)));
    }
    for (const slot of slots) Atomics.add(this.counters, slot, 1);
  }

  /** A change that may touch anything (DDL). */
  changedAll(): void {
    Atomics.add(this.counters, 0, 1);
  }
}

function keyOf(view: View, fields: readonly string[]): string[] {
  return fields.map((f) => {
    const v = view[f];
    return typeof v === 'string' ? v : '';
  });
}

/**
 * The reader's side, over `new Int32Array(buffer)`: one number that differs whenever any of
 * `slots` (or slot 0) moved since it was last read. Counters only grow (an Int32 wraps after
 * 2^32 changes, which still differs).
 */
export function readChangeMarks(counters: Int32Array, slots: readonly number[]): number {
  let sum = Atomics.load(counters, 0);
  for (const s of slots) sum += Atomics.load(counters, s);
  return sum;
}
