import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { readlinkSync } from 'node:fs';
import { open, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { monotonicMs } from '../domain/clock.ts';
import { VolregError } from '../domain/errors.ts';

/**
 * Mutual exclusion for one upload session, within a process (a promise chain per key) and
 * across processes sharing the data directory (a lock file created with O_EXCL).
 *
 * The lock file names its owner: host, pid namespace, pid and the owning store instance. A lock
 * is broken when its owner is gone: on this host and in this pid namespace, a pid that no longer
 * runs, or a store instance of this
 * very process that was closed; from another host, a lock whose mtime was not refreshed for
 * `staleMs` (holders refresh it while they work). Two processes breaking the same stale lock
 * at the same instant could both proceed; that needs a crash plus a race on one session and is
 * accepted (the commit still verifies the digest of what it read under its own lock).
 *
 * A request waiting for the lock in another process keeps a file beside it fresh
 * (`<lock>.wanted`), so a holder whose client went silent gives way to it as to a request
 * queued in its own process (see `interruptible`): behind a load balancer a client's retry
 * lands on any process.
 */

interface LockOwner {
  host: string;
  /** the pid namespace of `pid` (containers can share a host name, not their pids); absent in older locks */
  pidNamespace?: string;
  pid: number;
  instance: string;
}

const PID_NAMESPACE = ((): string => {
  try {
    return readlinkSync('/proc/self/ns/pid'); // pid:[4026531836]
  } catch {
    return '-'; // no /proc (not Linux): one namespace
  }
})();

// Store instances alive in this process: a lock naming our pid but none of these is stale.
const liveInstances = new Set<string>();

export interface SessionLocksOptions {
  /** how long to wait for a lock another process holds before answering "busy" */
  waitMs: number;
  /** a lock from another host not refreshed for this long is stale */
  staleMs: number;
}

interface WaitingOnClient {
  interrupt: () => void;
  /** since when (monotonicMs) the holder has been waiting for its client's next bytes; null while it is not */
  waitingSince: number | null;
}

const STALL_MS = 2000;
const STALL_CHECK_MS = 250;
/** a `.wanted` file touched this recently has a waiter behind it (waiters touch it every 200 ms at most) */
const WANTED_FRESH_MS = 1000;

function wantedPath(lockPath: string): string {
  return `${lockPath}.wanted`;
}

export class SessionLocks {
  readonly instance = randomUUID();
  private readonly chains = new Map<string, Promise<void>>();
  /** the holders of keys that wait on their clients (see `interruptible`) */
  private readonly waitingOnClients = new Map<string, WaitingOnClient>();
  /** the lock file of each key held by this instance now */
  private readonly held = new Map<string, string>();
  private readonly host = hostname();

  constructor(private readonly opts: SessionLocksOptions) {
    liveInstances.add(this.instance);
  }

  close(): void {
    liveInstances.delete(this.instance);
  }

  /**
   * Runs `fn` holding the lock of `key`, whose lock file is `lockPath`. `missing` is thrown
   * when the lock file cannot be created because its directory is gone.
   */
  async run<T>(key: string, lockPath: string, fn: () => Promise<T>): Promise<T> {
    const queued = this.chains.has(key);
    const prev = this.chains.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = prev.then(() => mine);
    this.chains.set(key, tail);
    if (queued) {
      // kept referenced: it is all that happens while the holder's client is silent
      const watch = setInterval(() => this.supersedeStalled(key), STALL_CHECK_MS);
      this.supersedeStalled(key);
      await prev.finally(() => clearInterval(watch));
    }
    try {
      await this.acquireFile(lockPath);
      this.held.set(key, lockPath);
      // Refresh the mtime so another host does not take a long append for a dead one.
      const refresh = setInterval(() => {
        const now = new Date();
        utimes(lockPath, now, now).catch(() => undefined);
      }, Math.max(1000, Math.floor(this.opts.staleMs / 4)));
      refresh.unref();
      try {
        return await fn();
      } finally {
        clearInterval(refresh);
        this.held.delete(key);
        await unlink(lockPath).catch(() => undefined);
      }
    } finally {
      release();
      if (this.chains.get(key) === tail) this.chains.delete(key);
    }
  }

  /**
   * While `work` runs (the holder of `key`, inside `run`, copying a chunk's body; it says when
   * it starts and stops waiting for the client's next bytes), a `run` for the same key queued
   * behind it calls `interrupt` once the client has sent nothing for STALL_MS, which should make
   * `work` fail. Without it a chunk whose client stalled holds the session until the idle
   * timeout cuts the connection, and the client's own retry waits behind it. Time spent on the
   * disk does not count: only waiting on the client does. A request waiting in another process
   * (its `.wanted` file fresh) counts as one queued here.
   */
  async interruptible<T>(key: string, interrupt: () => void, work: (awaitingClient: (waiting: boolean) => void) => Promise<T>): Promise<T> {
    const holder: WaitingOnClient = { interrupt, waitingSince: null };
    this.waitingOnClients.set(key, holder);
    const lockPath = this.held.get(key);
    const watch = lockPath === undefined ? undefined : setInterval(() => void this.supersedeStalledFor(key, lockPath), STALL_CHECK_MS);
    watch?.unref();
    try {
      return await work((waiting) => {
        holder.waitingSince = waiting ? (holder.waitingSince ?? monotonicMs()) : null;
      });
    } finally {
      clearInterval(watch);
      if (this.waitingOnClients.get(key) === holder) this.waitingOnClients.delete(key);
    }
  }

  /** `supersedeStalled`, for a request waiting in another process; looked for only once the holder's client is stalled. */
  private async supersedeStalledFor(key: string, lockPath: string): Promise<void> {
    const holder = this.waitingOnClients.get(key);
    if (holder?.waitingSince == null || monotonicMs() - holder.waitingSince < STALL_MS) return;
    const touched = await stat(wantedPath(lockPath)).then(
      (s) => s.mtimeMs,
      () => 0,
    );
    if (Date.now() - touched <= WANTED_FRESH_MS) this.supersedeStalled(key);
  }

  /**
   * A request waiting for `key` while its holder's client has sent nothing for STALL_MS: that
   * client has moved on (it retries after its connection died unnoticed), so the holder gives
   * way. A holder whose client keeps sending is waited for: requests stay in order.
   */
  private supersedeStalled(key: string): void {
    const holder = this.waitingOnClients.get(key);
    if (holder?.waitingSince != null && monotonicMs() - holder.waitingSince >= STALL_MS) {
      this.waitingOnClients.delete(key);
      holder.interrupt();
    }
  }

  /** Is the lock held now, by a live owner (a request of this process or of another)? */
  async isHeld(lockPath: string): Promise<boolean> {
    try {
      await stat(lockPath);
    } catch {
      return false;
    }
    return !(await this.isStale(lockPath));
  }

  private async acquireFile(lockPath: string): Promise<void> {
    const owner: LockOwner = { host: this.host, pidNamespace: PID_NAMESPACE, pid: process.pid, instance: this.instance };
    const deadline = monotonicMs() + this.opts.waitMs;
    let waited = false;
    try {
      for (let attempt = 0; ; attempt++) {
        if (await this.tryAcquireFile(lockPath, owner)) return;
        if (monotonicMs() >= deadline) {
          throw new VolregError('BLOB_UPLOAD_INVALID', 'upload session is busy with another request');
        }
        // tells a holder in another process that a request waits (see interruptible)
        waited = true;
        await writeFile(wantedPath(lockPath), '').catch(() => undefined);
        await sleep(Math.min(200, 10 * 2 ** Math.min(attempt, 4)));
      }
    } finally {
      if (waited) await unlink(wantedPath(lockPath)).catch(() => undefined);
    }
  }

  /** One attempt: true once the lock file is ours; a stale one is broken (and tried again). */
  private async tryAcquireFile(lockPath: string, owner: LockOwner): Promise<boolean> {
    for (;;) {
      try {
        const fh = await open(lockPath, 'wx');
        try {
          await fh.writeFile(JSON.stringify(owner));
        } catch (err) {
          // e.g. no space for the owner: a lock nobody holds must not stay behind
          await fh.close().catch(() => undefined);
          await unlink(lockPath).catch(() => undefined);
          throw err;
        }
        await fh.close();
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new VolregError('BLOB_UPLOAD_UNKNOWN');
        if (code !== 'EEXIST') throw err;
      }
      if (!(await this.isStale(lockPath))) return false;
      // Move it aside first: of several breakers only one rename succeeds on this name.
      const aside = `${lockPath}.stale-${randomUUID()}`;
      await rename(lockPath, aside).then(
        () => unlink(aside).catch(() => undefined),
        () => undefined,
      );
    }
  }

  private async isStale(lockPath: string): Promise<boolean> {
    let text: string;
    let mtimeMs: number;
    try {
      [text, mtimeMs] = await Promise.all([readFile(lockPath, 'utf8'), stat(lockPath).then((s) => s.mtimeMs)]);
    } catch {
      return false; // released meanwhile: just retry
    }
    const age = Date.now() - mtimeMs;
    let owner: LockOwner | null = null;
    try {
      const parsed = JSON.parse(text) as Partial<LockOwner>;
      if (typeof parsed.host === 'string' && typeof parsed.pid === 'number' && typeof parsed.instance === 'string') {
        owner = parsed as LockOwner;
      }
    } catch {
      owner = null;
    }
    // An unreadable lock is one whose creator died between creating and writing it.
    if (!owner) return age > 2000;
    // a pid is looked up only where it means something: same host, same pid namespace
    if (owner.host !== this.host || (owner.pidNamespace ?? PID_NAMESPACE) !== PID_NAMESPACE) return age > this.opts.staleMs;
    if (owner.pid === process.pid) return !liveInstances.has(owner.instance);
    return !processAlive(owner.pid);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
