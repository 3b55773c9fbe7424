import { isZstdSkippableMagic, ZSTD_MAGIC, zstdFrameHeader, zstdFrameHeaderSize, type ZstdFrameHeader } from './compression.ts';

export interface ZstdCutOptions {
  /** cut after the block that brings the output announced since the last cut to this many bytes */
  maxOutputPerPiece: number;
  /** and after this many blocks, whatever they announce (each costs the decoder a pass over its window) */
  maxBlocksPerPiece?: number;
  /** sees each frame header before any byte of it is handed out; may throw to stop the stream */
  onFrameHeader?: (header: ZstdFrameHeader) => void;
}

/**
 * Where a frame ended among the pieces `cut` hands out: the pieces since the previous mark (or
 * the start) are all of that frame's bytes, and none of the next one's.
 */
export interface ZstdFrameEnd {
  readonly frameEnd: 'frame' | 'skippable';
  /** the frame's Content_Checksum (the low 32 bits of its content's XXH64), when it has one */
  readonly checksum: number | null;
  /** the frame's Frame_Content_Size, when its header gives one */
  readonly contentSize: number | null;
}

/** Block_Maximum_Size (RFC 8878): no block decodes to more; fzstd enforces it for compressed blocks only. */
export const ZSTD_BLOCK_MAXIMUM_SIZE = 128 * 1024;
const BLOCK_HEADER_BYTES = 3;
const CHECKSUM_BYTES = 4;
const MAGIC_NUMBER_BYTES = 4;
const SKIPPABLE_HEADER_BYTES = 8;
const MAX_FRAME_HEADER_BYTES = 18;

// Block_Type values; 3 is reserved
const RAW_BLOCK = 0;
const RLE_BLOCK = 1;
const COMPRESSED_BLOCK = 2;

type State =
  /** reading a magic number (held back) */
  | 'magic'
  /** reading the rest of a zstd frame header (held back) */
  | 'frameHeader'
  /** reading the 4-byte size of a skippable frame */
  | 'skippableSize'
  | 'blockHeader'
  /** skipping `remaining` bytes: a block's content or a skippable frame's data */
  | 'skip'
  /** reading a frame's 4-byte content checksum (handed out as it comes, not held back) */
  | 'checksum'
  /** not understood: everything from here goes through as it is */
  | 'passThrough';

/**
 * Cuts a zstd stream at block boundaries, so that what one push to the decoder can expand to
 * is bounded.
 *
 * Why: fzstd's streaming `Decompress` decodes every complete block of what it is pushed and
 * hands all of the output out before the push returns; nothing in between can wait for the
 * reader. Input length says nothing about output length: an RLE block is 4 bytes and expands
 * to 128 KiB, so a 64 KiB slice of them is 2 GiB in one push (a decompression bomb). Cutting
 * the bytes into small slices does not help much (4 bytes can still be 128 KiB) and costs a
 * call per slice; cutting where blocks end does. Each block's 3-byte header tells how much it
 * can decode to (a compressed block at most Block_Maximum_Size, 128 KiB; a raw or RLE block
 * its Block_Size, which fzstd does not cap at 128 KiB, so it is counted as announced), and a
 * piece ends after the block that brings the total since the last piece to
 * `maxOutputPerPiece`, or after `maxBlocksPerPiece` blocks: fzstd moves its whole window after
 * every block, so a piece of many tiny blocks costs time, not memory. The decoder yields what a
 * piece decoded to before it pushes the next.
 * (fzstd waits for 18 bytes at the start of a frame, so the few blocks of a piece that ends
 * that early decode with the next piece.)
 *
 * It is a small incremental reader of the frame format (RFC 8878): frames (magic number,
 * header, blocks, optional checksum) and skippable frames, one after another. A piece never
 * holds bytes of two frames: after a frame's last byte comes a ZstdFrameEnd with what its
 * content must match (fzstd checks neither the checksum nor the content size). It works across
 * chunk boundaries, copies only header bytes (at most 18) and hands out subarrays of the chunks
 * it is given. It validates nothing: on anything it does not understand (an unknown magic
 * number, the descriptor's reserved bit, the reserved block type) it stops cutting and passes
 * the rest through unchanged, for the decoder to refuse as corrupt as it would without it.
 *
 * A frame header is held back until it is complete and `onFrameHeader` has seen it, so a frame
 * asking for too much memory can be refused before the decoder reserves its window.
 */
