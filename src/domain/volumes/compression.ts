import type { Compression } from './media-types.ts';

/** How many leading bytes `detectCompression` wants to see (fewer only at end of input). */
export const MAGIC_BYTES = 6;

export type Detected = { kind: 'ok'; compression: Compression } | { kind: 'unsupported'; format: string };

const startsWith = (head: Uint8Array, magic: readonly number[]): boolean =>
  head.length >= magic.length && magic.every((b, i) => head[i] === b);

/**
 * Tells the compression of an archive by its magic number, never by a header the client sent.
 * Anything that is not gzip or zstd is taken as a plain tar (the tar parser then decides);
 * compressions we recognise but do not decode are refused by name so the error is useful.
 */
export function detectCompression(head: Uint8Array): Detected {
  if (startsWith(head, [0x1f, 0x8b])) return { kind: 'ok', compression: 'gzip' };
  if (startsWith(head, [0x28, 0xb5, 0x2f, 0xfd])) return { kind: 'ok', compression: 'zstd' };
  // zstd skippable frame: 0x184D2A50..0x184D2A5F little-endian
  if (head.length >= 4 && (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18) {
    return { kind: 'ok', compression: 'zstd' };
  }
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return { kind: 'unsupported', format: 'xz' };
  if (startsWith(head, [0x42, 0x5a, 0x68])) return { kind: 'unsupported', format: 'bzip2' };
  if (startsWith(head, [0x04, 0x22, 0x4d, 0x18])) return { kind: 'unsupported', format: 'lz4' };
  if (startsWith(head, [0x50, 0x4b, 0x03, 0x04])) return { kind: 'unsupported', format: 'zip' };
  return { kind: 'ok', compression: 'none' };
}

/** zstd frame magic, for the window-size guard of the decoder. */
export const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd] as const;

/**
 * The memory a zstd frame asks the decoder to reserve (its window, or its whole content for a
 * single-segment frame), read from the frame header; null when the header is not complete yet.
 */
export function zstdFrameWindow(head: Uint8Array): number | null {
  if (head.length < 6 || !startsWith(head, ZSTD_MAGIC)) return null;
  const fhd = head[4]!;
  const singleSegment = (fhd & 0x20) !== 0;
  if (!singleSegment) {
    const wd = head[5]!;
    const base = 2 ** ((wd >> 3) + 10);
    return base + (base / 8) * (wd & 7);
  }
  const dictIdBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsFlag = fhd >> 6;
  const fcsBytes = [1, 2, 4, 8][fcsFlag]!;
  const at = 5 + dictIdBytes;
  if (head.length < at + fcsBytes) return null;
  let size = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) size = size * 256 + head[at + i]!;
  return fcsBytes === 2 ? size + 256 : size;
}
