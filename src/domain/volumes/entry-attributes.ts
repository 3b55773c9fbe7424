/**
 * How an entry's mode, mtime and owner go into a tar header and come out of one: the one place
 * for it, used by the packer (push) and the extractor (pull), and for the validity of the pax
 * records involved (restorable-entry.ts, which the server applies on push too).
 *
 * A ustar header can not hold every value: its mtime field is written by tar-stream as a 32-bit
 * number of seconds (`(ms / 1000) | 0`), so anything before 1970 or after 2038-01-19 comes back
 * wrong, and its uid/gid fields hold at most 0o777777 (tar-stream clamps to it). Such values go
 * into pax records (`mtime`, `uid`, `gid`, POSIX.1-2001, read by GNU tar and by our extractor),
 * with a stand-in in the ustar field for readers that ignore pax. Reading, a pax record wins over
 * its ustar field, as in every pax reader; tar-stream parses the records but applies only
 * path, linkpath and size itself.
 *
 * An mtime is packed in whole seconds, rounded down (from the nanosecond stat: the float
 * `mtimeMs` of `…00.999999999` rounds up to the next second).
 */

/** The attributes as restored: mode bits, mtime in seconds (may be fractional, negative), numeric owner. */
export interface EntryAttributes {
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
}

/** What packing a header needs of a file's stat, taken with `{ bigint: true }` (fs.BigIntStats fits). */
export interface StatAttributes {
  mode: bigint;
  mtimeNs: bigint;
  uid: bigint;
  gid: bigint;
}

/** The header fields of an entry (tar-stream's pack fills in the rest). */
export interface HeaderAttributes {
  mode: number;
  mtime: Date;
  uid: number;
  gid: number;
  pax?: Record<string, string>;
}

/** What reading them needs of a parsed header (tar-stream's Header fits); see entryAttributes for its mtime. */
export interface ParsedAttributes {
  mode: number;
  mtime: Date;
  uid: number;
  gid: number;
  pax?: unknown;
}

const MAX_USTAR_TIME = 2 ** 31 - 1;
const MAX_USTAR_ID = 0o777777;
/**
 * The ustar uid/gid of an owner only pax can hold: nobody (65534, the kernel's overflow id for
 * ids it can not map). Not root, which GNU tar writes: a reader ignoring pax would then hand a
 * set-uid file to root.
 */
const STAND_IN_ID = 65534;
/** Largest uid_t a file can have ((uid_t)-1 means "unchanged" to chown). */
const MAX_ID = 2 ** 32 - 2;
/** Seconds a JavaScript Date can hold, either side of 1970. */
const MAX_TIME = 8.64e12;

const PAX_TIME = /^-?\d+(\.\d+)?$/;
const PAX_ID = /^\d+$/;

/**
 * The header attributes of a file with this stat. The mode keeps its file type bits: tar-stream
 * replaces a mode of 0 by its default (0644/0755) but masks what it writes with 0o7777, so a
 * `chmod 000` file keeps its 000 only when the type bits make the value non-zero.
 */
export function headerAttributes(st: StatAttributes): HeaderAttributes {
  const mtime = wholeSeconds(st.mtimeNs);
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  const pax: Record<string, string> = {};
  if (mtime < 0 || mtime > MAX_USTAR_TIME) pax.mtime = String(mtime);
  if (uid > MAX_USTAR_ID) pax.uid = String(uid);
  if (gid > MAX_USTAR_ID) pax.gid = String(gid);
  return {
    mode: Number(st.mode),
    mtime: new Date(Math.min(Math.max(mtime, 0), MAX_USTAR_TIME) * 1000),
    uid: pax.uid === undefined ? uid : STAND_IN_ID,
    gid: pax.gid === undefined ? gid : STAND_IN_ID,
    ...(Object.keys(pax).length > 0 ? { pax } : {}),
  };
}

/** The largest size the 11 octal digits of a ustar size field hold: 8 GiB - 1. */
export const MAX_USTAR_SIZE = 8 ** 11 - 1;

/**
 * The header of a regular file of `size` bytes. Past MAX_USTAR_SIZE tar-stream writes the size
 * field in GNU's base-256, which only GNU-aware readers take; the size also goes into a pax `size`
 * record (as GNU tar `--format=posix` and bsdtar write it), which every pax reader applies.
 */
export function withFileSize<T extends { pax?: unknown }>(header: T, size: number): T & { size: number } {
  if (size <= MAX_USTAR_SIZE) return { ...header, size };
  return { ...header, size, pax: { ...paxRecords(header), size: String(size) } };
}