export class ZstdBlockCutter {
  private readonly maxOutput: number;
  private readonly onFrameHeader: (header: ZstdFrameHeader) => void;
  private state: State = 'magic';
  /** the bytes of the header being read */
  private readonly header = new Uint8Array(MAX_FRAME_HEADER_BYTES);
  private headerLength = 0;
  /** how many header bytes the current state needs */
  private need = MAGIC_NUMBER_BYTES;
  private remaining = 0;
  /** what the skipped bytes are: the content of a block or a skippable frame */
  private skipping: 'block' | 'skippable' = 'block';
  private blockOutput = 0;
  private lastBlock = false;
  /** the header of the frame being read */
  private frame: ZstdFrameHeader | null = null;
  /** a frame that just ended, to be marked once its last piece is out */
  private ended: ZstdFrameEnd | null = null;
  /** output announced by the blocks that ended since the last piece was handed out */
  private announced = 0;
  private readonly maxBlocks: number;
  /** blocks that ended since the last piece was handed out */
  private blocks = 0;

  constructor(opts: ZstdCutOptions) {
    this.maxOutput = opts.maxOutputPerPiece;
    this.maxBlocks = opts.maxBlocksPerPiece ?? Infinity;
    this.onFrameHeader = opts.onFrameHeader ?? (() => undefined);
  }

  /** The pieces of `chunk` that can go to the decoder now, in order; bytes held back come later. */
  *cut(chunk: Uint8Array): Generator<Uint8Array | ZstdFrameEnd> {
    const n = chunk.length;
    let start = 0; // first byte of `chunk` not handed out yet
    let pos = 0;
    // where in `chunk` the header held back starts; -1: in an earlier chunk (its bytes are all in `header`)
    let heldFrom = this.holding() && this.headerLength > 0 ? -1 : 0;
    for (;;) {
      if (this.state === 'skip') {
        const k = Math.min(this.remaining, n - pos);
        pos += k;
        this.remaining -= k;
        if (this.remaining > 0) break;
        const cutHere = this.skipping === 'skippable' ? this.skippableEnded() : this.blockEnded();
        if ((cutHere || this.ended) && pos > start) {
          yield chunk.subarray(start, pos);
          start = pos;
          this.announced = 0;
          this.blocks = 0;
        }
        if (this.ended) yield this.takeEnded();
        continue;
      }
      if (this.holding() && this.headerLength === 0) heldFrom = pos;
      if (pos >= n) break;
      if (this.state === 'passThrough') {
        pos = n;
        break;
      }
      const k = Math.min(this.need - this.headerLength, n - pos);
      this.header.set(chunk.subarray(pos, pos + k), this.headerLength);
      this.headerLength += k;
      pos += k;
      if (this.headerLength < this.need) break;
      const held = this.holding() ? this.headerLength : 0;
      this.headerRead();
      if (held > 0 && !this.holding() && heldFrom < 0) {
        // the header held back is read (or is no frame header after all); what of it is not in `chunk` goes first
        yield this.header.slice(0, held);
        start = pos;
      }
      if (this.ended) {
        // a checksum was read: the frame is over
        if (pos > start) yield chunk.subarray(start, pos);
        start = pos;
        this.announced = 0;
        this.blocks = 0;
        yield this.takeEnded();
      }
    }
    const releaseTo = !this.holding() ? n : heldFrom >= 0 ? heldFrom : start;
    if (releaseTo > start) {
      yield chunk.subarray(start, releaseTo);
      this.announced = 0;
      this.blocks = 0;
    }
  }

