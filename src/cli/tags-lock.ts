import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fdPath, O_PATH } from './archive/dir-fd.ts';

/**
 * The lock that keeps two runs of `backup` or `restore` in one volumes root (a slow nightly
 * backup and the next one, a restore by hand during cron's backup) from losing each other's
 * lines of the tags file: each reads the file, changes its volumes' lines and renames a new
 * file over it, so two such updates at once keep only one's changes.
 *
 * It is flock(2) on `<volumes-root>/.tags.lock`, taken by the util-linux `flock` program on a
 * descriptor this process holds and shares with it (Node has no flock): the lock belongs to the
 * open file, so it stays held after `flock` exits and goes when this process closes it, or dies
 * in any way (kill -9 too). So a lock is never left behind by a killed run, and there is no
 * rule to guess one stale by its owner's pid (a container's agent is pid 1 in its own pid
 * namespace) or its age (a stepped clock). The file itself stays: removing it on release would
 * let a run waiting on the removed file and a run creating a new one both hold "the" lock.
 *
 * As everything in the volumes root (volumes-root.ts), the name is never followed: it is created
 * exclusively (O_EXCL follows no link), and one found there is opened only if it is a regular
 * file with no other name (judged by an O_PATH descriptor, then exactly that inode is opened,
 * read-only: no device's driver runs, no fifo is waited on, nothing is ever written to it).
 */
export const TAGS_LOCK_FILE = '.tags.lock';

/** The lock file's name holds something else: what stands there, and what to do, in one line. */
export class TagsLockFileError extends Error {
  override name = 'TagsLockFileError';
}

/** Another run held the lock for all of the wait: the run stops (waiting per volume would add up). */
export class TagsLockTimeoutError extends Error {
  override name = 'TagsLockTimeoutError';
}

/** How long a run waits for the lock by default: other runs hold it for the milliseconds of one small file's rewrite. */
export const DEFAULT_TAGS_LOCK_WAIT_SECONDS = 30;

/**
 * Runs `use` holding the tags lock of the volumes root, waiting at most `waitSeconds` for it
 * (0: not at all); a TagsLockTimeoutError saying `what` was not done when another run holds it
 * longer.
 */
export async function withTagsLock<T>(volumesRoot: string, waitSeconds: number, what: string, use: () => Promise<T>): Promise<T> {
  const path = join(volumesRoot, TAGS_LOCK_FILE);
  const file = await openLockFile(path);
  try {
    if (!(await flock(file, waitSeconds))) {
      throw new TagsLockTimeoutError(
        `another backup or restore in ${volumesRoot} held its tags file lock (${path}) for more than ${waitSeconds} s (--tags-lock-timeout, VOLREG_TAGS_LOCK_TIMEOUT): ${what}; stopped`,
      );
    }
    return await use();
  } finally {
    // the last descriptor of the open file: closing it releases the lock
    await file.close();
  }
}

/** Why the lock file's name can not be used, as a message, or null (nothing there, or a usable lock file). */
export async function tagsLockProblem(volumesRoot: string): Promise<string | null> {
  const path = join(volumesRoot, TAGS_LOCK_FILE);
  const named = await open(path, O_PATH | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (named === null) return null;
  try {
    return await problemOf(named, path);
  } finally {
    await named.close();
  }
}

async function problemOf(named: FileHandle, path: string): Promise<string | null> {
  const st = await named.stat();
  const fix = `the tags file lock of the volumes root goes there (remove it)`;
  if (st.isSymbolicLink()) return `tags lock file ${path} is a symlink, not a regular file (a link there is never followed): ${fix}`;
  if (!st.isFile()) return `tags lock file ${path} is not a regular file: ${fix}`;
  if (st.nlink !== 1) return `tags lock file ${path} has another name (a hard link): ${fix}`;
  return null;
}

async function openLockFile(path: string): Promise<FileHandle> {
  // The name may come and go under us (an operator removing it): a few tries, never a loop
  for (let attempt = 0; ; attempt++) {
    try {
      return await open(path, constants.O_RDONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_NOCTTY, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let named: FileHandle;
    try {
      named = await open(path, O_PATH | constants.O_NOFOLLOW);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 3) continue;
      throw err;
    }
    try {
      const problem = await problemOf(named, path);
      if (problem !== null) throw new TagsLockFileError(problem);
      return await open(fdPath(named.fd), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    } finally {
      await named.close();
    }
  }
}

/** flock(2) LOCK_EX on the open file, by the `flock` program on a descriptor it shares: false when still held by another after waitSeconds. */
function flock(file: FileHandle, waitSeconds: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn('flock', ['--exclusive', '--wait', String(waitSeconds), '3'], { stdio: ['ignore', 'ignore', 'pipe', file.fd] });
    let said = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (said += d));
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT' ? new Error('the flock program (util-linux) is needed to lock the tags file beside the volumes: install it') : err);
    });
    child.on('close', (code, signal) => {
      if (code === 0) resolve(true);
      // flock's exit 1 without a word: the wait ran out
      else if (code === 1 && said.trim() === '') resolve(false);
      else reject(new Error(`the tags file lock could not be taken: flock ${signal ?? `exit ${code}`}: ${said.trim().split('\n')[0] ?? ''}`));
    });
  });
}
