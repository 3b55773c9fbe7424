import { chmodSync, closeSync, constants, existsSync, fstatSync, lstatSync, mkdirSync, opendirSync, openSync, rmdirSync, unlinkSync } from 'node:fs';

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

/** fdPath of a name as bytes (a volume's names need not be UTF-8). */
export function fdPathBytes(fd: number, name: Buffer): Buffer {
  requireProc();
  return Buffer.concat([Buffer.from(`${PROC_FD}/${fd}/`), name]);
}

/** Opens the directory `name` of `parentFd` (never through a symlink). */
export function openDirAt(parentFd: number, name: string | Buffer): number {
  return openSync(typeof name === 'string' ? fdPath(parentFd, name) : fdPathBytes(parentFd, name), DIR_FLAGS);
}

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/**
 * Changes the mode of the directory at `path` to `mode(current)`, never through a symlink in its
 * place (false then, or when it is not a directory); an O_PATH descriptor needs no permission
 * on the directory itself, so a user's own `000` directory is reached too.
 */
export function chmodDir(path: string | Buffer, mode: (current: number) => number): boolean {
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

/** Names read from a directory at once while it is emptied: its listing is read again after each subdirectory removed. */
const REMOVE_BATCH = 256;

/** Up to `max` names of the directory held by `fd` (fewer only when it has no more), as bytes: a volume's names need not be UTF-8. */
function someNames(fd: number, max: number): Buffer[] {
  // 'buffer' works as for readdir; the type admits only text encodings
  const dir = opendirSync(fdPath(fd), { encoding: 'buffer' as BufferEncoding });
  try {
    const names: Buffer[] = [];
    while (names.length < max) {
      const entry = dir.readSync();
      if (entry === null) break;
      names.push(entry.name as unknown as Buffer);
    }
    return names;
  } finally {
    dir.closeSync();
  }
}

/**
 * rm -rf of `name` in the directory `parentPath` (a path the volume's writers can not change, or
 * an fdPath), by descriptor all the way down: a directory swapped for a symlink while it is
 * emptied is unlinked as the symlink it now is, never followed. Directories of the user's own
 * that are not u+rwx get it first (read-only ones stop a user's unlink). Gone already is done.
 *
 * However deep the tree, it holds DirChain's few descriptors and a batch of names: a directory's
 * listing is read again each time the walk climbs back into it (what was removed is no longer
 * there), rather than kept for every level.
 */
export function removeTreeAt(parentPath: string, name: string): void {
  let parentFd: number;
  try {
    parentFd = openSync(parentPath, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (err) {
    if (code(err) === 'ENOENT') return;
    throw err;
  }
  const chain = new DirChain(parentFd);
  /** rmdir attempts of each directory entered, by depth */
  const tries: number[] = [];
  try {
    if (!enterToRemove(chain, Buffer.from(name))) return;
    tries.push(0);
    while (chain.depth > 0) {
      const names = someNames(chain.fd(), REMOVE_BATCH);
      let entered = false;
      for (const child of names) {
        if (enterToRemove(chain, child)) {
          tries.push(0);
          entered = true;
          break;
        }
      }
      // a subdirectory to empty, or a full batch (there may be more); else it should be empty now,
      // and what was put in meanwhile is a failed rmdir, tried again a few times only
      if (entered || names.length === REMOVE_BATCH) continue;
      const emptied = chain.leave();
      try {
        rmdirSync(fdPathBytes(chain.fd(), emptied));
        tries.pop();
      } catch (err) {
        const c = code(err);
        if (c === 'ENOENT') {
          tries.pop();
          continue;
        }
        // filled again meanwhile: emptied again, a few times
        if (++tries[tries.length - 1]! >= REMOVE_TRIES || (c !== 'ENOTEMPTY' && c !== 'EEXIST')) throw err;
        if (!enterToRemove(chain, emptied)) tries.pop();
      }
    }
  } finally {
    chain.close();
    closeSync(parentFd);
  }
}

/**
 * Removes `name` of the chain's current directory when it is not a directory (false), or enters
 * it to be emptied (true), u+rwx first. Gone already is removed.
 */
function enterToRemove(chain: DirChain, name: Buffer): boolean {
  const path = fdPathBytes(chain.fd(), name);
  try {
    // u+rwx first: a user's read-only directory can not be listed or emptied (as root it changes nothing)
    if (chmodDir(path, (mode) => mode | 0o700)) {
      chain.enter(name);
      return true;
    }
  } catch (err) {
    if (code(err) === 'ENOENT') return false;
    if (!isNotADirectory(err)) throw err;
  }
  try {
    unlinkSync(path);
  } catch (err) {
    if (code(err) !== 'ENOENT') throw err;
  }
  return false;
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

/**
 * The directories from a held one (the chain's root) down to where a walk is, entered and left
 * one component at a time, each opened with O_NOFOLLOW from the one above: so however long the
 * path (past PATH_MAX, 4095 bytes), no call is given more than `/proc/self/fd/<fd>/<name>`. At
 * most HELD_DIRS of them are open: past that the shallowest are closed, and opened again by
 * name from the root when the walk climbs back to them (never through a symlink: whoever writes
 * the volume can swap a closed level for another of its directories, not for a way out of it).
 * It keeps one name per level, never a path.
 */
export class DirChain {
  private readonly names: Buffer[] = [];
  /** each level's descriptor; those before `firstOpen` are closed */
  private readonly fds: number[] = [];
  private firstOpen = 0;

  constructor(private readonly rootFd: number) {}

  /** How many levels below the root the walk is. */
  get depth(): number {
    return this.names.length;
  }

  /** The descriptor of the directory the walk is in (the root at depth 0), valid until the chain next changes. */
  fd(): number {
    if (this.names.length === 0) return this.rootFd;
    if (this.firstOpen >= this.names.length) {
      // every level closed (the shallowest go first): opened again from the root, the last HELD_DIRS kept
      let at = 0;
      try {
        for (; at < this.names.length; at++) {
          this.fds[at] = openDirAt(at === 0 ? this.rootFd : this.fds[at - 1]!, this.names[at]!);
          if (at >= HELD_DIRS) closeSync(this.fds[at - HELD_DIRS]!);
        }
      } catch (err) {
        // a level gone or swapped meanwhile: what was opened on the way is closed again
        for (let back = Math.max(0, at - HELD_DIRS); back < at; back++) closeSync(this.fds[back]!);
        throw err;
      }
      this.firstOpen = Math.max(0, this.names.length - HELD_DIRS);
    }
    return this.fds[this.names.length - 1]!;
  }

  /** Enters the directory `name` of the current one: openDirAt's errors when it is not one (ELOOP for a symlink, ENOTDIR) or is gone. */
  enter(name: string | Buffer): number {
    const bytes = typeof name === 'string' ? Buffer.from(name) : name;
    const fd = openDirAt(this.fd(), bytes);
    this.names.push(bytes);
    this.fds.push(fd);
    if (this.names.length - this.firstOpen > HELD_DIRS) closeSync(this.fds[this.firstOpen++]!);
    return fd;
  }

  /** Leaves the current directory for its parent; its name. */
  leave(): Buffer {
    const name = this.names.pop();
    if (name === undefined) throw new Error('the walk is at its root already');
    const fd = this.fds.pop()!;
    if (this.firstOpen <= this.names.length) closeSync(fd);
    else this.firstOpen = this.names.length;
    return name;
  }

  /** Closes every level still open (the root is its owner's). */
  close(): void {
    while (this.names.length > 0) this.leave();
  }
}
