import { chmodSync, closeSync, constants, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';

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

/** What each descriptor held here is, as the operator knows it: the paths errors and warnings name. */
const labels = new Map<number, string>();

/** Notes that `fd` is the directory at `path` (for messages), until unlabelFd. */
export function labelFd(fd: number, path: string): number {
  labels.set(fd, path);
  return fd;
}

export function unlabelFd(fd: number): void {
  labels.delete(fd);
}

/** `text` with each `/proc/self/fd/<fd>` of a labelled descriptor written as its path. */
export function humanPath(text: string): string {
  return text.replace(/\/proc\/self\/fd\/(\d+)/g, (whole, fd: string) => labels.get(Number(fd)) ?? whole);
}

/** The error with its message and paths written with humanPath (a system call's error names the path it was given). */
export function humanError<T>(err: T): T {
  if (err instanceof Error) {
    err.message = humanPath(err.message);
    const e = err as NodeJS.ErrnoException & { dest?: string };
    if (typeof e.path === 'string') e.path = humanPath(e.path);
    if (typeof e.dest === 'string') e.dest = humanPath(e.dest);
  }
  return err;
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

/**
 * Changes the mode of the directory at `path` to `mode(current)`, never through a symlink in its
 * place (false then, or when it is not a directory); an O_PATH descriptor needs no permission
 * on the directory itself, so a user's own `000` directory is reached too.
 */
export function chmodDir(path: string, mode: (current: number) => number): boolean {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    if (isNotADirectory(err)) return false;
    throw err;
  }
  try {
    const current = fstatSync(fd).mode & 0o7777;
    const wanted = mode(current);
    // through the descriptor's own entry in /proc: exactly the inode opened
    if (wanted !== current) chmodSync(fdPath(fd), wanted);
    return true;
  } finally {
    closeSync(fd);
  }
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
      // u+rwx first: a user's read-only directory can not be listed or emptied (as root it changes nothing)
      if (!chmodDir(path, (mode) => mode | 0o700)) {
        unlinkSync(path);
        return;
      }
      fd = openSync(path, DIR_FLAGS);
    } catch (err) {
      const c = code(err);
      if (c === 'ENOENT') return;
      if (!isNotADirectory(err)) throw err;
      try {
        unlinkSync(path);
      } catch (again) {
        if (code(again) !== 'ENOENT') throw again;
      }
      return;
    }
    try {
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

/** Directories a TreeDirs keeps open at most: enough for any walk in listing order, well under the descriptors a process has. */
const HELD_DIRS = 256;

/** Why a directory of the tree could not be reached: `at` (a path relative to the root) is missing, a symlink or not a directory. */
export class UnreachableDirError extends Error {
  override name = 'UnreachableDirError';
  constructor(
    readonly at: string,
    readonly what: 'missing' | 'symlink' | 'not a directory',
  ) {
    super(`${at} is ${what === 'missing' ? 'missing' : what === 'symlink' ? 'a symlink' : 'not a directory'}`);
  }
}

/**
 * The directories of a tree, reached from its root's descriptor one component at a time, each
 * opened with O_NOFOLLOW and kept open (the least recently used closed past HELD_DIRS), so a
 * directory renamed or swapped for a symlink once reached is still the one written into.
 */
export class TreeDirs {
  /** by path relative to the root; Map order is use order, oldest first */
  private readonly held = new Map<string, number>();

  constructor(
    readonly rootFd: number,
    /** the root's path, for messages */
    private readonly rootPath: string,
  ) {
    labelFd(rootFd, rootPath);
  }

  /**
   * The descriptor of the directory `rel` ('' is the root), valid until the next call. Missing
   * directories are made with `mkdirMode` when given (as `tar -x` makes parents: umask applies),
   * an UnreachableDirError otherwise; a symlink or non-directory on the way is one always.
   */
  dir(rel: string, mkdirMode?: number): number {
    if (rel === '') return this.rootFd;
    const hit = this.held.get(rel);
    if (hit !== undefined) {
      this.held.delete(rel);
      this.held.set(rel, hit);
      return hit;
    }
    const slash = rel.lastIndexOf('/');
    const parent = this.dir(slash === -1 ? '' : rel.slice(0, slash), mkdirMode);
    const name = rel.slice(slash + 1);
    let fd: number;
    try {
      fd = openDirAt(parent, name);
    } catch (err) {
      const c = code(err);
      if (c === 'ENOENT' && mkdirMode !== undefined) {
        mkdirSync(fdPath(parent, name), { mode: mkdirMode });
        return this.dir(rel, mkdirMode);
      }
      if (c === 'ENOENT') throw new UnreachableDirError(rel, 'missing');
      if (!isNotADirectory(err)) throw err;
      const st = lstatAt(parent, name);
      throw new UnreachableDirError(rel, st?.isSymbolicLink() ? 'symlink' : st === null ? 'missing' : 'not a directory');
    }
    this.held.set(rel, labelFd(fd, `${this.rootPath}/${rel}`));
    if (this.held.size > HELD_DIRS) {
      const [oldest, oldFd] = this.held.entries().next().value as [string, number];
      this.held.delete(oldest);
      unlabelFd(oldFd);
      closeSync(oldFd);
    }
    return fd;
  }

  /** Closes `rel` and what is held beneath it (the directory is gone). */
  forget(rel: string): void {
    for (const [r, fd] of this.held) {
      if (r === rel || r.startsWith(`${rel}/`)) {
        this.held.delete(r);
        unlabelFd(fd);
        closeSync(fd);
      }
    }
  }

  /** Closes every directory held but the root (its owner's). */
  close(): void {
    for (const fd of this.held.values()) {
      unlabelFd(fd);
      closeSync(fd);
    }
    this.held.clear();
  }
}
