import type { FileHandle } from 'node:fs/promises';
import type { BlobReader } from './blob-store.ts';

/** A byte range of an open file, read in order into the caller's buffers (fs-driver.ts). */
export class FileRangeReader implements BlobReader {
  private position: number;
  private left: number;
  private closing: Promise<void> | null = null;

  constructor(
    private readonly fh: FileHandle,
    start: number,
    readonly length: number,
  ) {
    this.position = start;
    this.left = length;
  }

  async readInto(buf: Buffer): Promise<number> {
    if (this.left === 0 || buf.length === 0) return 0;
    const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, this.left), this.position);
    // a committed blob never shrinks: a short file is damage, never a quiet end
    if (bytesRead === 0) throw new Error(`blob file ended ${this.left} bytes early`);
    this.position += bytesRead;
    this.left -= bytesRead;
    return bytesRead;
  }

  close(): Promise<void> {
    return (this.closing ??= this.fh.close());
  }
}
