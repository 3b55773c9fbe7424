import { VolregError } from './errors.ts';

/**
 * Byte ranges for blob downloads (RFC 9110 `Range` / `Content-Range`) and for chunked
 * uploads (the distribution-spec `Content-Range: <start>-<end>` of a PATCH and the `Range:
 * 0-<end>` a registry answers with). Pure parsing: no HTTP framework here.
 */

/** Inclusive byte range, as in HTTP `Range: bytes=start-end`. */
export interface ByteRange {
  start: number;
  end: number;
}

/** What a download request asked for once its `Range` header is resolved against the size. */
export type RangeRequest = { kind: 'full' } | { kind: 'partial'; range: ByteRange };

/** A download range's number: any count of digits (RFC 9110); past what a file can hold, Infinity. */
function toPosition(text: string): number | null {
  if (!/^[0-9]+$/.test(text)) return null;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : Infinity;
}

function unsatisfiable(size: number, why: string): VolregError {
  return new VolregError('RANGE_INVALID', `requested range not satisfiable: ${why}`, { size }, { 'Content-Range': `bytes */${size}` });
}

/**
 * Resolves a download `Range` header against a blob of `size` bytes.
 *
 * - no header, a unit other than `bytes`, or several ranges: the whole blob (RFC 9110 lets a
 *   server ignore Range; volreg does not build multipart/byteranges replies);
 * - `bytes=a-b`, `bytes=a-`, `bytes=-n`: one range, the end (or a suffix longer than the blob)
 *   clamped to the blob, however many digits it has;
 * - a malformed byte range, `a > b`, a start at or past the end, a zero suffix, or any range
 *   of an empty blob: 416 RANGE_INVALID carrying `Content-Range: bytes *\/<size>`.
 */
export function resolveRange(header: string | undefined, size: number): RangeRequest {
  if (header === undefined) return { kind: 'full' };
  const trimmed = header.trim();
  const eq = trimmed.indexOf('=');
  if (eq < 0) return { kind: 'full' };
  if (trimmed.slice(0, eq).trim().toLowerCase() !== 'bytes') return { kind: 'full' };
  const specs = trimmed.slice(eq + 1).split(',');
  if (specs.length !== 1) return { kind: 'full' };
  const spec = specs[0]!.trim();
  const dash = spec.indexOf('-');
  if (dash < 0) throw unsatisfiable(size, 'malformed range');
  const first = spec.slice(0, dash).trim();
  const last = spec.slice(dash + 1).trim();

  if (first === '') {
    const suffix = toPosition(last);
    if (suffix === null) throw unsatisfiable(size, 'malformed suffix range');
    if (suffix === 0 || size === 0) throw unsatisfiable(size, 'empty suffix range');
    return { kind: 'partial', range: { start: Math.max(0, size - suffix), end: size - 1 } };
  }
  const start = toPosition(first);
  if (start === null) throw unsatisfiable(size, 'malformed range start');
  let end = size - 1;
  if (last !== '') {
    const parsed = toPosition(last);
    if (parsed === null) throw unsatisfiable(size, 'malformed range end');
    if (parsed < start) throw unsatisfiable(size, 'range end before start');
    end = Math.min(parsed, size - 1);
  }
  if (start >= size) throw unsatisfiable(size, 'range starts past the end');
  return { kind: 'partial', range: { start, end } };
}

/** `Content-Range` value of a 206 reply. */
export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}

/**
 * Parses the `Content-Range` of an upload chunk. The distribution spec says `<start>-<end>`
 * (inclusive); the RFC 9110 form `bytes <start>-<end>/<total|*>` is accepted too, since some
 * clients send it. Anything else, or `end < start`, is 416 RANGE_INVALID.
 */
export function parseChunkRange(header: string): ByteRange {
  const m = /^\s*(?:bytes\s+)?([0-9]{1,16})-([0-9]{1,16})(?:\/(?:[0-9]{1,16}|\*))?\s*$/i.exec(header);
  if (!m) throw new VolregError('RANGE_INVALID', 'malformed Content-Range', { contentRange: header.slice(0, 100) });
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new VolregError('RANGE_INVALID', 'Content-Range end is before its start', { contentRange: header.slice(0, 100) });
  }
  return { start, end };
}

/**
 * The `Range` header of an upload status: `0-<last byte received>`. With nothing received
 * yet this is `0-0`, as CNCF distribution answers (the spec has no form for "empty").
 */
export function uploadRange(offset: number): string {
  return `0-${offset > 0 ? offset - 1 : 0}`;
}
