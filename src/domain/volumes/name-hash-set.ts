/**
 * A set of entry names kept as 64-bit hashes (in a NameTable): where the names themselves and a
 * Set's slots took well over 100 bytes a name, a table of its own holds 18 to 36. Shared by the
 * server's inspection of an archive (link-targets.ts, tree-shape.ts) and the host agent's
 * extractor (safe-extract.ts).
 *
 * Sets made over one table hold a name they have in common once, with a bit for each set: the
 * inspection's rules keep mostly the same names (every file, symlink and link of an archive), so
 * they share one table and an archive of a million entries holds about 18 to 36 MB of names, not
 * twice that.
 *
 * Two different names may hash alike (a collision), so `has` can answer true for a name never
 * added, never false for one added and not removed. For names nobody chose to collide, the
 * chance that a lookup among n names hits a wrong one is about n / 2^64 (one in 18 billion for a
 * billion names); the hash is not keyed, so an archive's author can make names collide on
 * purpose. Each user therefore says what a false `true` may cost it, and no more. Sets sharing a
 * table see the same collisions as sets of their own would: each set's bit is its own.
 */
export class NameHashSet {
  private readonly bit: number;

  constructor(private readonly table = new NameTable()) {
    this.bit = table.newSet();
  }

  add(name: string | NameKey): void {
    const [hi, lo] = typeof name === 'string' ? nameKey(name) : name;
    this.table.mark(hi, lo, this.bit);
  }

  has(name: string | NameKey): boolean {
    const [hi, lo] = typeof name === 'string' ? nameKey(name) : name;
    return (this.table.marks(hi, lo) & this.bit) !== 0;
  }

  remove(name: string | NameKey): void {
    const [hi, lo] = typeof name === 'string' ? nameKey(name) : name;
    this.table.unmark(hi, lo, this.bit);
  }
}

/**
 * The storage of up to 8 NameHashSets: name keys in an open-addressing table kept at most half
 * full (it doubles), with a byte per slot whose bits say which sets hold the key (9 bytes a
 * slot). A key no set holds any more keeps its slot, counted as used, until the table grows, as
 * a removed key's slot was when each set had a table of its own.
 */
export class NameTable {
  /** pairs of 32-bit words; (0,0) is an empty slot; keys never have a 0 high word */
  private keys = new Uint32Array(2 * 1024);
  /** the bits of the sets holding each slot's key */
  private bits = new Uint8Array(1024);
  private used = 0;
  private sets = 0;

  /** The bit of a new set over this table. */
  newSet(): number {
    if (this.sets === 8) throw new Error('a NameTable holds at most 8 sets');
    return 1 << this.sets++;
  }

  /** The bytes the table takes now. */
  get byteLength(): number {
    return this.keys.byteLength + this.bits.byteLength;
  }

  mark(hi: number, lo: number, bit: number): void {
    const at = this.find(hi, lo);
    if (at >= 0) {
      this.bits[at >> 1]! |= bit;
      return;
    }
    if ((this.used + 1) * 2 > this.bits.length) this.grow();
    this.bits[this.place(this.keys, hi, lo) >> 1] = bit;
    this.used++;
  }

  /** The bits of the sets holding the key (0: none). */
  marks(hi: number, lo: number): number {
    const at = this.find(hi, lo);
    return at < 0 ? 0 : this.bits[at >> 1]!;
  }

  unmark(hi: number, lo: number, bit: number): void {
    const at = this.find(hi, lo);
    if (at >= 0) this.bits[at >> 1]! &= ~bit;
  }

  /** The slot holding the key (its index in `keys`), or -1. */
  private find(hi: number, lo: number): number {
    const t = this.keys;
    const mask = t.length - 2;
    for (let at = (lo * 2) & mask; ; at = (at + 2) & mask) {
      if (t[at] === hi && t[at + 1] === lo) return at;
      if (t[at] === 0) return -1;
    }
  }

  /** Puts the key in the first empty slot of its probe sequence; returns that slot. */
  private place(t: Uint32Array, hi: number, lo: number): number {
    const mask = t.length - 2;
    let at = (lo * 2) & mask;
    while (t[at] !== 0) at = (at + 2) & mask;
    t[at] = hi;
    t[at + 1] = lo;
    return at;
  }

  /** Doubles the table (kept at most half full; keys no set holds are dropped). */
  private grow(): void {
    const keys = this.keys;
    const bits = this.bits;
    const nextKeys = new Uint32Array(keys.length * 2);
    const nextBits = new Uint8Array(bits.length * 2);
    this.used = 0;
    for (let at = 0; at < keys.length; at += 2) {
      const held = bits[at >> 1]!;
      if (held === 0) continue;
      nextBits[this.place(nextKeys, keys[at]!, keys[at + 1]!) >> 1] = held;
      this.used++;
    }
    this.keys = nextKeys;
    this.bits = nextBits;
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
