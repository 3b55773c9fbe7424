import { changeMarkSlot, readChangeMarks } from '../mongo-engine/change-marks.ts';

/**
 * Reads of metadata kept until the embedded engine's change marks say the documents they came
 * from may have changed (mongo-engine/change-marks.ts). The engine moves a mark whenever it
 * applies a change to a repository's documents of a collection, whichever client sent it, before
 * the change is acknowledged. So an answer kept here is one the database would give now: a
 * reader notes the mark before it asks, and keeps the answer only if the mark has not moved
 * by the time the answer is in.
 *
 * Only the embedded engine started by this process shares its marks; on any other MongoDB
 * there are none, and every read goes to the database.
 */
export class MetadataMarks {
  private readonly counters: Int32Array;

  constructor(
    buffer: SharedArrayBuffer,
    private readonly dbName: string,
  ) {
    this.counters = new Int32Array(buffer);
  }

  /**
   * Reads the mark of the documents of `collection` whose key fields (CHANGE_MARK_KEYS in
   * collections.ts, in that order) hold `key`; a shorter `key` names the leading fields alone
   * (the repository: every tag name in it).
   */
  reader(collection: string): (...key: string[]) => number {
    const ns = `${this.dbName}.${collection}`;
    return (...key) => readChangeMarks(this.counters, [changeMarkSlot(ns, key)]);
  }

  /** Reads the mark every change to a document of `collection` moves, whatever its key. */
  wholeReader(collection: string): () => number {
    const slot = changeMarkSlot(`${this.dbName}.${collection}`);
    return () => readChangeMarks(this.counters, [slot]);
  }
}

/**
 * Answers by key, each with the mark it was read at; bounded, least recently used go first.
 * The bound counts entries, or what `weigh` says each answer weighs (names in a list, say).
 */
export class MarkedCache<V> {
  private readonly entries = new Map<string, { mark: number; value: V; weight: number }>();
  private weight = 0;

  constructor(
    private readonly maxWeight: number,
    private readonly weigh: (value: V) => number = () => 1,
  ) {}

  /**
   * The answer for `key`: the kept one while `mark()` still reads as when it was kept,
   * otherwise `load()`'s, kept if `keep` says so and the mark did not move meanwhile.
   */
  async read(key: string, mark: () => number, load: () => Promise<V>, keep: (v: V) => boolean): Promise<V> {
    const now = mark();
    const hit = this.lookup(key, now);
    if (hit !== undefined) return hit;
    const value = await load();
    if (keep(value)) this.keep(key, now, mark, value);
    return value;
  }

  /** The kept answer for `key` if it was read at mark `now`. */
  lookup(key: string, now: number): V | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    this.entries.delete(key);
    if (hit.mark !== now) {
      this.weight -= hit.weight;
      return undefined;
    }
    this.entries.set(key, hit); // most recently used last
    return hit.value;
  }

  /** Keeps `value`, read after the mark read `readAt`, unless the mark has moved since. */
  keep(key: string, readAt: number, mark: () => number, value: V): void {
    if (mark() !== readAt) return;
    const weight = this.weigh(value);
    if (weight > this.maxWeight) return;
    this.drop(key);
    this.entries.set(key, { mark: readAt, value, weight });
    this.weight += weight;
    for (const oldest of this.entries.keys()) {
      if (this.weight <= this.maxWeight) break;
      this.drop(oldest);
    }
  }

  private drop(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.weight -= entry.weight;
  }

  /**
   * Keeps `value`, what one write of this process left, if the mark moved by exactly that
   * write's one move since `before` (noted before the write was sent): then no other change
   * came in between (change-marks.ts), and the database holds what the write left.
   */
  keepWritten(key: string, before: number, mark: () => number, value: V): void {
    const now = mark();
    if (now === before + 1) this.keep(key, now, mark, value);
  }

  get size(): number {
    return this.entries.size;
  }
}
