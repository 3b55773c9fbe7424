import { createHash, type Hash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Digest } from '../digest.ts';
import { isVolregError, VolregError } from '../errors.ts';
import { decompressedTar, invalidArchive, SourceFailure, type DecompressOptions } from './decompress.ts';
import { entryKind, isUnsafeEntry } from './entry-safety.ts';
import { LinkTargets } from './link-targets.ts';
import { NameTable } from './name-hash-set.ts';
import { entryNameForMessage, unrestorableReason } from './restorable-entry.ts';
import type { Compression } from './media-types.ts';
import { feedParser, tarParser } from './tar-feed.ts';
import { TarFraming } from './tar-framing.ts';
import { TreeShape } from './tree-shape.ts';

/**
 * The streaming archive inspector: reads a tar, tar+gzip or tar+zstd body once and proves it
 * is a complete, well-formed tar. This is the `validate` callback of the blob ingest, so it
 * sees the very bytes being stored while they are stored.
 *
 *   body -> (magic number) -> gunzip | zstd decoder | as is
 *        -> sha256 + byte count + block framing (tar-framing.ts) -> tar-stream (entries)
 *
 * Anything wrong with the bytes (truncated, corrupt, not a tar, garbage after the end) is
 * ARCHIVE_INVALID, and so is an entry a restore could not reproduce exactly
 * (restorable-entry.ts), a hard link tar -x could not create (link-targets.ts) or entries that do
 * not fit together as a tree (tree-shape.ts); a failure of the source itself (the client went away) is passed through,
 * and so is a fault of the inspection's own (isInspectionFault).
 */
export interface ArchiveInspection {
  compression: Compression;
  /** tar entries (files, directories, links...; pax/long-name headers are not entries) */
  entries: number;
  /** size and sha256 of the uncompressed tar stream (null: not computed, see skipPlainHash) */
  uncompressedSize: number;
  uncompressedDigest: Digest | null;
  /** entries a careful extractor refuses (absolute paths, `..`, escaping links, devices) */
  unsafeEntries: number;
}

export interface InspectOptions extends DecompressOptions {
  /**
   * For an uncompressed body the tar's digest is the body's own, which the caller (the blob
   * ingest) computes anyway: do not hash the same bytes twice (uncompressedDigest is then null).
   */
  skipPlainHash?: boolean;
}

/**
 * Hashes, counts and frames the uncompressed tar on its way to the parser.
 *
 * Each chunk is taken up on the next turn of the event loop, not inside the write: gunzip runs
 * on the thread pool and starts on its next piece only once the write of its last output
 * returns, so hashing inside the write would make the two take turns. With up to 4 MiB
 * buffered here they overlap (an inspection of 1 GiB takes about 15% less time).
 */
class TarTap extends Transform {
  constructor(readonly hash: Hash | null) {
    super({ writableHighWaterMark: 4 << 20 });
  }

  readonly framing = new TarFraming();
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    setImmediate(() => this.consume(chunk, cb));
  }

  private consume(chunk: Buffer, cb: TransformCallback): void {
    try {
      this.hash?.update(chunk);
      this.bytes += chunk.length;
      const archive = this.framing.write(chunk);
      // the parser gets the archive up to its end marker; the zero padding after it is counted and hashed only
      cb(null, archive === chunk.length ? chunk : chunk.subarray(0, archive));
    } catch (err) {
      cb(err as Error);
    }
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

export async function inspectArchive(source: Readable, opts: InspectOptions = {}): Promise<ArchiveInspection> {
  // The parser's own reason for refusing the archive: when it ends the feed, pipeline reports
  // the AbortError of the stream the feed stopped reading instead (on long enough archives).
  let parserFailure: Error | null = null;
  try {
    const { compression, tar } = await decompressedTar(source, opts);

    const tap = new TarTap(compression === 'none' && opts.skipPlainHash ? null : createHash('sha256'));
    let entries = 0;
    let unsafeEntries = 0;
    const parser = tarParser();
    // both rules keep the names of the archive's files, symlinks and links: in one table, each name once
    const names = new NameTable();
    const linkTargets = new LinkTargets(names);
    const shape = new TreeShape(names);
    parser.on('error', (err: Error) => (parserFailure ??= err));
    parser.on('entry', (header, body, next) => {
      // the parser's own error says what went wrong; the entry's stream only repeats it
      body.on('error', () => undefined);
      const unrestorable = unrestorableReason(header);
      if (unrestorable !== null) {
        const entry = entryNameForMessage(header.name);
        parser.destroy(new VolregError('ARCHIVE_INVALID', `the archive can not be restored exactly: entry ${entry}: ${unrestorable}`, { entry, reason: unrestorable }));
        return;
      }
      const missingTarget = linkTargets.admit(header);
      if (missingTarget !== null) {
        const entry = entryNameForMessage(header.name);
        const reason = `it is a hard link to ${entryNameForMessage(missingTarget)}, which no earlier entry of the archive is (a file, symlink, fifo, device or link): tar -x can not create it`;
        parser.destroy(new VolregError('ARCHIVE_INVALID', `the archive can not be restored exactly: entry ${entry}: ${reason}`, { entry, reason }));
        return;
      }
      const fit = shape.admit(header);
      if (fit !== null && fit !== 'beneath-symlink') {
        const entry = entryNameForMessage(header.name);
        parser.destroy(new VolregError('ARCHIVE_INVALID', `the archive can not be restored exactly: entry ${entry}: ${fit.refused}`, { entry, reason: fit.refused }));
        return;
      }
      entries++;
      if (fit === 'beneath-symlink' || isUnsafeEntry(entryKind(header), header.name, header.linkname)) unsafeEntries++;
      body.on('end', () => next());
      body.resume();
    });
    const feed = (src: AsyncIterable<Buffer>): Promise<void> => feedParser(src, parser);
    await pipeline(tar, tap, feed);

    if (tap.framing.entries !== entries) throw invalidArchive('tar structure is inconsistent');
    return {
      compression,
      entries,
      uncompressedSize: tap.bytes,
      uncompressedDigest: tap.hash ? (`sha256:${tap.hash.digest('hex')}` as Digest) : null,
      unsafeEntries,
    };
  } catch (err) {
    if (err instanceof SourceFailure) throw err.original;
    // the feed hands its own failure to the parser too (tar-feed.ts): a source's is still its own
    const cause: unknown = parserFailure ?? err;
    if (cause instanceof SourceFailure) throw cause.original;
    if (isVolregError(cause) || isInspectionFault(cause)) throw cause;
    throw invalidArchive(cause instanceof Error ? cause.message.slice(0, 300) : 'unreadable archive');
  }
}

/**
 * A fault of the inspection itself, not a verdict on the bytes: a programming error, or memory
 * the process could not get. Told as ARCHIVE_INVALID it would refuse a healthy backup (400, which
 * a client does not retry) or record one as damaged; thrown as it is, callers answer it as the
 * inspection being unavailable (worker thread) or as the bug it is. The decoders' and the tar
 * parser's own refusals are plain Errors (zlib's with a Z_ code), never these.
 */
function isInspectionFault(err: unknown): boolean {
  if (err instanceof TypeError || err instanceof ReferenceError) return true;
  if (err instanceof RangeError && /allocation failed|invalid (typed )?array length|maximum call stack/i.test(err.message)) return true;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'Z_MEM_ERROR' || code === 'ERR_MEMORY_ALLOCATION_FAILED';
}