  /** What is still held back at the end of the input (an incomplete frame header), for the decoder to refuse. */
  *end(): Generator<Uint8Array> {
    if (this.holding() && this.headerLength > 0) yield this.header.slice(0, this.headerLength);
    this.state = 'passThrough';
  }

  private holding(): boolean {
    return this.state === 'magic' || this.state === 'frameHeader';
  }

  private startFrame(): void {
    this.state = 'magic';
    this.headerLength = 0;
    this.need = MAGIC_NUMBER_BYTES;
  }

  /** `need` header bytes are in: move on. */
  private headerRead(): void {
    const h = this.header;
    switch (this.state) {
      case 'magic':
        if (h[0] === ZSTD_MAGIC[0] && h[1] === ZSTD_MAGIC[1] && h[2] === ZSTD_MAGIC[2] && h[3] === ZSTD_MAGIC[3]) {
          this.state = 'frameHeader';
          this.need = MAGIC_NUMBER_BYTES + 1;
        } else if (isZstdSkippableMagic(h)) {
          this.state = 'skippableSize';
          this.need = SKIPPABLE_HEADER_BYTES;
        } else {
          this.state = 'passThrough';
        }
        return;
      case 'frameHeader': {
        if (this.need === MAGIC_NUMBER_BYTES + 1) {
          const size = zstdFrameHeaderSize(h[MAGIC_NUMBER_BYTES]!);
          if (size === null) {
            this.state = 'passThrough';
            return;
          }
          this.need = size;
          if (this.headerLength < size) return;
        }
        const frame = zstdFrameHeader(h.subarray(0, this.headerLength))!;
        this.onFrameHeader(frame);
        this.frame = frame;
        this.readBlockHeaderNext();
        return;
      }
      case 'skippableSize':
        this.state = 'skip';
        this.skipping = 'skippable';
        this.remaining = (h[4]! | (h[5]! << 8) | (h[6]! << 16) | (h[7]! << 24)) >>> 0;
        this.headerLength = 0;
        return;
      case 'blockHeader': {
        const raw = h[0]! | (h[1]! << 8) | (h[2]! << 16);
        const type = (raw >> 1) & 3;
        const size = raw >>> 3;
        if (type !== RAW_BLOCK && type !== RLE_BLOCK && type !== COMPRESSED_BLOCK) {
          this.state = 'passThrough';
          return;
        }
        this.lastBlock = (raw & 1) === 1;
        this.blockOutput = type === COMPRESSED_BLOCK ? ZSTD_BLOCK_MAXIMUM_SIZE : size;
        this.state = 'skip';
        this.skipping = 'block';
        this.remaining = type === RLE_BLOCK ? 1 : size;
        this.headerLength = 0;
        return;
      }
      case 'checksum':
        this.frameEnded(((h[0]! | (h[1]! << 8) | (h[2]! << 16) | (h[3]! << 24)) >>> 0));
        return;
      default:
        return;
    }
  }

  private frameEnded(checksum: number | null): void {
    this.ended = { frameEnd: 'frame', checksum, contentSize: this.frame?.contentSize ?? null };
    this.frame = null;
    this.startFrame();
  }

  /** A skippable frame's last byte went by. */
  private skippableEnded(): boolean {
    this.ended = { frameEnd: 'skippable', checksum: null, contentSize: null };
    this.startFrame();
    return false;
  }

  private takeEnded(): ZstdFrameEnd {
    const ended = this.ended!;
    this.ended = null;
    return ended;
  }

  private readBlockHeaderNext(): void {
    this.state = 'blockHeader';
    this.headerLength = 0;
    this.need = BLOCK_HEADER_BYTES;
  }

  /** A block's last byte went by; true when a piece should end here. */
  private blockEnded(): boolean {
    this.announced += this.blockOutput;
    this.blocks++;
    if (!this.lastBlock) this.readBlockHeaderNext();
    else if (this.frame?.checksum) {
      this.state = 'checksum';
      this.headerLength = 0;
      this.need = CHECKSUM_BYTES;
    } else this.frameEnded(null);
    return this.announced >= this.maxOutput || this.blocks >= this.maxBlocks;
  }
}
