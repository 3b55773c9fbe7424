import test from 'ava';
import { digestOf, oneDigestPerAlgorithm, parseDigest, parseRfc3230Digests, rfc3230Digest, splitDigest } from '../../src/domain/digest.ts';
import { VolregError } from '../../src/domain/errors.ts';

const SHA256_EMPTY = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

const accepts = test.macro({
  exec(t, input: string) {
  t.is(asText(parseDigest(input)), input);
  },
  title(_: string | undefined, input: string) {
    return `accepts ${input.slice(0, 24)}…`;
  },
});

const refuses = test.macro({
  exec(t, input: string, code: string) {
  const err = t.throws(() => parseDigest(input), { instanceOf: VolregError });
  t.is(asText(err?.code), code);
  },
  title(_: string | undefined, input: string, code: string) {
    return `refuses ${JSON.stringify(input.length > 40 ? `${input.slice(0, 12)}…(${input.length})` : input)} as ${code}`;
  },
});

test(accepts, SHA256_EMPTY);
test(accepts, `sha512:${'ab'.repeat(64)}`);
test(refuses, '', 'DIGEST_INVALID');
test(refuses, 'sha256', 'DIGEST_INVALID');
test(refuses, 'sha256:', 'DIGEST_INVALID');
test(refuses, `sha256:${'A'.repeat(64)}`, 'DIGEST_INVALID');
test(refuses, `sha256:${'a'.repeat(63)}`, 'DIGEST_INVALID');
test(refuses, `sha256:${'a'.repeat(65)}`, 'DIGEST_INVALID');
test(refuses, `sha512:${'a'.repeat(64)}`, 'DIGEST_INVALID');
test(refuses, `sha256:../../${'a'.repeat(58)}`, 'DIGEST_INVALID');
test(refuses, `md5:${'a'.repeat(32)}`, 'DIGEST_INVALID');
test(refuses, `blake3:${'a'.repeat(64)}`, 'DIGEST_INVALID');

test('digestOf hashes the exact bytes', (t) => {
  t.is(asText(digestOf(Buffer.alloc(0))), SHA256_EMPTY);
  t.not(digestOf('a'), digestOf('a\n'));
  t.true(digestOf('x', 'sha512').startsWith('sha512:'));
  t.is(splitDigest(digestOf('x'))[0], 'sha256');
});

test('RFC 3230 Digest header round-trips', (t) => {
  const d = digestOf('hello');
  const header = rfc3230Digest(d);
  t.regex(header, /^sha-256=[A-Za-z0-9+/]+=*$/);
  t.deepEqual(parseRfc3230Digests(header).map(asText), [d]);
  t.deepEqual(parseRfc3230Digests(`md5=abc, ${header}`).map(asText), [d]);
  t.throws(() => parseRfc3230Digests('md5=abc'), { instanceOf: VolregError });
  // every sha-256 and sha-512 value counts, in order
  const d512 = digestOf('hello', 'sha512');
  t.deepEqual(parseRfc3230Digests(`${header},${rfc3230Digest(d512)}`).map(asText), [d, d512]);
});

test('one digest per algorithm: repeats of the same are one, two different ones are refused', (t) => {
  const a = digestOf('a');
  const b = digestOf('b');
  const a512 = digestOf('a', 'sha512');
  t.deepEqual(oneDigestPerAlgorithm([a, a512, a]).map(asText), [a, a512]);
  t.throws(() => oneDigestPerAlgorithm([a, a512, b]), { instanceOf: VolregError, message: /two different sha256 digests/ });
});

/** Branded values compare as the strings they are. */
function asText(value: string | undefined): string | undefined {
  return value;
}
