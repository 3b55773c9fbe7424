import test from 'ava';
import { entryAttributes, headerAttributes, invalidAttributeRecords } from '../../src/domain/volumes/entry-attributes.ts';

const FILE = 0o100000;

test('headerAttributes: the mode keeps its type bits (a 000 file is not 0); pax records only for what ustar can not hold', (t) => {
  t.deepEqual(headerAttributes({ mode: FILE | 0o000, mtimeMs: 1_000_500, uid: 262143, gid: 0 }), { mode: FILE, mtime: new Date(1_000_000), uid: 262143, gid: 0 });
  t.deepEqual(headerAttributes({ mode: FILE | 0o644, mtimeMs: -1500, uid: 262144, gid: 3_000_000 }), {
    mode: FILE | 0o644,
    mtime: new Date(0),
    uid: 65534,
    gid: 65534,
    pax: { mtime: '-2', uid: '262144', gid: '3000000' },
  });
  t.deepEqual(headerAttributes({ mode: FILE, mtimeMs: 2 ** 31 * 1000, uid: 0, gid: 0 }).pax, { mtime: String(2 ** 31) });
  t.is(headerAttributes({ mode: FILE, mtimeMs: (2 ** 31 - 1) * 1000, uid: 0, gid: 0 }).pax, undefined);
});

test('entryAttributes: pax records win over the ustar fields; fractional and negative mtimes kept', (t) => {
  const header = { mode: FILE | 0o4755, mtime: new Date(0), uid: 65534, gid: 65534 };
  t.deepEqual(entryAttributes(header), { mode: 0o4755, mtime: 0, uid: 65534, gid: 65534 });
  t.deepEqual(entryAttributes({ ...header, pax: { mtime: '-315619199.5', uid: '3000000', gid: '0', path: 'x' } }), { mode: 0o4755, mtime: -315619199.5, uid: 3000000, gid: 0 });
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
