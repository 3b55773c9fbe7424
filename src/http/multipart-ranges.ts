import { randomBytes } from 'node:crypto';
import { contentRange, type ByteRange } from '../domain/byte-range.ts';
import type { BlobReader } from '../storage/blob-store.ts';
import type { Piece } from './send-blob.ts';

/** A multipart/byteranges reply (RFC 9110 §14.6): its Content-Type, length and pieces for sendPieces. */
export interface MultipartRanges {
  contentType: string;
  length: number;
  pieces: Piece[];
  /** the most bytes one part holds */
  longest: number;
}

/**
 * The body of a 206 for several ranges of a blob of `size` bytes, each part with its
 * Content-Type and Content-Range, its bytes read by a reader `open` gives when its turn comes.
 */
export function multipartRanges(ranges: readonly ByteRange[], size: number, partType: string, open: (range: ByteRange) => Promise<BlobReader>): MultipartRanges {
  // random, so it can not occur in the blob by a client's choosing
  const boundary = randomBytes(16).toString('hex');
  const pieces: Piece[] = [];
  let length = 0;
  let longest = 0;
  const own = (text: string): void => {
    const b = Buffer.from(text, 'latin1');
    pieces.push(b);
    length += b.length;
  };
  ranges.forEach((r, i) => {
    own(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${partType}\r\nContent-Range: ${contentRange(r, size)}\r\n\r\n`);
    pieces.push(() => open(r));
    const n = r.end - r.start + 1;
    length += n;
    longest = Math.max(longest, n);
  });
  own(`\r\n--${boundary}--\r\n`);
  return { contentType: `multipart/byteranges; boundary=${boundary}`, length, pieces, longest };
}
