import { entryKind, normalizeEntryName, type KindedHeader } from './entry-safety.ts';
import { ancestorKeys, NameHashSet, NameTable } from './name-hash-set.ts';

/**
 * Whether the entries of an archive, made one after the other as tar -x makes them, fit together
 * as a tree, for the server to refuse on push an archive no extractor can restore. The CLI's
 * extractor (safe-extract.ts) refuses, and GNU tar and bsdtar fail on:
 *
 * - an entry beneath a name an earlier entry made a file, fifo, device or hard link (`a`, then
 *   `a/b`): its parent is not a directory;
 * - a non-directory entry where an earlier one made a directory that holds entries (`d/x`, then
 *   `d` as a file or symlink): tar removes a directory it replaces only while it is empty.
 *
 * An entry beneath a name an earlier entry made a symlink (`s -> dir`, then `s/x`) is one the
 * extractor refuses for safety (it never writes through a symlink), as it refuses absolute names
 * and escaping links: such entries are counted as unsafe, not refused (README, Volume snapshots).
 *
 * The names are kept as 64-bit hashes (name-hash-set.ts, 18 to 36 bytes a name, in the table
 * link-targets.ts keeps the same names in): a collision
 * could refuse an archive whose names were chosen to collide (its author's own), or, by chance,
 * one lookup in about 2^64 / n among n names.
 */
export type ShapeVerdict = { refused: string } | 'beneath-symlink' | null;

export class TreeShape {
  /** names an entry made a symlink (directly, or as a hard link to one) */
  private readonly symlinks: NameHashSet;
  /** names an entry made a file, fifo, device or hard link to one of those */
  private readonly others: NameHashSet;
  /** directories holding entries (made by an entry, or on the way to one) */
  private readonly parents: NameHashSet;

  /** `names`: the table to keep the names in, shared with the archive's other rules (LinkTargets) */
  constructor(names = new NameTable()) {
    this.symlinks = new NameHashSet(names);
    this.others = new NameHashSet(names);
    this.parents = new NameHashSet(names);
  }

  /** Takes the next entry (names that are unsafe, or the root, are left to isUnsafeEntry). */
  admit(header: KindedHeader & { linkname?: string | null }): ShapeVerdict {
    const name = normalizeEntryName(header.name);
    if (name === null || name === '') return null;
    const kind = entryKind(header);
    const ancestors = ancestorKeys(name);
    // A directory holding entries never becomes anything else (replacing it is refused), so
    // below the deepest ancestor already known to hold entries only the rest need checking:
    // each entry costs its own name's length, not its depth squared.
    let known = ancestors.length - 1;
    while (known >= 0 && !this.parents.has(ancestors[known]!)) known--;
    for (let i = known + 1; i < ancestors.length; i++) {
      const ancestor = ancestors[i]!;
      if (this.symlinks.has(ancestor)) return 'beneath-symlink';
      if (this.others.has(ancestor)) return { refused: `its parent ${JSON.stringify(ancestorName(name, i).slice(0, 200))} is not a directory but an earlier entry of the archive: tar -x can not create it` };
      this.parents.add(ancestor);
    }
    if (kind === 'directory') {
      this.symlinks.remove(name);
      this.others.remove(name);
      return null;
    }
    if (this.parents.has(name)) return { refused: 'it would replace a directory that holds earlier entries of the archive: tar -x removes a directory only while it is empty' };
    const target = kind === 'link' ? normalizeEntryName(header.linkname ?? '') : null;
    if (kind === 'symlink' || (target !== null && this.symlinks.has(target))) {
      this.others.remove(name);
      this.symlinks.add(name);
    } else {
      this.symlinks.remove(name);
      this.others.add(name);
    }
    return null;
  }
}

/** The `i`th ancestor of a name (0: its first component), for a message. */
function ancestorName(name: string, i: number): string {
  return name.split('/').slice(0, i + 1).join('/');
}
