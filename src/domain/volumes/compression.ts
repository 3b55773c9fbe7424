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
  if (startsWith(head, ZSTD_MAGIC)) return { kind: 'ok', compression: 'zstd' };
  if (isZstdSkippableMagic(head)) return { kind: 'ok', compression: 'zstd' };
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return { kind: 'unsupported', format: 'xz' };
  if (isBzip2(head)) return { kind: 'unsupported', format: 'bzip2' };
  if (startsWith(head, [0x04, 0x22, 0x4d, 0x18])) return { kind: 'unsupported', format: 'lz4' };
  if (startsWith(head, [0x50, 0x4b, 0x03, 0x04])) return { kind: 'unsupported', format: 'zip' };
  return { kind: 'ok', compression: 'none' };
}

/**
 * "BZh", the block size digit and the start of the first block's magic (or of the end-of-stream
 * magic of an empty stream). "BZh" alone is printable and may well start a tar's first file name.
 */
function isBzip2(head: Uint8Array): boolean {
  return (
    startsWith(head, [0x42, 0x5a, 0x68]) &&
    head.length >= 6 &&
    head[3]! >= 0x31 &&
    head[3]! <= 0x39 &&
    ((head[4] === 0x31 && head[5] === 0x41) || (head[4] === 0x17 && head[5] === 0x72))
  );
}

/** zstd frame magic (RFC 8878 3.1.1), little-endian 0xFD2FB528. */
export const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd] as const;

/** Whether `head` starts with the magic of a zstd skippable frame, 0x184D2A50..0x184D2A5F little-endian. */
export function isZstdSkippableMagic(head: Uint8Array): boolean {
  return head.length >= 4 && (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18;
}

/** What the decoder needs to know of a zstd frame header. */
export interface ZstdFrameHeader {
  /** bytes from the magic number to the first block header */
  size: number;
  /** the memory the frame asks the decoder to reserve: its window, or its whole content for a single-segment frame */
  window: number;
  /** whether a 4-byte content checksum follows the frame's last block */
  checksum: boolean;
  /** Frame_Content_Size: how many bytes the frame decodes to, when the header says */
  contentSize: number | null;
}

const DICT_ID_BYTES = [0, 1, 2, 4] as const;

/**
 * The length of a zstd frame header, magic number included, from its Frame_Header_Descriptor
 * (the byte after the magic number); null when the descriptor's reserved bit is set.
 */
export function zstdFrameHeaderSize(descriptor: number): number | null {
  if ((descriptor & 0x08) !== 0) return null;
  const windowDescriptorBytes = (descriptor & 0x20) !== 0 ? 0 : 1; // none for a single-segment frame
  return 5 + windowDescriptorBytes + DICT_ID_BYTES[descriptor & 3]! + frameContentSizeBytes(descriptor);
}

function frameContentSizeBytes(descriptor: number): number {
  const flag = descriptor >> 6;
  if (flag === 0) return (descriptor & 0x20) !== 0 ? 1 : 0;
  return 1 << flag;
}

/**
 * Reads a zstd frame header from its magic number on; null when `head` does not hold all of it
 * yet, is not a zstd frame or has the descriptor's reserved bit set.
 */
export function zstdFrameHeader(head: Uint8Array): ZstdFrameHeader | null {
  if (head.length < 5 || !startsWith(head, ZSTD_MAGIC)) return null;
  const fhd = head[4]!;
  const size = zstdFrameHeaderSize(fhd);
  if (size === null || head.length < size) return null;
  const checksum = (fhd & 0x04) !== 0;
  const fcsBytes = frameContentSizeBytes(fhd);
  let contentSize: number | null = null;
  if (fcsBytes > 0) {
    const at = size - fcsBytes;
    let value = 0;
    for (let i = fcsBytes - 1; i >= 0; i--) value = value * 256 + head[at + i]!;
    contentSize = fcsBytes === 2 ? value + 256 : value;
  }
  if ((fhd & 0x20) === 0) {
    const wd = head[5]!;
    const base = 2 ** ((wd >> 3) + 10);
    return { size, window: base + (base / 8) * (wd & 7), checksum, contentSize };
  }
  // a single-segment frame always gives its content size, and its window is that size
  return { size, window: contentSize!, checksum, contentSize };
}
