import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { fdPath, O_PATH } from './archive/dir-fd.ts';

/**
 * The small text files the host agent reads: the lock file and the tags file beside the
 * volumes. Only a regular file of at most `maxBytes` is read: a fifo would hang the command
 * until something writes to it, a device (/dev/zero) would be read until memory runs out, and
 * opening a device runs its driver (a tape rewinds). So the name is opened O_PATH first (no
 * driver's open, no fifo wait), judged by that descriptor's fstat, and exactly that inode is
 * then opened for reading: nothing swapped in between is read.
 */
export class SmallFileError extends Error {
  override name = 'SmallFileError';
  constructor(
    message: string,
    /** what stands there: for the caller's hint */
    readonly kind: 'symlink' | 'directory' | 'special' | 'too-large' | 'unreadable',
  ) {
    super(message);
  }
}

export interface SmallFileRule {
  /** how messages name the file: `lock file`, `tags file` */
  what: string;
  maxBytes: number;
  /** false: a symlink is refused, never followed (a file in a directory that others may write) */
  followSymlink: boolean;
}

/** The file's text, or null when it does not exist; a SmallFileError for anything else but a readable regular file. */
export async function readSmallFile(path: string, rule: SmallFileRule): Promise<string | null> {
  let named: FileHandle;
  try {
    named = await open(path, O_PATH | (rule.followSymlink ? 0 : constants.O_NOFOLLOW));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'EACCES') throw new SmallFileError(`${rule.what} ${path} cannot be read (permission denied)`, 'unreadable');
    if (code === 'ENOTDIR') throw new SmallFileError(`${rule.what} ${path} does not exist (a part of its path is not a directory)`, 'unreadable');
    throw err;
  }
  try {
    const st = await named.stat();
    const problem = kindProblem(st);
    if (problem !== null) throw new SmallFileError(`${rule.what} ${path} ${problem.text}`, problem.kind);
    if (st.size > rule.maxBytes) throw tooLarge(path, rule, st.size);
    const file = await open(fdPath(named.fd), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY).catch((err: unknown) => {
      throw (err as NodeJS.ErrnoException).code === 'EACCES' ? new SmallFileError(`${rule.what} ${path} cannot be read (permission denied)`, 'unreadable') : err;
    });
    try {
      return await readAtMost(file, path, rule);
    } finally {
      await file.close();
    }
  } finally {
    await named.close();
  }
}

function kindProblem(st: Stats): { text: string; kind: SmallFileError['kind'] } | null {
  if (st.isFile()) return null;
  if (st.isSymbolicLink()) return { text: 'is a symlink, not a regular file (a link there is never followed)', kind: 'symlink' };
  if (st.isDirectory()) return { text: 'is a directory', kind: 'directory' };
  const type = st.isFIFO() ? 'a fifo' : st.isSocket() ? 'a socket' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : 'not a file';
  return { text: `is ${type}, not a regular file`, kind: 'special' };
}

function tooLarge(path: string, rule: SmallFileRule, size: number | null): SmallFileError {
  return new SmallFileError(`${rule.what} ${path} is larger than ${rule.maxBytes} bytes${size === null ? '' : ` (${size})`}: not a ${rule.what}`, 'too-large');
}

/** At most maxBytes of the file: one grown since its stat is refused, not read on. */
async function readAtMost(file: FileHandle, path: string, rule: SmallFileRule): Promise<string> {
  const buf = Buffer.alloc(rule.maxBytes + 1);
  let got = 0;
  for (;;) {
    const { bytesRead } = await file.read(buf, got, buf.length - got, null);
    if (bytesRead === 0) break;
    got += bytesRead;
    if (got > rule.maxBytes) throw tooLarge(path, rule, null);
  }
  return buf.subarray(0, got).toString('utf8');
}
