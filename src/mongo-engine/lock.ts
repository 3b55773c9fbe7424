import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * Exclusive ownership of a dbPath. A process holds the lock by listening on unix sockets
 * (`dbPath/engine.lock.sock`, and on Linux abstract ones: lockAddresses); the kernel closes
 * them when the process dies, however it dies.
 * A newcomer first tries to connect: success means a live owner (refuse); ECONNREFUSED means
 * a stale socket file from a dead owner (remove it and take over). A short-lived O_EXCL
 * guard file serialises the remove-and-bind step between two newcomers racing for a stale lock;
 * one left by a process killed while holding it is broken (see staleGuard).
 */

export class DbPathLockedError extends Error {
  constructor(dbPath: string) {
    super(`dbPath ${dbPath} is already in use by another running volreg process (volreg serve with its embedded database, or volreg db; its lock socket accepts connections); stop that process first`);
    this.name = 'DbPathLockedError';
  }
}

const LOCK_NAME = 'engine.lock.sock';
const GUARD_NAME = 'engine.lock.guard';
const GUARD_STALE_MS = 10_000;

export interface DbPathLock {
  release(): Promise<void>;
}

function probe(sockPath: string): Promise<'alive' | 'stale' | 'absent'> {
  return new Promise((resolve) => {
    const s = net.connect(sockPath);
    s.once('connect', () => {
      s.destroy();
      resolve('alive');
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      resolve(err.code === 'ENOENT' ? 'absent' : 'stale');
    });
  });
}

function listen(server: net.Server, sockPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Whether a process of this pid runs here (EPERM: it does, as another user). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Who writes a guard: host, pid namespace and pid. Containers can share a host name (host
 * networking, a fixed hostname) and not their pids, so a pid is only looked up in its own
 * namespace.
 */
function guardOwner(): string {
  let namespace = '-';
  try {
    namespace = fs.readlinkSync('/proc/self/ns/pid'); // pid:[4026531836]
  } catch {
    // no /proc (not Linux): one namespace
  }
  return `${os.hostname()} ${namespace} ${process.pid}`;
}

/**
 * A guard left by a process that died holding it (killed in the milliseconds it does): its
 * owner, named in it, no longer runs in this host's pid namespace; or, whoever wrote it, it is
 * older than GUARD_STALE_MS (an owner elsewhere is not looked up).
 */
function staleGuard(guard: string): boolean {
  const age = Date.now() - fs.statSync(guard).mtimeMs;
  if (age > GUARD_STALE_MS) return true;
  const [host, namespace, pid] = fs.readFileSync(guard, 'utf8').split(' ');
  const [ourHost, ourNamespace] = guardOwner().split(' ');
  return host === ourHost && namespace === ourNamespace && Number.isInteger(Number(pid)) && Number(pid) > 0 && !running(Number(pid));
}

async function withGuard<T>(dbPath: string, fn: () => Promise<T>): Promise<T> {
  const guard = path.join(dbPath, GUARD_NAME);
  // longer than a guard takes to go stale: a newcomer never gives up on one a crash left
  const deadline = performance.now() + GUARD_STALE_MS + 5000;
  for (;;) {
    try {
      fs.writeFileSync(guard, guardOwner(), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (staleGuard(guard)) fs.rmSync(guard, { force: true });
      } catch {
        // vanished meanwhile (or half written): retry
      }
      if (performance.now() > deadline) throw new Error(`could not acquire ${guard}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(guard, { force: true });
  }
}

/**
 * Where the lock is held. `dbPath/engine.lock.sock` (its file is what another process sees, in any
 * container sharing the directory); unix socket paths are limited to ~107 bytes, so for a deeper
 * dbPath on Linux an abstract socket named after the directory's real path takes its place. On
 * Linux also an abstract socket named after the directory itself (device and inode): no file
 * stands for it, so a tmp cleaner or an operator removing socket files cannot remove the lock.
 */
function lockAddresses(dbPath: string): Array<{ address: string; abstract: boolean }> {
  const file = path.join(dbPath, LOCK_NAME);
  if (process.platform !== 'linux') return [{ address: file, abstract: false }];
  const { dev, ino } = fs.statSync(dbPath);
  const byInode = { address: `\0volreg-engine-lock-dev${dev}-ino${ino}`, abstract: true };
  if (Buffer.byteLength(file) <= 100) return [{ address: file, abstract: false }, byInode];
  const digest = createHash('sha256').update(fs.realpathSync(dbPath)).digest('hex');
  return [{ address: `\0volreg-engine-lock-${digest}`, abstract: true }, byInode];
}

export async function acquireDbPathLock(dbPath: string): Promise<DbPathLock> {
  const servers: net.Server[] = [];
  const closeAll = (): Promise<void> => Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))).then(() => undefined);
  await withGuard(dbPath, async () => {
    const addresses = lockAddresses(dbPath);
    for (const { address } of addresses) if ((await probe(address)) === 'alive') throw new DbPathLockedError(dbPath);
    try {
      for (const { address, abstract } of addresses) {
        if (!abstract) fs.rmSync(address, { force: true }); // not alive: a dead owner's file, if any
        const server = net.createServer((conn) => conn.destroy());
        await listen(server, address);
        servers.push(server);
      }
    } catch (err) {
      await closeAll();
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new DbPathLockedError(dbPath);
      throw err;
    }
  });
  for (const server of servers) server.unref();
  return { release: closeAll };
}
