import { posix } from 'node:path';

/**
 * Lexical safety rules for tar entry names and link targets, shared by the server (which
 * records how many entries a careful extractor would refuse) and the CLI's extractor (which
 * refuses them). Lexical checks are necessary, not sufficient: the extractor also refuses to
 * write through any symlink on disk, and once everything is extracted it resolves every symlink
 * it created against the extracted tree (a link through another link, `y -> .` then
 * `l -> y/y/../../etc`, passes the lexical check and still leaves the root).
 */
export type EntryKind = 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo' | 'other';

/** What entryKind needs of a parsed tar header (tar-stream's Header fits). */
export interface KindedHeader {
  name: string;
  /** null: a type the parser does not know */
  type?: string | null;
}

/**
 * What an entry makes on disk, as tar -x decides it. A regular file entry whose name ends in `/`
 * is a directory (the convention of tars before ustar, which GNU tar, bsdtar and busybox follow;
 * tar-stream means to, but sets the flag after it has chosen the type, so it hands it over as a
 * file).
 */
export function entryKind(header: KindedHeader): EntryKind {
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
    case undefined:
      return header.name.endsWith('/') ? 'directory' : 'file';
    case 'directory':
    case 'symlink':
    case 'link':
    case 'character-device':
    case 'block-device':
    case 'fifo':
      return header.type;
    default:
      return 'other';
  }
}

/**
 * Normalises an entry name to a relative path inside the archive root: strips leading `./`
 * and trailing `/`. Returns null for a name that is absolute, contains a `..` component or a
 * NUL ('' after normalisation means the root directory entry `./`). Only `/` separates
 * components: a backslash or a `C:` prefix is an ordinary part of a Linux file name (volumes
 * are restored on Linux), so names holding them are restored as they are.
 */
export function normalizeEntryName(name: string): string | null {
  if (name.includes('\0')) return null;
  if (name.startsWith('/')) return null;
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return null;
    parts.push(part);
  }
  return parts.join('/');
}

/** Does a symlink at `entryPath` (normalised) pointing at `target` stay inside the root? */
export function symlinkStaysInside(entryPath: string, target: string): boolean {
  if (target.length === 0 || target.includes('\0') || target.startsWith('/')) return false;
  // Relative on purpose: normalising an absolute path would clamp '/..' to '/' and hide the escape.
  const resolved = posix.normalize(posix.join(posix.dirname(entryPath), target));
  return resolved !== '..' && !resolved.startsWith('../');
}

/** Whether an extractor following the CLI's rules would refuse this entry outright. */
export function isUnsafeEntry(kind: EntryKind, name: string, linkname: string | null | undefined): boolean {
  const path = normalizeEntryName(name);
  if (path === null) return true;
  if (path === '') return kind !== 'directory';
  if (kind === 'symlink') return !symlinkStaysInside(path, linkname ?? '');
  if (kind === 'link') {
    const target = normalizeEntryName(linkname ?? '');
    return target === null || target === '';
  }
  return kind === 'character-device' || kind === 'block-device';
}
