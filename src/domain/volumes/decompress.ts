import { PassThrough, pipeline, Readable, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { VolregError } from '../errors.ts';
import { detectCompression, MAGIC_BYTES } from './compression.ts';
import type { Compression } from './media-types.ts';
import { ZSTD_BLOCK_MAXIMUM_SIZE, ZstdBlockCutter, type ZstdFrameEnd } from './zstd-blocks.ts';
import { loadXxhash, ZstdFrameDecoder } from './zstd-frame-decoder.ts';

/**
 * Turns a tar, tar+gzip or tar+zstd byte stream into the plain tar stream, choosing the
 * decoder by magic number. Used by the server's archive inspector and by the CLI's extractor.
 * zstd is decoded in JavaScript (fzstd): Node 20's zlib has no zstd.
 */
export interface DecompressOptions {
  /** refuse zstd frames that ask for a larger decoder window (default DEFAULT_MAX_ZSTD_WINDOW) */
  maxZstdWindow?: number;
}

/**
 * fzstd moves its whole window after every block it decodes, so a block costs a copy of the
 * window: with the 128 MiB of `zstd --long` (or --ultra -20 to -22) a 256 MiB tar decoded at 17
 * MiB/s, and 16 KB of 4-byte blocks took 27 s of CPU. 8 MiB is the largest window zstd levels 1
 * to 19 use without --long (level 19's; the default level uses 2 MiB), and there a block's copy
 * is about what decoding and hashing its 128 KiB cost.
 */
const DEFAULT_MAX_ZSTD_WINDOW = 8 * 1024 * 1024;
// fzstd decodes all of one push before it returns, so the input is cut where zstd blocks end
// (zstd-blocks.ts): what one push announces it decodes to stays about this bound (plus one block),
// and it is yielded, so the reader's backpressure holds, before the next push.
const ZSTD_OUTPUT_PER_PUSH = 32 * ZSTD_BLOCK_MAXIMUM_SIZE;
// and a push is at most this many blocks: each costs a pass over the window, however small it is
const ZSTD_BLOCKS_PER_PUSH = 32;

/** A failure of the stream being decoded (as opposed to bad bytes in it). */
export class SourceFailure extends Error {
  constructor(readonly original: unknown) {
    super('source failed');
    this.name = 'SourceFailure';
  }
}

export function invalidArchive(reason: string): VolregError {
  return new VolregError('ARCHIVE_INVALID', `body is not a complete, well-formed tar archive: ${reason}`, { reason });
}

/** Reads the first bytes of a stream and gives back a stream that still starts with them. */
async function peek(source: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const next = async (): Promise<IteratorResult<Buffer>> => {
    try {
      return await it.next();
    } catch (err) {
      throw new SourceFailure(err);
    }
  };
  let head = Buffer.alloc(0);
  let done = false;
  while (head.length < n) {
    const r = await next();
    if (r.done) {
      done = true;
      break;
    }
    head = Buffer.concat([head, r.value]);
  }
  async function* rest(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      while (!done) {
        const r = await next();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      await it.return?.();
    }
  }
  return { head, stream: Readable.from(rest(), { objectMode: false }) };
}

function zstdDecoder(maxWindow: number): (src: AsyncIterable<Buffer>) => AsyncGenerator<Uint8Array> {
  return async function* decode(src) {
    const xxh = await loadXxhash();
    const cutter = new ZstdBlockCutter({
      maxOutputPerPiece: ZSTD_OUTPUT_PER_PUSH,
      maxBlocksPerPiece: ZSTD_BLOCKS_PER_PUSH,
      onFrameHeader: ({ window }) => {
        if (window > maxWindow) {
          throw invalidArchive(`zstd window of ${window} bytes exceeds ${maxWindow} (compress without --long, at a level up to 19)`);
        }
      },
    });
    // the frame being decoded; what follows the last frame (not zstd at all) goes to a decoder too, to be refused
    let frame: ZstdFrameDecoder | null = null;
    const decoded = (piece: Uint8Array | ZstdFrameEnd): Uint8Array[] => {
      if (piece instanceof Uint8Array) return (frame ??= new ZstdFrameDecoder(xxh)).push(piece);
      const ended = (frame ?? new ZstdFrameDecoder(xxh)).finish(piece);
      frame = null;
      return ended;
    };
    for await (const chunk of src) {
      for (const piece of cutter.cut(chunk)) yield* decoded(piece);
    }
    for (const piece of cutter.end()) yield* decoded(piece);
    if (frame) yield* (frame as ZstdFrameDecoder).finish(null);
  };
}

/**
 * gunzip with gzip's own rule for what may follow the last member: zero bytes (tape padding),
 * nothing else. zlib stops at a member's end and ignores the rest when it starts with a zero
 * byte, so `\0` and then anything would pass, and `gzip -d` and `tar -xz` then fail on the file.
 */
function strictGunzip(stream: Readable): Readable {
  let total = 0;
  // the end of the last non-zero byte seen: gunzip must have read up to here
  let dataEnd = 0;
  const tally = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      for (let i = chunk.length - 1; i >= 0; i--) {
        if (chunk[i] !== 0) {
          dataEnd = total + i + 1;
          break;
        }
      }
      total += chunk.length;
      cb(null, chunk);
    },
  });
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  pipeline(stream, tally, gunzip, (err) => {
    if (err) out.destroy(err);
  });
  // gunzip can fail after its input finished (a stream cut short, found at the end): the pipeline is done by then
  gunzip.on('error', (err) => out.destroy(err));
  // gunzip's output ends at the last member's end while the rest of the input still flows in:
  // the output ends once both are over and the rest was zeros
  gunzip.pipe(out, { end: false });
  let outputEnded = false;
  let inputDone = false;
  const settle = (): void => {
    if (!outputEnded || !inputDone || out.destroyed) return;
    // bytesWritten: the compressed bytes gunzip consumed
    if (gunzip.bytesWritten < dataEnd) out.destroy(new Error('data after the end of the gzip stream'));
    else out.end();
  };
  gunzip.once('end', () => {
    outputEnded = true;
    settle();
  });
  gunzip.once('finish', () => {
    inputDone = true;
    settle();
  });
  // a reader that gives up (a refused archive) stops the input, rather than wait for all of it
  out.once('close', () => {
    if (!(outputEnded && inputDone)) stream.destroy();
  });
  return out;
}

/**
 * Peeks at the first bytes, picks the decoder and returns the decoded tar stream. An empty
 * input or a compression volreg does not decode is ARCHIVE_INVALID; decoder errors surface as
 * errors of the returned stream, a failure of `source` as a SourceFailure.
 */
export async function decompressedTar(
  source: Readable,
  opts: DecompressOptions = {},
): Promise<{ compression: Compression; tar: Readable }> {
  const { head, stream } = await peek(source, MAGIC_BYTES);
  if (head.length === 0) throw invalidArchive('empty body');
  const detected = detectCompression(head);
  if (detected.kind === 'unsupported') {
    stream.destroy();
    throw invalidArchive(`${detected.format} compression is not supported (use gzip, zstd or none)`);
  }
  const compression = detected.compression;
  if (compression === 'none') return { compression, tar: stream };
  if (compression === 'gzip') return { compression, tar: strictGunzip(stream) };
  const decode = zstdDecoder(opts.maxZstdWindow ?? DEFAULT_MAX_ZSTD_WINDOW);
  return { compression, tar: Readable.from(decode(stream), { objectMode: false }) };
}
