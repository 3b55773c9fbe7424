import { Decompress } from 'fzstd';
import xxhash from 'xxhash-wasm';
import type { ZstdFrameEnd } from './zstd-blocks.ts';

type XXHash = Awaited<ReturnType<typeof xxhash>>;
let loading: Promise<XXHash> | null = null;

/** The XXH64 implementation (WebAssembly, compiled once per thread). */
export function loadXxhash(): Promise<XXHash> {
  return (loading ??= xxhash());
}

/**
 * Decodes one zstd frame, or one skippable frame, with fzstd, and checks what fzstd does not:
 * that the content hashes to the frame's Content_Checksum (the low 32 bits of its XXH64) and
 * is as long as its Frame_Content_Size. Without this a flipped bit in a compressed block
 * decodes to wrong bytes without a word, and a snapshot would be accepted, verified and
 * restored corrupt.
 *
 * A decoder per frame, so that the output of each frame is known to be that frame's: one fzstd
 * decoder across frames holds back the start of a frame until 18 bytes are in, and a small
 * frame's output then comes out with the next frame's.
 */
export class ZstdFrameDecoder {
  private readonly out: Uint8Array[] = [];
  private readonly hash: ReturnType<XXHash['create64']>;
  private size = 0;
  private readonly decoder = new Decompress((chunk) => {
    if (chunk.length === 0) return;
    this.hash.update(chunk);
    this.size += chunk.length;
    this.out.push(chunk);
  });

  constructor(xxh: XXHash) {
    this.hash = xxh.create64(0n);
  }

  /** What the bytes decode to so far. */
  push(bytes: Uint8Array): Uint8Array[] {
    this.decoder.push(bytes);
    return this.out.splice(0);
  }

  /**
   * The frame's bytes are all in: the rest of its content. Throws when the frame is cut short
   * (then `end` is null: the input ended inside it) or its content does not match `end`.
   */
  finish(end: ZstdFrameEnd | null): Uint8Array[] {
    this.decoder.push(new Uint8Array(0), true);
    const rest = this.out.splice(0);
    if (end?.frameEnd === 'frame') {
      if (end.contentSize !== null && end.contentSize !== this.size) {
        throw new Error(`zstd frame decodes to ${this.size} bytes, its header says ${end.contentSize} (corrupt data)`);
      }
      if (end.checksum !== null && Number(this.hash.digest() & 0xffffffffn) !== end.checksum) {
        throw new Error('zstd frame content does not match its checksum (corrupt data)');
      }
    }
    return rest;
  }
}
