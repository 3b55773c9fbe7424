import { entryKind, normalizeEntryName, type KindedHeader } from './entry-safety.ts';
import { NameHashSet, NameTable } from './name-hash-set.ts';

/**
 * Which hard links of an archive tar -x can create, for the server to refuse on push an archive
 * none can restore. A hard link names an entry extracted before it: one naming an entry that comes
 * later, is missing, or is a directory fails in GNU tar ("Cannot hard link"), bsdtar and `volreg
 * pull` alike. The extractor's own rule (safe-extract.ts) is the same: a link may name a file,
 * symlink, fifo, device or link extracted earlier.
 *
 * The names seen are kept as 64-bit hashes of their normalised form, in the table tree-shape.ts
 * keeps the same names in (name-hash-set.ts: an archive of a million entries holds 18 to 36 MB,
 * not the hundreds its names would). A collision can only let a bad link through, never refuse a
 * good one, and the extractor still refuses that link. A link whose name or target is unsafe
 * (absolute, `..`) is not judged here: the restore refuses those (isUnsafeEntry counts them).
 */
export class LinkTargets {
  private readonly seen: NameHashSet;

  /** `names`: the table to keep the names in, shared with the archive's other rules (TreeShape) */
  constructor(names = new NameTable()) {
    this.seen = new NameHashSet(names);
  }

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
      if (!this.seen.has(target)) return target;
    }
    if (name === null || name === '') return null;
    if (kind === 'directory' || kind === 'other') this.seen.remove(name);
    else this.seen.add(name);
    return null;
  }
}
