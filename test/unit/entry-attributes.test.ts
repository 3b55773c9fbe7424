import test from 'ava';
import { entryAttributes, headerAttributes, invalidAttributeRecords } from '../../src/domain/volumes/entry-attributes.ts';

const FILE = 0o100000;
const NS = 1_000_000n;

/** A stat as packing takes it (lstat with bigint: true), mtime in milliseconds. */
function stat(mode: number, mtimeMs: number, uid: number, gid: number): { mode: bigint; mtimeNs: bigint; uid: bigint; gid: bigint } {
  return { mode: BigInt(mode), mtimeNs: BigInt(mtimeMs) * NS, uid: BigInt(uid), gid: BigInt(gid) };
}

test('headerAttributes: the mode keeps its type bits (a 000 file is not 0); pax records only for what ustar can not hold', (t) => {
  t.deepEqual(headerAttributes(stat(FILE | 0o000, 1_000_500, 262143, 0)), { mode: FILE, mtime: new Date(1_000_000), uid: 262143, gid: 0 });
  t.deepEqual(headerAttributes(stat(FILE | 0o644, -1500, 262144, 3_000_000)), {
    mode: FILE | 0o644,
    mtime: new Date(0),
    uid: 65534,
    gid: 65534,
    pax: { mtime: '-2', uid: '262144', gid: '3000000' },
  });
  t.deepEqual(headerAttributes(stat(FILE, 2 ** 31 * 1000, 0, 0)).pax, { mtime: String(2 ** 31) });
  t.is(headerAttributes(stat(FILE, (2 ** 31 - 1) * 1000, 0, 0)).pax, undefined);
});

test('headerAttributes: whole seconds are rounded down from the nanosecond mtime, never up', (t) => {
  const at = (mtimeNs: bigint) => headerAttributes({ mode: BigInt(FILE), mtimeNs, uid: 0n, gid: 0n });
  // as a float of milliseconds 1577836800999.999999 is 1577836801000: the next second
  t.deepEqual(at(1_577_836_800_999_999_999n).mtime, new Date(1_577_836_800_000));
  t.deepEqual(at(-1n).pax, { mtime: '-1' });
  t.deepEqual(at(-1_000_000_000n).pax, { mtime: '-1' });
  t.deepEqual(at(-315_619_199_999_999_999n).pax, { mtime: '-315619200' });
});

/** A ustar mtime field as tar writes it: octal, or GNU base-256 (two's complement) for a negative value. */
function mtimeField(seconds: number): Buffer {
  if (seconds >= 0) return Buffer.from(`${seconds.toString(8).padStart(11, '0')}\0`, 'latin1');
  const field = Buffer.alloc(12, 0xff);
  field.writeBigInt64BE(BigInt(seconds), 4);
  return field;
}

test('entryAttributes: pax records win over the ustar fields; fractional and negative mtimes kept', (t) => {
  const header = { mode: FILE | 0o4755, mtime: new Date(0), uid: 65534, gid: 65534 };
  t.deepEqual(entryAttributes(header, mtimeField(0)), { mode: 0o4755, mtime: 0, uid: 65534, gid: 65534 });
  t.deepEqual(entryAttributes({ ...header, pax: { mtime: '-315619199.5', uid: '3000000', gid: '0', path: 'x' } }, mtimeField(0)), {
    mode: 0o4755,
    mtime: -315619199.5,
    uid: 3000000,
    gid: 0,
  });
});

test('entryAttributes: a negative base-256 mtime (GNU tar before 1970) is read exactly, not one second late as tar-stream reads it', (t) => {
  // what tar-stream's parser makes of these fields: the ones' complement, one too high
  for (const [seconds, parsed] of [
    [-1, 0],
    [-315619200, -315619199],
    [-2, -1],
  ] as const) {
    t.is(entryAttributes({ mode: FILE, mtime: new Date(parsed * 1000), uid: 0, gid: 0 }, mtimeField(seconds)).mtime, seconds);
  }
  // other fields as tar-stream parsed them
  t.is(entryAttributes({ mode: FILE, mtime: new Date(1_577_836_800_000), uid: 0, gid: 0 }, mtimeField(1_577_836_800)).mtime, 1_577_836_800);
});

const invalid = test.macro((t, pax: Record<string, string>, expected: RegExp | null) => {
  const reason = invalidAttributeRecords({ pax });
  if (expected === null) t.is(reason, null);
  else t.regex(reason ?? '', expected);
});

test('valid: decimal seconds', invalid, { mtime: '1795382718.237419118' }, null);
test('valid: negative fractional seconds', invalid, { mtime: '-315619200.5' }, null);
test('valid: the largest uid_t a file can have', invalid, { uid: '4294967294', gid: '0' }, null);
test('valid: other records are not looked at', invalid, { atime: 'whenever', path: 'x' }, null);
test('invalid: mtime that is not a number', invalid, { mtime: 'yesterday' }, /pax record mtime=yesterday is not valid/);
test('invalid: mtime in exponent form', invalid, { mtime: '1e9' }, /mtime=1e9/);
test('invalid: an empty mtime', invalid, { mtime: '' }, /mtime= is not valid/);
test('invalid: an mtime no date can hold', invalid, { mtime: '9'.repeat(20) }, /mtime=9+/);
test('invalid: negative uid', invalid, { uid: '-1' }, /uid=-1/);
test('invalid: (uid_t)-1', invalid, { gid: '4294967295' }, /gid=4294967295/);
test('invalid: several at once', invalid, { uid: 'x', gid: 'y' }, /pax records uid=x, gid=y are not valid/);
