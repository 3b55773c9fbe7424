import { statfs } from 'node:fs/promises';
import { VolregError } from '../domain/errors.ts';

/**
 * A reserve of free space on the filesystem holding the blobs. Uploads are refused
 * (STORAGE_FULL) before they would leave less than the reserve free, so what shares the disk
 * and must keep working when uploads fill it (the embedded engine's journal, upload state and
 * lock files, deletes and garbage collection, which free space) always has room.
 *
 * A stream of unknown length is checked every CHECK_EVERY_BYTES, so concurrent uploads can
 * overshoot the line by about that much each; the reserve should cover it.
 */
const CHECK_EVERY_BYTES = 8 * 1024 * 1024;

/** Bytes an unprivileged writer can still use on the filesystem holding `path`. */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return Number(s.bavail) * Number(s.bsize);
}

export class FreeSpace {
  constructor(
    private readonly path: string,
    /** bytes that must stay free; 0 turns the checks off */
    private readonly reserveBytes: number,
    private readonly measure: (path: string) => Promise<number> = freeBytes,
  ) {}

  /** Throws STORAGE_FULL unless `incoming` more bytes still leave the reserve free. */
  async ensure(incoming: number): Promise<void> {
    if (this.reserveBytes === 0) return;
    const free = await this.measure(this.path);
    if (free - incoming < this.reserveBytes) {
      throw new VolregError(
        'STORAGE_FULL',
        // the size asked for is named: without it "N bytes free, M kept in reserve" with N > M reads as no reason at all
        `not enough free space${incoming > 0 ? ` for ${incoming} more bytes` : ''}: ${free} bytes free, ${this.reserveBytes} kept in reserve`,
        { freeBytes: free, reserveBytes: this.reserveBytes, ...(incoming > 0 ? { incomingBytes: incoming } : {}) },
      );
    }
  }

  /** For a stream: call before writing each batch of `n` bytes; checks every few MiB. */
  meter(): (n: number) => Promise<void> {
    let unchecked = 0;
    return async (n) => {
      unchecked += n;
      if (unchecked < CHECK_EVERY_BYTES) return;
      unchecked = 0;
      await this.ensure(0);
    };
  }
}
