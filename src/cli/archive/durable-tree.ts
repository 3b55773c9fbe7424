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
 * the first failure.
 */
export async function syncDirectories(root: string): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { err: unknown } | null = null;
  try {
    await eachDirectory(root, async (dirFd) => {
      // a descriptor of its own: the walk may close its one before the sync runs in the thread pool
      const fd = openSync(fdPath(dirFd), constants.O_RDONLY | constants.O_DIRECTORY);
      const sync: Promise<void> = new Promise<void>((resolve) => {
        fsync(fd, (err) => {
          if (err) failure ??= { err };
          close(fd, () => resolve());
        });
      }).finally(() => running.delete(sync));
      running.add(sync);
      if (running.size >= SYNCS_IN_FLIGHT) await Promise.race(running);
      if (failure) throw failure.err;
    });
  } finally {
    await Promise.all(running);
  }
  if (failure) throw (failure as { err: unknown }).err;
}

/** How many subdirectory names of one directory a walk holds at once: a directory may have millions. */
const NAMES_PER_LISTING = 1024;

/** Part of a directory's listing: the subdirectories of its entries from `skip` on, up to a bound. */
interface Listing {
  /** subdirectories not visited yet */
  names: Buffer[];
  /** entries of the directory read so far, its listings before this one included */
  read: number;
  /** the directory was read to its end */
  ended: boolean;
}

/**
 * Calls `visit` with a descriptor of each directory of the tree at `root`, the root included,
 * each before what it holds. The walk goes by descriptor (dir-fd.ts, DirChain), so a path past
 * PATH_MAX is reached as any other, and a directory swapped for a symlink meanwhile is not
 * followed (nor visited: it is no longer one this pull made). It holds DirChain's few descriptors
 * and, for each level above it, at most `namesPerListing` names: a directory with more is listed
 * again from where the last listing stopped (readdir's order holds for a directory nobody
 * changes; one a container of the volume changes meanwhile may have an entry visited twice or
 * not at all, as it may have anything of its own in the staged tree).
 */
export async function eachDirectory(root: string, visit: (fd: number) => Promise<void>, namesPerListing = NAMES_PER_LISTING): Promise<void> {
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  const chain = new DirChain(rootFd);
  /** for the root and each level of the chain, the part of its listing being walked */
  const pending: Listing[] = [];
  try {
    await visit(chain.fd());
    pending.push(await subdirectories(chain.fd(), 0, namesPerListing));
    while (pending.length > 0) {
      const top = pending[pending.length - 1]!;
      const next = top.names.pop();
      if (next === undefined) {
        if (!top.ended) {
          pending[pending.length - 1] = await subdirectories(chain.fd(), top.read, namesPerListing);
          continue;
        }
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
      await visit(chain.fd());
      pending.push(await subdirectories(chain.fd(), 0, namesPerListing));
    }
  } finally {
    chain.close();
    closeSync(rootFd);
  }
}

/**
 * The subdirectories among the entries of the directory held by `fd` from entry `skip` on, as
 * bytes (a volume's names need not be UTF-8), until `max` of them are found.
 */
async function subdirectories(fd: number, skip: number, max: number): Promise<Listing> {
  const names: Buffer[] = [];
  let read = 0;
  // 'buffer' works as for readdir; the type admits only text encodings. Leaving the loop closes the listing.
  for await (const entry of await opendir(fdPath(fd), { encoding: 'buffer' as BufferEncoding })) {
    if (read++ < skip) continue;
    if (entry.isDirectory()) names.push(entry.name as unknown as Buffer);
    if (names.length >= max) return { names, read, ended: false };
  }
  return { names, read, ended: true };
}
