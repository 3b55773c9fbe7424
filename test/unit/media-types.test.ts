import test from 'ava';
import {
  AcceptSet,
  contentTypeEssence,
  isListMediaType,
  isManifestMediaType,
  isSchema1MediaType,
  isWellFormedMediaType,
  MEDIA_TYPES,
  parseAccept,
} from '../../src/domain/media-types.ts';

const OCI = MEDIA_TYPES.ociManifest;
const INDEX = MEDIA_TYPES.ociIndex;
const V2 = MEDIA_TYPES.dockerManifest;
const LIST = MEDIA_TYPES.dockerManifestList;
const S1 = MEDIA_TYPES.dockerSchema1;
const S1S = MEDIA_TYPES.dockerSchema1Signed;

const quality = test.macro({
  exec(t, headers: string[] | string | undefined, mediaType: string, expected: number) {
    t.is(AcceptSet.from(headers).quality(mediaType), expected);
  },
  title(_, headers, mediaType, expected) {
    return `Accept ${JSON.stringify(headers)} gives ${mediaType} weight ${expected}`;
  },
});

test(quality, OCI, OCI, 1);
test(quality, `${OCI}, ${V2}`, V2, 1);
test(quality, [OCI, V2], V2, 1);
test(quality, `${OCI};q=0.5`, OCI, 0.5);
test(quality, `${OCI}; q=0`, OCI, 0);
test(quality, `*/*;q=0.1, ${OCI};q=0`, OCI, 0);
test(quality, `*/*;q=0.1, ${OCI};q=0`, V2, 0.1);
test(quality, `application/*;q=0.3, */*;q=0.9`, V2, 0.3);
test(quality, `application/*;q=0.3`, 'text/plain', 0);
test(quality, `${OCI.toUpperCase()}`, OCI, 1);
test(quality, `${OCI};q=0.2, ${OCI};q=0.7`, OCI, 0.7);
test(quality, `${OCI};charset=utf-8;q=0.4`, OCI, 0.4);
test(quality, V2, OCI, 0);
test(quality, undefined, OCI, 0);
test(quality, '', OCI, 0);
// malformed weights and ranges are dropped, never read as acceptance
test(quality, `${OCI};q=2`, OCI, 0);
test(quality, `${OCI};q=abc`, OCI, 0);
test(quality, `${OCI};q=0.1234`, OCI, 0);
test(quality, '*/json', OCI, 0);
test(quality, 'garbage, ;;;, /, a/b/c', OCI, 0);
test(quality, `"${OCI}", ${V2}`, V2, 1);

test('an absent or empty Accept header is not explicit; any value is', (t) => {
  t.false(AcceptSet.from(undefined).explicit);
  t.false(AcceptSet.from([]).explicit);
  t.false(AcceptSet.from(['', '  ']).explicit);
  t.true(AcceptSet.from('*/*').explicit);
  // a header that parses to nothing is still a client that sent one
  t.true(AcceptSet.from('garbage').explicit);
});

test('schema 1 is read by clients that accept either schema 1 type or application/json', (t) => {
  t.true(AcceptSet.from(S1).acceptsSchema1());
  t.true(AcceptSet.from(S1S).acceptsSchema1());
  t.true(AcceptSet.from('application/json').acceptsSchema1());
  t.true(AcceptSet.from('*/*').acceptsSchema1());
  t.false(AcceptSet.from(`${V2}, ${OCI}`).acceptsSchema1());
  t.false(AcceptSet.from(`${S1};q=0, ${S1S};q=0, application/json;q=0`).acceptsSchema1());
});

test('parseAccept keeps order, weights and lower-cases ranges; quoted commas do not split', (t) => {
  t.deepEqual(parseAccept([`${OCI};q=0.5, Application/JSON`]), [
    { type: 'application', subtype: 'vnd.oci.image.manifest.v1+json', q: 0.5 },
    { type: 'application', subtype: 'json', q: 1 },
  ]);
  t.deepEqual(parseAccept(['text/plain;foo="a,b";q=0.2']), [{ type: 'text', subtype: 'plain', q: 0.2 }]);
  const huge = Array.from({ length: 2000 }, (_, i) => `application/x-${i}`).join(',');
  t.is(parseAccept([huge]).length, 2000);
});

test('contentTypeEssence drops parameters and case', (t) => {
  t.is(contentTypeEssence(`${OCI}; charset=utf-8`), OCI);
  t.is(contentTypeEssence(' Application/JSON '), 'application/json');
  t.is(contentTypeEssence(undefined), '');
  t.is(contentTypeEssence(''), '');
});

test('manifest media type predicates', (t) => {
  for (const mt of [OCI, INDEX, V2, LIST, S1, S1S]) t.true(isManifestMediaType(mt), mt);
  t.false(isManifestMediaType('application/json'));
  t.false(isManifestMediaType('application/vnd.oci.artifact.manifest.v1+json'));
  t.deepEqual([OCI, INDEX, V2, LIST, S1, S1S].filter(isListMediaType), [INDEX, LIST]);
  t.deepEqual([OCI, INDEX, V2, LIST, S1, S1S].filter(isSchema1MediaType), [S1, S1S]);
  t.true(isWellFormedMediaType('application/vnd.example+json'));
  t.false(isWellFormedMediaType('application'));
  t.false(isWellFormedMediaType('a/b/c'));
  t.false(isWellFormedMediaType(`a/${'b'.repeat(200)}`));
});
