import { close, fsync } from 'node:fs';
import { opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../../storage/fs-ops.ts';

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
 * Syncs every directory of the tree at `root`, the root included, as the walk finds them (a list
 * of them all would grow with the tree), up to SYNCS_IN_FLIGHT at once; throws the first failure.
 */
export async function syncDirectories(root: string): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { err: unknown } | null = null;
  const walk = async (dir: string): Promise<void> => {
    const sync: Promise<void> = fsyncDir(dir).then(
      () => void running.delete(sync),
      (err: unknown) => {
        failure ??= { err };
        running.delete(sync);
      },
    );
    running.add(sync);
    if (running.size >= SYNCS_IN_FLIGHT) await Promise.race(running);
    if (failure) throw failure.err;
    for await (const entry of await opendir(dir)) if (entry.isDirectory()) await walk(join(dir, entry.name));
  };
  try {
    await walk(root);
  } finally {
    await Promise.all(running);
  }
  if (failure) throw (failure as { err: unknown }).err;
}
