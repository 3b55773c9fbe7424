import { constants } from 'node:fs';
import { link, open, opendir, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Filesystem steps the blob store builds on: durable directory entries, missing-file tolerance. */

export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` with `data` so that a crash leaves the old contents or the new, never none
 * and never part: written to `tmp` (beside it) and synced, renamed over it, the rename synced.
 */
export async function replaceFile(path: string, tmp: string, data: string | Uint8Array, opts: { exclusive?: boolean } = {}): Promise<void> {
  // exclusive: `tmp` must be new (O_EXCL never follows a symlink found there), for a directory
  // that others may write; the temporary name should then be unpredictable
  const fh = await open(tmp, opts.exclusive ? constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW : 'w');
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    // nothing replaced: the temporary file goes too (on a full disk it holds what room it took)
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/**
 * Writes all of `data` at `position` (default: the file's current position). A write(2) may
 * take only part of its buffer (a disk filling up takes what fits and reports no error): the
 * rest is written in turn, so the disk's refusal surfaces as an error instead of a file quietly
 * cut short.
 */
export async function writeFully(fh: FileHandle, data: Uint8Array, position?: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position === undefined ? null : position + done);
    if (bytesWritten === 0) throw new Error('the file took no bytes of a write');
    done += bytesWritten;
  }
}

/** After `mkdir -p dir` created `created` and below, makes each new entry durable. */
export async function fsyncCreatedDirs(dir: string, created: string): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    await fsyncDir(dirname(d));
    if (d === created || dirname(d) === d) break;
  }
}

/** Puts a blob moved aside back, unless a commit placed the same bytes there meanwhile. */
export async function putBack(aside: string, target: string): Promise<void> {
  try {
    await link(aside, target);
  } catch (err) {
    if (isMissing(err)) return; // list() put it back already
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await unlink(aside).catch((err: unknown) => {
    if (!isMissing(err)) throw err;
  });
}

export async function* entries(dir: string): AsyncIterable<string> {
  let handle;
  try {
    handle = await opendir(dir);
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  for await (const entry of handle) yield entry.name;
}

export function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The filesystem (or the user's quota) has no room for what was written. */
export function isOutOfSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
