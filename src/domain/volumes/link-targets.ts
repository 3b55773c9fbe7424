import { entryKind, normalizeEntryName, type KindedHeader } from './entry-safety.ts';

/**
 * Which hard links of an archive tar -x can create, for the server to refuse on push an archive
 * none can restore. A hard link names an entry extracted before it: one naming an entry that comes
 * later, is missing, or is a directory fails in GNU tar ("Cannot hard link"), bsdtar and `volreg
 * pull` alike. The extractor's own rule (safe-extract.ts) is the same: a link may name a file,
 * symlink, fifo, device or link extracted earlier.
 *
 * The names seen are kept as 64-bit hashes of their normalised form in an open-addressing table
 * (at most 16 bytes an entry: an archive of a million entries holds 16 MB, not the hundreds its
 * names would; taking a million entries took about 1 s on a loaded 2-core machine). A collision
 * can only let a bad link through, never refuse a good one. A link whose name or target is unsafe (absolute, `..`) is not judged here: the restore
 * refuses those (isUnsafeEntry counts them).
 */
export class LinkTargets {
  /** pairs of 32-bit words; (0,0) is an empty slot, (0,1) a removed one; keys never have a 0 high word */
  private table = new Uint32Array(2 * 1024);
  private used = 0;

  /**
   * Takes the next entry of the archive; returns the normalised target of a hard link that no
   * earlier entry can be, or null.
   */
  admit(header: KindedHeader & { linkname?: string | null }): string | null {
    const name = normalizeEntryName(header.name);
    const kind = entryKind(header);
    if (kind === 'link') {
      const target = normalizeEntryName(header.linkname ?? '');
      if (name === null || name === '' || target === null || target === '') return null;
      if (!this.has(target)) return target;
    }
    if (name === null || name === '') return null;
    if (kind === 'directory' || kind === 'other') this.remove(name);
    else this.add(name);
    return null;
  }

  private add(name: string): void {
    const [hi, lo] = key(name);
    if (this.find(hi, lo) >= 0) return;
    if ((this.used + 1) * 2 > this.table.length / 2) this.grow();
    this.place(this.table, hi, lo);
    this.used++;
  }

  private has(name: string): boolean {
    const [hi, lo] = key(name);
    return this.find(hi, lo) >= 0;
  }

  private remove(name: string): void {
    const [hi, lo] = key(name);
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

/**
 * Two 32-bit hashes of the name's UTF-16 code units (cyrb53's mixing, both halves kept): a few
 * nanoseconds a character (a sha256 of each name made the whole 3 times slower).
 */
function key(name: string): [number, number] {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0 || 1, h2 >>> 0];
}
