import { closeSync, constants, existsSync, fchmodSync, fstatSync, lstatSync, openSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';

/**
 * Directories held open by descriptor, their entries reached as `/proc/self/fd/<fd>/<name>`:
 * the kernel resolves that from the directory the descriptor holds (openat(2), which Node lacks),
 * so a directory of the volume renamed or swapped for a symlink by whoever writes the volume
 * (a container using it, while the agent runs as root) can not redirect the agent outside it.
 * A path like `<volume>/a/b` is resolved anew at each call, and `a` may be a symlink to `/etc` by
 * then; `/proc/self/fd/<fd of a>/b` is `b` in the directory `a` was when it was opened, and
 * opening a directory with O_NOFOLLOW (here, always) refuses a symlink in its place.
 *
 * Linux only, as the agent is (Docker hosts): without /proc the agent refuses to run a push or
 * pull rather than fall back to paths.
 */
const PROC_FD = '/proc/self/fd';

/** O_PATH (Linux, every architecture Node runs on here): a descriptor naming an inode without opening it (no device driver's open, no fifo wait). */
export const O_PATH = 0o10000000;

export const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

let procChecked = false;

function requireProc(): void {
  if (procChecked) return;
  if (!existsSync(PROC_FD)) throw new Error(`${PROC_FD} is missing: the volreg agent reaches a volume's entries through it (mount /proc)`);
  procChecked = true;
}

/** `name` (one component) in the directory held by `fd`, or that directory itself. */
export function fdPath(fd: number, name?: string): string {
  requireProc();
  return name === undefined ? `${PROC_FD}/${fd}` : `${PROC_FD}/${fd}/${name}`;
}

/** fdPath for another program this process runs (its own /proc/self is not this one). */
export function fdPathForChild(fd: number, name: string): string {
  requireProc();
  return `/proc/${process.pid}/fd/${fd}/${name}`;
}

/** Did opening a directory with O_NOFOLLOW meet something else in its place (a symlink: ELOOP, or ENOTDIR with O_DIRECTORY)? */
export function isNotADirectory(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ELOOP' || code === 'ENOTDIR';
}

/** Opens the directory `name` of `parentFd` (never through a symlink). */
export function openDirAt(parentFd: number, name: string): number {
  return openSync(fdPath(parentFd, name), DIR_FLAGS);
}

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Tries of removeTreeAt on one directory that something keeps filling while it is emptied. */
const REMOVE_TRIES = 3;

/**
 * rm -rf of `name` in the directory `parentPath` (a path the volume's writers can not change, or
 * an fdPath), by descriptor all the way down: a directory swapped for a symlink while it is
 * emptied is unlinked as the symlink it now is, never followed. Directories of the user's own
 * that are not u+rwx get it first (read-only ones stop a user's unlink). Gone already is done.
 */
export function removeTreeAt(parentPath: string, name: string): void {
  const path = `${parentPath}/${name}`;
  for (let tries = 1; ; tries++) {
    let fd: number;
    try {
      fd = openSync(path, DIR_FLAGS);
    } catch (err) {
      if (code(err) === 'ENOENT') return;
      if (!isNotADirectory(err)) throw err;
      try {
        unlinkSync(path);
      } catch (again) {
        if (code(again) !== 'ENOENT') throw again;
      }
      return;
    }
    try {
      const st = fstatSync(fd);
      if ((st.mode & 0o700) !== 0o700) {
        try {
          fchmodSync(fd, (st.mode & 0o7777) | 0o700);
        } catch {
          // not the user's own: the unlinks below say what went wrong
        }
      }
      for (const child of readdirSync(fdPath(fd))) removeTreeAt(fdPath(fd), child);
    } finally {
      closeSync(fd);
    }
    try {
      rmdirSync(path);
      return;
    } catch (err) {
      const c = code(err);
      if (c === 'ENOENT') return;
      if (tries >= REMOVE_TRIES || (c !== 'ENOTEMPTY' && c !== 'EEXIST')) throw err;
    }
  }
}

/** lstat of `name` in `parentFd`, or null when nothing is there. */
export function lstatAt(parentFd: number, name: string): ReturnType<typeof lstatSync> | null {
  try {
    return lstatSync(fdPath(parentFd, name));
  } catch (err) {
    if (code(err) === 'ENOENT') return null;
    throw err;
  }
}