const NS_PER_SECOND = 1_000_000_000n;

/** Nanoseconds as whole seconds, rounded down, before 1970 too (bigint division rounds toward zero). */
function wholeSeconds(ns: bigint): number {
  const seconds = ns / NS_PER_SECOND;
  return Number(seconds * NS_PER_SECOND > ns ? seconds - 1n : seconds);
}

function paxRecords(header: { pax?: unknown }): Record<string, unknown> {
  return typeof header.pax === 'object' && header.pax !== null ? (header.pax as Record<string, unknown>) : {};
}

function validTime(value: unknown): value is string {
  return typeof value === 'string' && PAX_TIME.test(value) && Math.abs(Number(value)) <= MAX_TIME;
}

function validId(value: unknown): value is string {
  return typeof value === 'string' && PAX_ID.test(value) && Number(value) <= MAX_ID;
}

/** Why the entry's pax mtime/uid/gid records can not be applied (not a number a file can have), or null. */
export function invalidAttributeRecords(header: { pax?: unknown }): string | null {
  const pax = paxRecords(header);
  const bad: string[] = [];
  if ('mtime' in pax && !validTime(pax.mtime)) bad.push(`mtime=${String(pax.mtime).slice(0, 40)}`);
  for (const key of ['uid', 'gid'] as const) if (key in pax && !validId(pax[key])) bad.push(`${key}=${String(pax[key]).slice(0, 40)}`);
  if (bad.length === 0) return null;
  return `its pax record${bad.length > 1 ? 's' : ''} ${bad.join(', ')} ${bad.length > 1 ? 'are' : 'is'} not valid (mtime: decimal seconds; uid, gid: 0 to ${MAX_ID})`;
}

/**
 * Which of the entry's mode, mtime, uid and gid fields are not numbers (tar-stream reads such a
 * field as NaN, or an invalid Date) with no valid pax record standing in for it, or null. GNU tar
 * fails on them ("Archive contains 'K' where numeric time_t value expected"), bsdtar does not read
 * the archive, and a restore can not apply them.
 */
export function unreadableNumericFields(header: Partial<ParsedAttributes>): string | null {
  const pax = paxRecords(header);
  const bad: string[] = [];
  if (header.mode !== undefined && !Number.isFinite(header.mode)) bad.push('mode');
  if (header.mtime !== undefined && !Number.isFinite(header.mtime.getTime()) && !validTime(pax.mtime)) bad.push('mtime');
  if (header.uid !== undefined && !Number.isFinite(header.uid) && !validId(pax.uid)) bad.push('uid');
  if (header.gid !== undefined && !Number.isFinite(header.gid) && !validId(pax.gid)) bad.push('gid');
  if (bad.length === 0) return null;
  return `its header's ${bad.join(', ')} field${bad.length > 1 ? 's are' : ' is'} not a number: tar -x can not restore it`;
}

/**
 * The seconds of an entry's ustar mtime, given the raw field (12 bytes at offset 136 of its
 * header block; TarFraming keeps it). GNU tar's default format writes an mtime before 1970 as a
 * negative base-256 number (first byte 0xff, two's complement), which tar-stream reads one too
 * high: it takes the ones' complement without adding 1 (-1 reads as 0, so 1969-12-31 23:59:59
 * would come back as 1970). Such a field is decoded here; tar-stream reads any other right.
 */
function ustarMtime(header: ParsedAttributes, field: Uint8Array): number {
  if (field[0] !== 0xff) return header.mtime.getTime() / 1000;
  let complement = 0;
  for (let i = 1; i < field.length; i++) complement = complement * 256 + (0xff - field[i]!);
  return -(complement + 1);
}

/**
 * The attributes an extraction restores: pax records over ustar fields. `mtimeField` is the
 * header's raw mtime field (see ustarMtime). Records must have passed invalidAttributeRecords.
 */
export function entryAttributes(header: ParsedAttributes, mtimeField: Uint8Array): EntryAttributes {
  const pax = paxRecords(header);
  return {
    mode: header.mode & 0o7777,
    mtime: validTime(pax.mtime) ? Number(pax.mtime) : ustarMtime(header, mtimeField),
    uid: validId(pax.uid) ? Number(pax.uid) : header.uid,
    gid: validId(pax.gid) ? Number(pax.gid) : header.gid,
  };
}
