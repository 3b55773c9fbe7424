import { chmod, lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The switch-over of a pull: the target directory's contents replaced by the staged ones, all
 * or nothing. Every move is a rename within one filesystem (staging and aside are in the pull's
 * work directory, inside the target):
 *
 *   target/*  -> aside/*     the old contents moved aside, not deleted yet
 *   staging/* -> target/*    the new ones moved in
 *
 * If a move fails, the moves done are undone (new entries back to staging, old ones back to the
 * target) and that move's error is thrown, so the target is as it was. Only after a complete
 * switch does the caller delete the old contents (removeTree).
 */
export interface ReplaceOptions {
  /** the entry of the target to leave where it is (the pull's own work directory) */
  keep: string;
  onWarning?: (message: string) => void;
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/**
 * rename(2). Moving a directory to another parent rewrites its `..`, which needs write permission
 * on the directory itself: a read-only one of the user's own gets u+w for the move, and its mode
 * back after (chmod leaves its mtime alone).
 */
async function moveEntry(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
    return;
  } catch (err) {
    if (errorCode(err) !== 'EACCES') throw err;
    const st = await lstat(from).catch(() => null);
    if (st === null || !st.isDirectory() || (st.mode & 0o200) !== 0) throw err;
    try {
      await chmod(from, (st.mode & 0o7777) | 0o200);
    } catch {
      throw err; // not the user's own: the rename's EACCES is what went wrong
    }
    try {
      await rename(from, to);
    } catch (again) {
      await chmod(from, st.mode & 0o7777).catch(() => undefined);
      throw again;
    }
    await chmod(to, st.mode & 0o7777);
  }
}

/** Replaces the contents of `target` (but `keep`) by those of `staging`, moving the old ones into `aside`. */
export async function replaceContents(target: string, staging: string, aside: string, opts: ReplaceOptions): Promise<void> {
  await mkdir(aside);
  // sorted: the same archive and target switch over in the same order every time
  const old = (await readdir(target)).filter((n) => n !== opts.keep).sort();
  const incoming = (await readdir(staging)).sort();
  const movedOut: string[] = [];
  const movedIn: string[] = [];
  try {
    for (const n of old) {
      await moveEntry(join(target, n), join(aside, n));
      movedOut.push(n);
    }
    for (const n of incoming) {
      await moveEntry(join(staging, n), join(target, n));
      movedIn.push(n);
    }
  } catch (err) {
    const back: Array<[string, string]> = [
      ...movedIn.reverse().map((n): [string, string] => [join(target, n), join(staging, n)]),
      ...movedOut.reverse().map((n): [string, string] => [join(aside, n), join(target, n)]),
    ];
    for (const [from, to] of back) {
      // the switch's own error is the one to report; an undo that fails is a warning naming where the entry is
      await moveEntry(from, to).catch((undo: unknown) => opts.onWarning?.(`could not move ${from} back to ${to}: ${(undo as Error).message}`));
    }
    throw err;
  }
}

/**
 * Makes every directory in a tree of the user's own enterable, listable and writable (u+rwx), so
 * it can be removed. Entries that vanish meanwhile are passed over: the removals of the rm that
 * failed may still be under way (it reports its first error while its other branches go on).
 */
async function makeRemovable(path: string): Promise<void> {
  const st = await lstat(path).catch(passGone);
  if (!st?.isDirectory()) return;
  if ((st.mode & 0o700) !== 0o700) await chmod(path, (st.mode & 0o7777) | 0o700).catch(passGone);
  for (const n of (await readdir(path).catch(passGone)) ?? []) await makeRemovable(join(path, n));
}

function passGone(err: unknown): null {
  if (errorCode(err) === 'ENOENT') return null;
  throw err;
}

/** Tries of removeTree: each makes the tree removable again and removes what is left. */
const REMOVE_TRIES = 3;

/**
 * rm -rf, adding u+rwx to the directories that need it (read-only ones stop a user's rm); throws
 * when it still fails. A failed try's own removals may race the next (ENOENT, ENOTEMPTY): tried
 * again, a few times.
 */
export async function removeTree(path: string): Promise<void> {
  for (let tries = 1; ; tries++) {
    try {
      await rm(path, { recursive: true, force: true });
      return;
    } catch (err) {
      const code = errorCode(err);
      if (tries >= REMOVE_TRIES || (code !== 'EACCES' && code !== 'ENOENT' && code !== 'ENOTEMPTY')) throw err;
      await makeRemovable(path);
    }
  }
}
