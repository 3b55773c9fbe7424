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

/** The specs of a `bytes=` Range header, or null when there is none (no header, another unit). */
function byteSpecs(header: string | undefined): string[] | null {
  if (header === undefined) return null;
  const trimmed = header.trim();
  const eq = trimmed.indexOf('=');
  if (eq < 0) return null;
  if (trimmed.slice(0, eq).trim().toLowerCase() !== 'bytes') return null;
  return trimmed.slice(eq + 1).split(',');
}

/** One range spec against `size`: the range, or why it is not satisfiable (`malformed`: not a range at all). */
type SpecResult = { range: ByteRange } | { refused: string; malformed: boolean };

function parseSpec(raw: string, size: number): SpecResult {
  const malformed = (why: string): SpecResult => ({ refused: why, malformed: true });
  const spec = raw.trim();
  const dash = spec.indexOf('-');
  if (dash < 0) return malformed('malformed range');
  const first = spec.slice(0, dash).trim();
  const last = spec.slice(dash + 1).trim();

  if (first === '') {
    const suffix = toPosition(last);
    if (suffix === null) return malformed('malformed suffix range');
    if (suffix === 0 || size === 0) return { refused: 'empty suffix range', malformed: false };
    return { range: { start: Math.max(0, size - suffix), end: size - 1 } };
  }
  const start = toPosition(first);
  if (start === null) return malformed('malformed range start');
  let end = size - 1;
  if (last !== '') {
    const parsed = toPosition(last);
    if (parsed === null) return malformed('malformed range end');
    if (parsed < start) return malformed('range end before start');
    end = Math.min(parsed, size - 1);
  }
  if (start >= size) return { refused: 'range starts past the end', malformed: false };
  return { range: { start, end } };
}

/**
 * Resolves a download `Range` header against a blob of `size` bytes, as one range at most.
 *
 * - no header, a unit other than `bytes`, or several ranges: the whole blob (RFC 9110 lets a
 *   server ignore Range);
 * - `bytes=a-b`, `bytes=a-`, `bytes=-n`: one range, the end (or a suffix longer than the blob)
 *   clamped to the blob, however many digits it has;
 * - a malformed byte range, `a > b`, a start at or past the end, a zero suffix, or any range
 *   of an empty blob: 416 RANGE_INVALID carrying `Content-Range: bytes *\/<size>`.
 */
export function resolveRange(header: string | undefined, size: number): RangeRequest {
  const specs = byteSpecs(header);
  if (specs === null || specs.length !== 1) return { kind: 'full' };
  const r = parseSpec(specs[0]!, size);
  if ('refused' in r) throw unsatisfiable(size, r.refused);
  return { kind: 'partial', range: r.range };
}

/** A download request that may ask for several ranges (a multipart/byteranges reply). */
export type RangesRequest = RangeRequest | { kind: 'multipart'; ranges: ByteRange[] };

/** More ranges than this in one request are answered with the whole blob. */
export const MAX_RANGES = 256;

/**
 * As resolveRange, and several ranges become a multipart reply (what partial pulls of
 * zstd:chunked layers ask for), in the order asked. Of several, those past the end are
 * dropped (416 if none is left); a malformed one, more than MAX_RANGES, or ranges adding up to
 * more than the blob (a client asking for more than it would save) make it the whole blob.
 */
export function resolveRanges(header: string | undefined, size: number): RangesRequest {
  const specs = byteSpecs(header);
  if (specs === null || specs.length === 1) return resolveRange(header, size);
  if (specs.length > MAX_RANGES) return { kind: 'full' };
  const ranges: ByteRange[] = [];
  for (const spec of specs) {
    const r = parseSpec(spec, size);
    if ('range' in r) ranges.push(r.range);
    else if (r.malformed) return { kind: 'full' };
  }
  if (ranges.length === 0) throw unsatisfiable(size, 'no range within the blob');
  if (ranges.reduce((n, r) => n + r.end - r.start + 1, 0) > size) return { kind: 'full' };
  return ranges.length === 1 ? { kind: 'partial', range: ranges[0]! } : { kind: 'multipart', ranges };
}

/** `Content-Range` value of a 206 reply. */
export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}

/**
 * Parses the `Content-Range` of an upload chunk. The distribution spec says `<start>-<end>`
 * (inclusive); the RFC 9110 form `bytes <start>-<end>/<total|*>` is accepted too, since some
 * clients send it. Numbers have any count of digits (leading zeros included) and are judged by
 * their value: past 2^53 - 1 (the largest exact offset) is refused rather than rounded to a
 * neighbour. Anything else, `end < start`, or a total not past the end (RFC 9110 calls such a
 * range invalid) is 416 RANGE_INVALID.
 */
export function parseChunkRange(header: string): ByteRange {
  const refused = (why: string): VolregError => new VolregError('RANGE_INVALID', why, { contentRange: header.slice(0, 100) });
  const m = /^\s*(?:bytes\s+)?([0-9]+)-([0-9]+)(?:\/([0-9]+|\*))?\s*$/i.exec(header);
  if (!m) throw refused('malformed Content-Range');
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) throw refused('Content-Range is past the largest offset, 2^53 - 1');
  if (end < start) throw refused('Content-Range end is before its start');
  if (m[3] !== undefined && m[3] !== '*' && Number(m[3]) <= end) throw refused('Content-Range total is not past its end');
  return { start, end };
}

/**
 * The `Range` header of an upload status: `0-<last byte received>`. With nothing received
 * yet this is `0-0`, as CNCF distribution answers (the spec has no form for "empty").
 */
export function uploadRange(offset: number): string {
  return `0-${offset > 0 ? offset - 1 : 0}`;
}
