import { ftruncateSync } from 'node:fs';
import { writeFullySync } from './write-fully.ts';

/**
 * Writes a restored file's bytes in order, leaving every aligned block of zeros as a hole
 * (skipped over, never written), as `cp --sparse=always` does: a sparse file (a VM image, a
 * database's preallocated extent) was archived with its holes as zeros, and writing them back
 * could need far more room than the original took. What reads back is the same bytes either way.
 *
 * Chunks come in any size and at any offset (gunzip's pieces, cut where a tar header ended), so
 * the bytes of a block not yet whole are carried to the next chunk. `end` writes what is left
 * and sets the file's length, which a trailing hole would otherwise leave short.
 */
export class SparseWriter {
  /** where the carried bytes go: every block before it is written or a hole */
  private flushed = 0;
  /** the start of a block not yet whole (fewer than HOLE_BLOCK_BYTES bytes) */
  private carry: Buffer = Buffer.alloc(0);

  constructor(private readonly fd: number) {}

  write(chunk: Uint8Array): void {
    let at = 0;
    if (this.carry.length > 0) {
      at = Math.min(HOLE_BLOCK_BYTES - this.carry.length, chunk.length);
      this.carry = Buffer.concat([this.carry, chunk.subarray(0, at)]);
      if (this.carry.length < HOLE_BLOCK_BYTES) return;
      if (!isZero(this.carry, 0, HOLE_BLOCK_BYTES)) this.writeAt(this.carry, 0, HOLE_BLOCK_BYTES, this.flushed);
      this.flushed += HOLE_BLOCK_BYTES;
    }
    const base = this.flushed - at; // the file offset of chunk[0]
    const whole = at + Math.floor((chunk.length - at) / HOLE_BLOCK_BYTES) * HOLE_BLOCK_BYTES;
    let run = at; // the start of the blocks with data not yet written
    for (let b = at; b < whole; b += HOLE_BLOCK_BYTES) {
      if (!isZero(chunk, b, b + HOLE_BLOCK_BYTES)) continue;
      this.writeAt(chunk, run, b, base + run);
      run = b + HOLE_BLOCK_BYTES;
    }
    this.writeAt(chunk, run, whole, base + run);
    this.flushed = base + whole;
    this.carry = Buffer.from(chunk.subarray(whole)); // a copy: the caller may reuse its chunk
  }

  /** Writes the last carried bytes; the file's length is every byte given, holes at its end included. */
  end(): void {
    const n = this.carry.length;
    if (n > 0 && !isZero(this.carry, 0, n)) this.writeAt(this.carry, 0, n, this.flushed);
    ftruncateSync(this.fd, this.flushed + n);
  }

  private writeAt(data: Uint8Array, from: number, to: number, position: number): void {
    writeFullySync(this.fd, data, from, to, position);
  }
}

/** The filesystem block most Linux filesystems allocate by, so a skipped block is one not allocated. */
const HOLE_BLOCK_BYTES = 4096;
const ZEROS = new Uint8Array(HOLE_BLOCK_BYTES);

function isZero(data: Uint8Array, from: number, to: number): boolean {
  // Buffer.compare is memcmp: it stops at the first byte that is not zero, so data costs little
  return Buffer.compare(data.subarray(from, to), ZEROS.subarray(0, to - from)) === 0;
}
