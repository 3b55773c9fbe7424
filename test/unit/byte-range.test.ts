import test from 'ava';
import { contentRange, parseChunkRange, resolveRange, uploadRange, type RangeRequest } from '../../src/domain/byte-range.ts';
import { isVolregError } from '../../src/domain/errors.ts';

const resolves = test.macro({
  exec(t, header: string | undefined, size: number, expected: RangeRequest) {
    t.deepEqual(resolveRange(header, size), expected);
  },
  title: (given, header, size) => given ?? `Range ${JSON.stringify(header)} of ${size} bytes`,
});

const unsatisfiable = test.macro({
  exec(t, header: string, size: number) {
    const err = t.throws(() => resolveRange(header, size));
    t.true(isVolregError(err));
    if (!isVolregError(err)) return;
    t.is(err.code, 'RANGE_INVALID');
    t.is(err.status, 416);
    t.deepEqual(err.headers, { 'Content-Range': `bytes */${size}` });
  },
  title: (given, header, size) => given ?? `Range ${JSON.stringify(header)} of ${size} bytes is 416`,
});

const full = { kind: 'full' } as const;
const part = (start: number, end: number) => ({ kind: 'partial', range: { start, end } }) as const;

test(resolves, undefined, 100, full);
test(resolves, 'bytes=0-0', 100, part(0, 0));
test(resolves, 'bytes=0-99', 100, part(0, 99));
test(resolves, 'bytes=99-99', 100, part(99, 99));
test(resolves, 'bytes=10-', 100, part(10, 99));
test(resolves, 'bytes=50-1000', 100, part(50, 99));
test(resolves, 'bytes=-1', 100, part(99, 99));
test(resolves, 'bytes=-30', 100, part(70, 99));
test(resolves, 'bytes=-500', 100, part(0, 99));
test(resolves, ' bytes = 5 - 9 ', 100, part(5, 9));
test(resolves, 'BYTES=1-2', 100, part(1, 2));
test(resolves, 'items=0-5', 100, full);
test(resolves, 'bytes=0-1,5-6', 100, full);
test(resolves, 'garbage', 100, full);
// numbers of any length (RFC 9110): an end or a suffix past any file is clamped to the blob
test(resolves, 'bytes=0-99999999999999999999999', 100, part(0, 99));
test(resolves, 'bytes=-99999999999999999999', 100, part(0, 99));
test(resolves, 'bytes=5-00000000000000000000009', 100, part(5, 9));

test(unsatisfiable, 'bytes=500-0', 1000);
test(unsatisfiable, 'bytes=100-', 100);
test(unsatisfiable, 'bytes=100-200', 100);
test(unsatisfiable, 'bytes=-0', 100);
test(unsatisfiable, 'bytes=0-0', 0);
test(unsatisfiable, 'bytes=-5', 0);
test(unsatisfiable, 'bytes=abc', 100);
test(unsatisfiable, 'bytes=a-b', 100);
test(unsatisfiable, 'bytes=1-x', 100);
test(unsatisfiable, 'bytes=-', 100);
test(unsatisfiable, 'bytes=0x10-20', 100);
test(unsatisfiable, 'bytes=99999999999999999999-', 100);
test(unsatisfiable, 'bytes=1e3-', 100);

test('Content-Range of a 206', (t) => {
  t.is(contentRange({ start: 0, end: 0 }, 1), 'bytes 0-0/1');
  t.is(contentRange({ start: 500, end: 1499 }, 4000), 'bytes 500-1499/4000');
});

const chunk = test.macro({
  exec(t, header: string, expected: { start: number; end: number } | 'invalid') {
    if (expected === 'invalid') {
      const err = t.throws(() => parseChunkRange(header));
      t.true(isVolregError(err) && err.code === 'RANGE_INVALID');
    } else {
      t.deepEqual(parseChunkRange(header), expected);
    }
  },
  title: (given, header, expected) => given ?? `Content-Range ${JSON.stringify(header)} -> ${JSON.stringify(expected)}`,
});

test(chunk, '0-0', { start: 0, end: 0 });
test(chunk, '0-1023', { start: 0, end: 1023 });
test(chunk, '1024-2047', { start: 1024, end: 2047 });
test(chunk, 'bytes 0-99/100', { start: 0, end: 99 });
test(chunk, 'bytes 0-99/*', { start: 0, end: 99 });
test(chunk, ' 5-6 ', { start: 5, end: 6 });
test(chunk, '5-4', 'invalid');
test(chunk, '', 'invalid');
test(chunk, '-5', 'invalid');
test(chunk, '5-', 'invalid');
test(chunk, 'a-b', 'invalid');
test(chunk, '1-2-3', 'invalid');
test(chunk, '0-1,2-3', 'invalid');
test(chunk, '99999999999999999-99999999999999999', 'invalid');
test(chunk, 'bytes=0-1', 'invalid');

test('upload Range header: 0-<last byte>, 0-0 when empty', (t) => {
  t.is(uploadRange(0), '0-0');
  t.is(uploadRange(1), '0-0');
  t.is(uploadRange(2), '0-1');
  t.is(uploadRange(1024), '0-1023');
});
test(chunk, '000000000000000000005-6', { start: 5, end: 6 });
test(chunk, 'bytes 0-99/99', 'invalid');
test(chunk, '9007199254740991-9007199254740991', { start: 2 ** 53 - 1, end: 2 ** 53 - 1 });
test(chunk, '9007199254740990-9007199254740992', 'invalid');
