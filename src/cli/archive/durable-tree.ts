import { close, closeSync, constants, fsync, openSync } from 'node:fs';
import { opendir } from 'node:fs/promises';
import { DirChain, fdPath, isNotADirectory } from './dir-fd.ts';

/**
 * A pull says it restored a tree only once the tree is on the disk: write(2) only fills the
 * page cache, and a disk that fails to write it back later (EIO, a volume lost) is heard of by
 * fsync alone; without it the pull would report success, the old contents would be removed, and
 * the restore could vanish with the next crash or eviction.
 *
 * Each extracted file is synced through the descriptor it was written with (a read-only mode
 * set from the archive cannot stop it), several at once so the filesystem can group them into
 * few journal commits, and every directory of the tree once it is complete (its entries). The
 * syncs take the thread pool; the extraction's own steps run on the main thread meanwhile
 * (safe-extract.ts), not queued behind them.
 */
const SYNCS_IN_FLIGHT = 16;

export class FileSyncs {
  private readonly running = new Set<Promise<void>>();
  private failure: { err: unknown } | null = null;

  /** Syncs and closes the descriptor `fd` (now owned here); waits while too many are in flight. */
  async add(fd: number): Promise<void> {
    const sync = new Promise<void>((resolve) => {
      fsync(fd, (err) => {
        if (err) this.failure ??= { err };
        close(fd, () => resolve());
      });
    });
    const tracked: Promise<void> = sync.finally(() => this.running.delete(tracked));
    this.running.add(tracked);
    if (this.failure) throw this.failure.err;
    if (this.running.size >= SYNCS_IN_FLIGHT) await Promise.race(this.running);
  }

  /** Waits for every sync started; throws the first failure. */
  async settle(): Promise<void> {
    await Promise.all(this.running);
    if (this.failure) throw this.failure.err;
  }
}

/**
 * Syncs every directory of the tree at `root` (a path the volume's writers can not change, or
 * an fdPath), the root included, as the walk finds them, up to SYNCS_IN_FLIGHT at once; throws
 * the first failure. The walk goes by descriptor (dir-fd.ts, DirChain), so a path past PATH_MAX
 * is synced as any other, and a directory swapped for a symlink meanwhile is not followed (nor
 * synced: it is no longer one this pull made). It holds DirChain's few descriptors and, for each
 * level above it, the names of the subdirectories still to visit there: no list of them all.
 */
export async function syncDirectories(root: string): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { err: unknown } | null = null;
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  const chain = new DirChain(rootFd);
  /** for each level of the chain and the root, its subdirectories not visited yet */
  const pending: Buffer[][] = [];
  const visit = async (): Promise<void> => {
    // a descriptor of its own: the chain may close its one before the sync runs in the thread pool
    const fd = openSync(fdPath(chain.fd()), constants.O_RDONLY | constants.O_DIRECTORY);
    const sync: Promise<void> = new Promise<void>((resolve) => {
      fsync(fd, (err) => {
        if (err) failure ??= { err };
        close(fd, () => resolve());
      });
    }).finally(() => running.delete(sync));
    running.add(sync);
    if (running.size >= SYNCS_IN_FLIGHT) await Promise.race(running);
    if (failure) throw failure.err;
    pending.push(await subdirectories(chain.fd()));
  };
  try {
    await visit();
    while (pending.length > 0) {
      const next = pending[pending.length - 1]!.pop();
      if (next === undefined) {
        pending.pop();
        if (chain.depth > 0) chain.leave();
        continue;
      }
      try {
        chain.enter(next);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || isNotADirectory(err)) continue; // changed since it was listed
        throw err;
      }
      await visit();
    }
  } finally {
    chain.close();
    closeSync(rootFd);
    await Promise.all(running);
  }
  if (failure) throw (failure as { err: unknown }).err;
}

/** The names of the subdirectories of the directory held by `fd`, as bytes (a volume's names need not be UTF-8). */
async function subdirectories(fd: number): Promise<Buffer[]> {
  const names: Buffer[] = [];
  // 'buffer' works as for readdir; the type admits only text encodings
  for await (const entry of await opendir(fdPath(fd), { encoding: 'buffer' as BufferEncoding })) {
    if (entry.isDirectory()) names.push(entry.name as unknown as Buffer);
  }
  return names;
}
