import { createHash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { extract, type Extract, type Header } from 'tar-stream';
import type { Digest } from '../digest.ts';
import { isVolregError, VolregError } from '../errors.ts';
import { detectCompression, MAGIC_BYTES, zstdFrameWindow } from './compression.ts';
import { isUnsafeEntry, type EntryKind } from './entry-safety.ts';
import type { Compression } from './media-types.ts';
import { TarFraming } from './tar-framing.ts';

/**
 * The streaming archive inspector: reads a tar, tar+gzip or tar+zstd body once and proves it
 * is a complete, well-formed tar. This is the `validate` callback of the blob ingest, so it
 * sees the very bytes being stored while they are stored.
 *
 *   body -> (magic number) -> gunzip | zstd decoder | as is
 *        -> sha256 + byte count + block framing (tar-framing.ts) -> tar-stream (entries)
 *
 * Anything wrong with the bytes (truncated, corrupt, not a tar, garbage after the end) is
 * ARCHIVE_INVALID; a failure of the source itself (the client went away) is passed through.
 */
export interface ArchiveInspection {
  compression: Compression;
  /** tar entries (files, directories, links...; pax/long-name headers are not entries) */
  entries: number;
  /** size and sha256 of the uncompressed tar stream */
  uncompressedSize: number;
  uncompressedDigest: Digest;
  /** entries a careful extractor refuses (absolute paths, `..`, escaping links, devices) */
  unsafeEntries: number;
}

export interface InspectOptions {
  /** refuse zstd frames that ask for a larger decoder window (default 128 MiB, zstd's own default limit) */
  maxZstdWindow?: number;
}

const DEFAULT_MAX_ZSTD_WINDOW = 128 * 1024 * 1024;
// fzstd re-concatenates its pending input on every push, so feed it moderately sized slices:
// small enough to bound what one push can expand to, large enough to avoid quadratic copying.
const ZSTD_SLICE = 64 * 1024;

class SourceFailure extends Error {
  constructor(readonly original: unknown) {
    super('source failed');
  }
}

function invalid(reason: string): VolregError {
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
    const out: Uint8Array[] = [];
    const decoder = new Decompress((chunk) => {
      if (chunk.length > 0) out.push(chunk);
    });
    let checkedHead = false;
    let head = Buffer.alloc(0);
    for await (const chunk of src) {
      if (!checkedHead) {
        head = Buffer.concat([head, chunk]);
        const window = zstdFrameWindow(head.subarray(0, 32));
        if (window === null && head.length < 32) continue;
        if (window !== null && window > maxWindow) throw invalid(`zstd window of ${window} bytes exceeds ${maxWindow}`);
        checkedHead = true;
        yield* pushSliced(decoder, head, out);
        continue;
      }
      yield* pushSliced(decoder, chunk, out);
    }
    if (!checkedHead && head.length > 0) yield* pushSliced(decoder, head, out);
    decoder.push(new Uint8Array(0), true);
    yield* out.splice(0);
  };
}

function* pushSliced(decoder: Decompress, chunk: Uint8Array, out: Uint8Array[]): Generator<Uint8Array> {
  for (let i = 0; i < chunk.length; i += ZSTD_SLICE) {
    decoder.push(chunk.subarray(i, i + ZSTD_SLICE));
    yield* out.splice(0);
  }
}

/** Hashes, counts and frames the uncompressed tar on its way to the parser. */
class TarTap extends Transform {
  readonly hash = createHash('sha256');
  readonly framing = new TarFraming();
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.hash.update(chunk);
      this.bytes += chunk.length;
      this.framing.write(chunk);
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.framing.finish();
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb();
  }
}

function entryKind(type: Header['type'] | null | undefined): EntryKind {
  switch (type) {
    case 'file':
    case 'contiguous-file':
    case null:
    case undefined:
      return 'file';
    case 'directory':
    case 'symlink':
    case 'link':
    case 'character-device':
    case 'block-device':
    case 'fifo':
      return type;
    default:
      return 'other';
  }
}

/** tar-stream is a streamx Writable, not a Node one: feed it by hand, honouring backpressure. */
async function feedParser(src: AsyncIterable<Buffer>, parser: Extract): Promise<void> {
  let failure: Error | null = null;
  const failed = new Promise<never>((_, reject) => {
    parser.on('error', (err: Error) => {
      failure = err;
      reject(err);
    });
  });
  failed.catch(() => undefined);
  let done = false;
  const finished = new Promise<void>((resolve) => parser.on('finish', () => resolve()));
  try {
    for await (const chunk of src) {
      if (failure) throw failure;
      if (!parser.write(chunk)) {
        await Promise.race([new Promise<void>((resolve) => parser.once('drain', () => resolve())), failed]);
      }
    }
    parser.end(null);
    await Promise.race([finished, failed]);
    done = true;
  } finally {
    if (!done) parser.destroy();
  }
}

export async function inspectArchive(source: Readable, opts: InspectOptions = {}): Promise<ArchiveInspection> {
  try {
    const { head, stream } = await peek(source, MAGIC_BYTES);
    if (head.length === 0) throw invalid('empty body');
    const detected = detectCompression(head);
    if (detected.kind === 'unsupported') throw invalid(`${detected.format} compression is not supported (use gzip, zstd or none)`);
    const compression = detected.compression;

    const tap = new TarTap();
    let entries = 0;
    let unsafeEntries = 0;
    const parser = extract();
    parser.on('entry', (header, body, next) => {
      entries++;
      if (isUnsafeEntry(entryKind(header.type), header.name, header.linkname)) unsafeEntries++;
      body.on('end', () => next());
      body.resume();
    });
    const feed = (src: AsyncIterable<Buffer>): Promise<void> => feedParser(src, parser);
    if (compression === 'gzip') await pipeline(stream, createGunzip(), tap, feed);
    else if (compression === 'zstd') {
      await pipeline(stream, zstdDecoder(opts.maxZstdWindow ?? DEFAULT_MAX_ZSTD_WINDOW), tap, feed);
    } else await pipeline(stream, tap, feed);

    if (tap.framing.entries !== entries) throw invalid('tar structure is inconsistent');
    return {
      compression,
      entries,
      uncompressedSize: tap.bytes,
      uncompressedDigest: `sha256:${tap.hash.digest('hex')}` as Digest,
      unsafeEntries,
    };
  } catch (err) {
    if (err instanceof SourceFailure) throw err.original;
    if (isVolregError(err)) throw err;
    throw invalid(err instanceof Error ? err.message.slice(0, 200) : 'unreadable archive');
  }
}
