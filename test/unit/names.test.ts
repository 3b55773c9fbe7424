import test from 'ava';
import { parseReference, parseRepositoryName, parseTag } from '../../src/domain/names.ts';
import { VolregError } from '../../src/domain/errors.ts';

const validName = test.macro({
  exec(t, input: string) {
  t.is(asText(parseRepositoryName(input)), input);
  },
  title(_: string | undefined, input: string) {
    return `name ${JSON.stringify(input.slice(0, 40))} is valid`;
  },
});

const invalidName = test.macro({
  exec(t, input: string) {
  const err = t.throws(() => parseRepositoryName(input), { instanceOf: VolregError });
  t.is(err?.code, 'NAME_INVALID');
  },
  title(_: string | undefined, input: string) {
    return `name ${JSON.stringify(input.slice(0, 40))} is invalid`;
  },
});

for (const n of ['a', 'library/ubuntu', 'a.b_c__d-e--f/g0', 'host1/volumes/pg-data', 'a/'.repeat(127) + 'a']) test(validName, n);
for (const n of ['', 'A', 'a//b', '/a', 'a/', '../etc', 'a/../b', 'a..b', 'a_-b', '-a', 'a b', 'a%2fb', 'ä', 'a'.repeat(256)]) test(invalidName, n);

test('tags follow the OCI grammar', (t) => {
  for (const ok of ['latest', 'v1.0', '_x', 'A-b.c_d', 'a'.repeat(128)]) t.is(asText(parseTag(ok)), ok);
  for (const bad of ['', '.x', '-x', 'a/b', 'a:b', 'a'.repeat(129), '../x']) {
    t.is(t.throws(() => parseTag(bad), { instanceOf: VolregError })?.code, 'TAG_INVALID', bad);
  }
});

test('references are digests when they contain a colon', (t) => {
  t.deepEqual(parseReference('latest'), { kind: 'tag', tag: 'latest' });
  const d = `sha256:${'0'.repeat(64)}`;
  t.deepEqual(parseReference(d), { kind: 'digest', digest: d });
  t.is(t.throws(() => parseReference('sha256:xyz'), { instanceOf: VolregError })?.code, 'DIGEST_INVALID');
  t.is(t.throws(() => parseReference('-bad'), { instanceOf: VolregError })?.code, 'TAG_INVALID');
});

/** Branded values compare as the strings they are. */
function asText(value: string | undefined): string | undefined {
  return value;
}
