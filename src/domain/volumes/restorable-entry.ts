import { invalidAttributeRecords, unreadableNumericFields } from './entry-attributes.ts';
import { entryKind } from './entry-safety.ts';

/**
 * Tar entries a restore can not reproduce exactly, shared by the server (which refuses an
 * archive holding one when it is pushed, so a backup fails when it is taken rather than when it
 * is needed) and the CLI's extractor (which refuses one on restore, for archives stored before).
 *
 * - A name or link target that is not valid UTF-8: the tar parser hands it over with U+FFFD in
 *   place of each bad byte, so two such names can become one file on restore. (A name really
 *   holding U+FFFD is refused too: it can not be told apart.)
 * - GNU sparse files (`tar -S`): as an entry of its own type ('S') or as a plain file named
 *   `GNUSparseFile.N/...` described by `GNU.sparse.*` pax records; restored, they would be
 *   missing or hold the wrong bytes.
 * - Any entry type the parser does not know (GNU volume labels, multi-volume continuations, ...).
 * - A pax `mtime`, `uid` or `gid` record that is not a valid value (entry-attributes.ts): the
 *   ustar field beside it holds only a stand-in; and a mode, mtime, uid or gid field that is not
 *   a number, with no valid pax record in its place.
 * - A name with a component longer than 255 bytes: no Linux filesystem (ext4, XFS, Btrfs, tmpfs)
 *   can hold such a file name.
 * - Extended attributes, ACLs, SELinux labels or file flags in pax records (`tar --xattrs`,
 *   `--acls`, `--selinux`, bsdtar): Node has no call to set them, so a restore would drop them.
 * - A regular file entry whose name ends in `/` and that carries data: tar readers take it for a
 *   directory (entry-safety.ts, entryKind) and then read its data as headers (GNU tar and bsdtar
 *   both fail on it); without data it is simply a directory.
 */

/** NAME_MAX of Linux filesystems, in bytes. */
const NAME_MAX = 255;

/** pax records (GNU tar, star, libarchive) holding what a restore can not set. */
const UNSETTABLE_RECORD = /^(SCHILY\.xattr\.|LIBARCHIVE\.xattr\.|SCHILY\.acl\.|RHT\.security\.selinux$|SCHILY\.fflags$)/;

/** What the rule needs of a parsed tar header (tar-stream's Header fits). */
export interface TarEntryHeader {
  name: string;
  linkname?: string | null;
  /** null: a type the parser does not know */
  type?: string | null;
  /** the entry's pax records, when it had any */
  pax?: unknown;
  /** bytes of data the entry carries */
  size?: number | null;
  mode?: number;
  mtime?: Date;
  uid?: number;
  gid?: number;
}

/** Does a name hold U+FFFD, the parser's stand-in for bytes that were not UTF-8? (push refuses such names too) */
export function holdsReplacementCharacter(name: string): boolean {
  return name.includes('\uFFFD');
}

/** Why this entry can not be restored exactly, or null when it can. */
export function unrestorableReason(header: TarEntryHeader): string | null {
  if (holdsReplacementCharacter(header.name) || holdsReplacementCharacter(header.linkname ?? '')) {
    return 'its name is not valid UTF-8';
  }
  if (header.name.split('/').some((part) => Buffer.byteLength(part) > NAME_MAX)) {
    return `a component of its name is longer than ${NAME_MAX} bytes, which no Linux filesystem can hold`;
  }
  const records = typeof header.pax === 'object' && header.pax !== null ? Object.keys(header.pax) : [];
  if (records.some((k) => k.startsWith('GNU.sparse.'))) {
    return 'sparse files (tar -S) are not supported: create the archive without -S';
  }
  const unsettable = records.find((k) => UNSETTABLE_RECORD.test(k));
  if (unsettable !== undefined) {
    return `it carries extended attributes, ACLs, an SELinux label or file flags (pax record ${JSON.stringify(unsettable.slice(0, 80))}), which a restore can not set: create the archive without --xattrs, --acls and --selinux`;
  }
  if (header.type === null) {
    return 'its entry type is not supported (a sparse file from tar -S, or another GNU extension): re-create the archive without -S (nor -g: incremental archives are not supported either)';
  }
  if ((header.type === 'file' || header.type === 'contiguous-file') && entryKind(header) === 'directory' && (header.size ?? 0) > 0) {
    return `a file entry whose name ends in "/" is a directory to tar, which then reads its ${String(header.size)} bytes of data as headers: tar -x can not restore it`;
  }
  return invalidAttributeRecords(header) ?? unreadableNumericFields(header);
}

/** The entry's name as a message can show it: bounded, control characters escaped. */
export function entryNameForMessage(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}...` : name);
}
