import type { Readable } from 'node:stream';

/**
 * Reads a stream whole when it holds at most `max` bytes; null (and the stream destroyed)
 * as soon as it holds more, so a small document read into memory never takes more than that.
 */
export async function readCapped(stream: Readable, max: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > max) {
      stream.destroy();
      return null;
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}
