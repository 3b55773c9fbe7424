/**
 * A set of entry names kept as 64-bit hashes in an open-addressing table: 16 to 32 bytes a name
 * (the table is kept at most half full and doubles), where the names themselves and a Set's
 * slots took well over 100. Shared by the server's inspection of an archive (link-targets.ts)
 * and the host agent's extractor (safe-extract.ts).
 *
 * Two different names may hash alike (a collision), so `has` can answer true for a name never
 * added, never false for one added and not removed. For names nobody chose to collide, the
 * chance that a lookup among n names hits a wrong one is about n / 2^64 (one in 18 billion for a
 * billion names); the hash is not keyed, so an archive's author can make names collide on
 * purpose. Each user therefore says what a false `true` may cost it, and no more.
 */
export class NameHashSet {
  /** pairs of 32-bit words; (0,0) is an empty slot, (0,1) a removed one; keys never have a 0 high word */
  private table = new Uint32Array(2 * 1024);
  private used = 0;

  add(name: string | NameKey): void {
    const [hi, lo] = typeof name === 'string' ? nameKey(name) : name;
    if (this.find(hi, lo) >= 0) return;
    if ((this.used + 1) * 2 > this.table.length / 2) this.grow();
    this.place(this.table, hi, lo);
    this.used++;
  }

  has(name: string | NameKey): boolean {
    const [hi, lo] = typeof name === 'string' ? nameKey(name) : name;
    return this.find(hi, lo) >= 0;
  }

  remove(name: string | NameKey): void {
    const [hi, lo] = typeof name === 'string' ? nameKey(name) : name;
    const at = this.find(hi, lo);
    if (at < 0) return;
    this.table[at] = 0;
    this.table[at + 1] = 1;
  }

  /** The slot holding the key, or -1. */
  private find(hi: number, lo: number): number {
    const t = this.table;
    const mask = t.length - 2;
    for (let at = (lo * 2) & mask; ; at = (at + 2) & mask) {
      if (t[at] === hi && t[at + 1] === lo) return at;
      if (t[at] === 0 && t[at + 1] === 0) return -1;
    }
  }

  private place(t: Uint32Array, hi: number, lo: number): void {
    const mask = t.length - 2;
    let at = (lo * 2) & mask;
    while (t[at] !== 0) at = (at + 2) & mask;
    t[at] = hi;
    t[at + 1] = lo;
  }

  /** Doubles the table (kept at most half full, removed slots dropped). */
  private grow(): void {
    const old = this.table;
    const next = new Uint32Array(old.length * 2);
    this.used = 0;
    for (let at = 0; at < old.length; at += 2) {
      if (old[at] === 0) continue;
      this.place(next, old[at]!, old[at + 1]!);
      this.used++;
    }
    this.table = next;
  }
}

/** A name's key in a NameHashSet (its two 32-bit hashes). */
export type NameKey = readonly [number, number];

/**
 * Two 32-bit hashes of the name's UTF-16 code units (cyrb53's mixing, both halves kept): a few
 * nanoseconds a character (a sha256 of each name made the server's inspection 3 times slower).
 */
export function nameKey(name: string): NameKey {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  return finish(h1, h2);
}

/**
 * The keys of every ancestor of a `/`-separated name (`a`, `a/b` of `a/b/c`), outermost first,
 * each the key nameKey gives it, in one pass over the name: building each ancestor's string took
 * time quadratic in the depth (a minute for a tree 1,500 levels deep).
 */
export function ancestorKeys(name: string): NameKey[] {
  const keys: NameKey[] = [];
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2f && i > 0) keys.push(finish(h1, h2));
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  return keys;
}

function finish(h1: number, h2: number): NameKey {
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0 || 1, h2 >>> 0];
}
