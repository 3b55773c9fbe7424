import test from 'ava';
import { VolregError } from '../../src/domain/errors.ts';
import { MANIFEST_HANDLERS, parseManifest } from '../../src/domain/manifests/manifest-handlers.ts';
import { MANIFEST_MEDIA_TYPES } from '../../src/domain/media-types.ts';
import {
  blobOf,
  configBlob,
  dockerList,
  dockerManifest,
  ecSigner,
  MT,
  ociIndex,
  ociManifest,
  randomBlob,
  rsaSigner,
  schema1Doc,
  schema1Signed,
  schema1Unsigned,
  sha256,
  signSchema1,
  type Built,
} from '../helpers/manifest-fixtures.ts';

const config = configBlob();
const l1 = randomBlob(100);
const l2 = randomBlob(200);
const oci = ociManifest({ config, layers: [l1, l2, l1] });
const v2 = dockerManifest({ config, layers: [l2] });

test('every manifest media type has exactly one handler, registered under its own type', (t) => {
  t.deepEqual(Object.keys(MANIFEST_HANDLERS).sort(), [...MANIFEST_MEDIA_TYPES].sort());
  for (const [mt, h] of Object.entries(MANIFEST_HANDLERS)) t.is<string, string>(h.mediaType, mt);
});

// ---- valid manifests, one row per media type ------------------------------------------------

interface Expect {
  mediaType: string;
  schemaVersion: 1 | 2;
  kind: 'image' | 'list';
  digest: string;
  configDigest: string | null;
  blobDigests: string[];
  manifestDigests: string[];
  subject?: string | null;
  artifactType?: string | null;
  v1TopImageId?: string | null;
}

const parses = test.macro({
  exec(t, _label: string, built: Built, contentType: string | undefined, expected: Expect) {
    const p = parseManifest(built.bytes, contentType);
    t.is<string, string>(p.mediaType, expected.mediaType);
    t.is(p.schemaVersion, expected.schemaVersion);
    t.is(p.kind, expected.kind);
    t.is<string, string>(p.digest, expected.digest);
    t.is(p.size, built.bytes.length);
    t.is<string | null, string | null>(p.configDigest, expected.configDigest);
    t.deepEqual<string[], string[]>(p.blobDigests, expected.blobDigests);
    t.deepEqual<string[], string[]>(
      p.manifests.map((m) => m.digest),
      expected.manifestDigests,
    );
    t.is<string | null, string | null>(p.subject, expected.subject ?? null);
    t.is(p.artifactType, expected.artifactType ?? null);
    t.is(p.v1TopImageId, expected.v1TopImageId ?? null);
  },
  title: (_t, label: string) => `parses ${label}`,
});

test(parses, 'an OCI image manifest (duplicate layers listed once)', oci, MT.ociManifest, {
  mediaType: MT.ociManifest,
  schemaVersion: 2,
  kind: 'image',
  digest: oci.digest,
  configDigest: config.digest,
  blobDigests: [config.digest, l1.digest, l2.digest],
  manifestDigests: [],
});

const ociNoField = ociManifest({ config, layers: [l1], withMediaType: false });
test(parses, 'an OCI image manifest without mediaType field when Content-Type names it', ociNoField, `${MT.ociManifest}; charset=utf-8`, {
  mediaType: MT.ociManifest,
  schemaVersion: 2,
  kind: 'image',
  digest: ociNoField.digest,
  configDigest: config.digest,
  blobDigests: [config.digest, l1.digest],
  manifestDigests: [],
});

const artifact = ociManifest({
  config: blobOf('{}'),
  configMediaType: MT.ociEmpty,
  layers: [l1],
  subject: oci,
  artifactType: 'application/vnd.example.sbom.v1',
  annotations: { 'org.example': 'x' },
});
test(parses, 'an OCI artifact with subject and artifactType', artifact, MT.ociManifest, {
  mediaType: MT.ociManifest,
  schemaVersion: 2,
  kind: 'image',
  digest: artifact.digest,
  configDigest: sha256('{}'),
  blobDigests: [sha256('{}'), l1.digest],
  manifestDigests: [],
  subject: oci.digest,
  artifactType: 'application/vnd.example.sbom.v1',
});

test(parses, 'a Docker v2 schema 2 manifest', v2, MT.dockerManifest, {
  mediaType: MT.dockerManifest,
  schemaVersion: 2,
  kind: 'image',
  digest: v2.digest,
  configDigest: config.digest,
  blobDigests: [config.digest, l2.digest],
  manifestDigests: [],
});

const index = ociIndex([{ manifest: oci, platform: { os: 'linux', architecture: 'amd64' } }, { manifest: v2 }], { subject: v2, artifactType: 'application/x-a' });
test(parses, 'an OCI image index', index, MT.ociIndex, {
  mediaType: MT.ociIndex,
  schemaVersion: 2,
  kind: 'list',
  digest: index.digest,
  configDigest: null,
  blobDigests: [],
  manifestDigests: [oci.digest, v2.digest],
  subject: v2.digest,
  artifactType: 'application/x-a',
});

const emptyIndex = ociIndex([]);
test(parses, 'an empty OCI image index', emptyIndex, MT.ociIndex, {
  mediaType: MT.ociIndex,
  schemaVersion: 2,
  kind: 'list',
  digest: emptyIndex.digest,
  configDigest: null,
  blobDigests: [],
  manifestDigests: [],
});

const list = dockerList([
  { manifest: v2, platform: { os: 'linux', architecture: 'amd64' } },
  { manifest: oci, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
]);
test(parses, 'a Docker manifest list', list, MT.dockerList, {
  mediaType: MT.dockerList,
  schemaVersion: 2,
  kind: 'list',
  digest: list.digest,
  configDigest: null,
  blobDigests: [],
  manifestDigests: [v2.digest, oci.digest],
});

const unsigned = schema1Unsigned({ name: 'lib/app', tag: 'v1', layers: [l1, l2, l1] });
test(parses, 'an unsigned schema 1 manifest (digest over the bytes)', unsigned, MT.schema1, {
  mediaType: MT.schema1,
  schemaVersion: 1,
  kind: 'image',
  digest: unsigned.digest,
  configDigest: null,
  blobDigests: [l1.digest, l2.digest],
  manifestDigests: [],
  v1TopImageId: unsigned.topId,
});

const signed = schema1Signed({ name: 'lib/app', tag: 'v1', layers: [l2] });
test(parses, 'a signed schema 1 manifest (digest over the payload)', signed, MT.schema1Signed, {
  mediaType: MT.schema1Signed,
  schemaVersion: 1,
  kind: 'image',
  digest: signed.payloadDigest,
  configDigest: null,
  blobDigests: [l2.digest],
  manifestDigests: [],
  v1TopImageId: signed.topId,
});

test(parses, 'a signed schema 1 manifest sent as v1+json (signatures decide)', signed, MT.schema1, {
  mediaType: MT.schema1Signed,
  schemaVersion: 1,
  kind: 'image',
  digest: signed.payloadDigest,
  configDigest: null,
  blobDigests: [l2.digest],
  manifestDigests: [],
  v1TopImageId: signed.topId,
});

for (const ct of [undefined, '', 'application/json', 'application/octet-stream']) {
  test(parses, `an OCI manifest by its mediaType field under Content-Type ${JSON.stringify(ct)}`, oci, ct, {
    mediaType: MT.ociManifest,
    schemaVersion: 2,
    kind: 'image',
    digest: oci.digest,
    configDigest: config.digest,
    blobDigests: [config.digest, l1.digest, l2.digest],
    manifestDigests: [],
  });
  test(parses, `schema 1 by schemaVersion under Content-Type ${JSON.stringify(ct)}`, unsigned, ct, {
    mediaType: MT.schema1,
    schemaVersion: 1,
    kind: 'image',
    digest: unsigned.digest,
    configDigest: null,
    blobDigests: [l1.digest, l2.digest],
    manifestDigests: [],
    v1TopImageId: unsigned.topId,
  });
}

test('a signed manifest keeps its digest whoever signs it, and several signatures verify', (t) => {
  const { doc } = schema1Doc({ name: 'x', tag: 'y', layers: [l1] });
  const a = signSchema1(doc, [ecSigner()]);
  const b = signSchema1(doc, [rsaSigner(), ecSigner()]);
  t.notDeepEqual(a.bytes, b.bytes);
  t.is(parseManifest(a.bytes, MT.schema1Signed).digest, parseManifest(b.bytes, MT.schema1Signed).digest);
  t.is<string, string>(parseManifest(a.bytes, MT.schema1Signed).digest, sha256(a.payload));
});

test('platforms of list entries are kept', (t) => {
  const p = parseManifest(list.bytes, MT.dockerList);
  t.deepEqual(
    p.manifests.map((m) => m.platform),
    [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
    ],
  );
  t.deepEqual<string[], string[]>(
    p.manifests.map((m) => m.mediaType),
    [MT.dockerManifest, MT.ociManifest],
  );
});

test('layers with urls (foreign, non-distributable) are not required from the registry', (t) => {
  const foreign = ociManifest({ config, layers: [l1], layerExtra: { urls: ['https://example.com/layer'] } });
  const p = parseManifest(foreign.bytes, MT.ociManifest);
  t.deepEqual<string[], string[]>(p.blobDigests, [config.digest]);
  t.deepEqual<string[], string[]>(p.externalBlobDigests, [l1.digest]);
});

test('a digest algorithm can be chosen: sha512 names the same bytes differently', (t) => {
  const p = parseManifest(oci.bytes, MT.ociManifest, 'sha512');
  t.regex(p.digest, /^sha512:[0-9a-f]{128}$/);
});

// ---- invalid manifests --------------------------------------------------------------------

const rejects = test.macro({
  exec(t, _label: string, body: Buffer | string, contentType: string | undefined, messagePart: RegExp) {
    const err = t.throws(() => parseManifest(Buffer.isBuffer(body) ? body : Buffer.from(body), contentType), { instanceOf: VolregError });
    t.is(err?.code, 'MANIFEST_INVALID');
    t.is(err?.status, 400);
    t.regex(`${err?.message} ${JSON.stringify(err?.detail ?? '')}`, messagePart);
  },
  title: (_t, label: string) => `rejects ${label}`,
});

const json = (v: unknown): string => JSON.stringify(v);
const desc = (b: { digest: string; size: number }, mediaType: string = MT.ociLayer) => ({ mediaType, digest: b.digest, size: b.size });
const goodOci = { schemaVersion: 2, mediaType: MT.ociManifest, config: desc(config, MT.ociConfig), layers: [desc(l1)] };

test(rejects, 'malformed JSON', '{"schemaVersion": 2,', MT.ociManifest, /not valid JSON/);
test(rejects, 'an empty body', '', MT.ociManifest, /not valid JSON/);
test(rejects, 'a JSON array', '[]', MT.ociManifest, /not a JSON object/);
test(rejects, 'a JSON string', '"manifest"', MT.ociManifest, /not a JSON object/);
test(rejects, 'JSON null', 'null', MT.dockerManifest, /not a JSON object/);
test(rejects, 'a byte-order mark before the JSON', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), oci.bytes]), MT.ociManifest, /not valid JSON/);
test(rejects, 'Content-Type that contradicts mediaType', oci.bytes, MT.dockerManifest, /does not match/);
test(rejects, 'a Docker manifest sent as OCI', v2.bytes, MT.ociManifest, /does not match/);
test(rejects, 'an unknown Content-Type', oci.bytes, 'application/vnd.example.thing+json', /unsupported manifest media type/);
test(rejects, 'an unknown mediaType field under a generic Content-Type', json({ ...goodOci, mediaType: 'application/x-foo' }), 'application/json', /unsupported/);
test(rejects, 'a body that names no type, without Content-Type', json({ schemaVersion: 2, config: goodOci.config, layers: [] }), undefined, /media type unknown/);
test(rejects, 'schemaVersion 1 under an OCI Content-Type', unsigned.bytes, MT.ociManifest, /schemaVersion/);
test(rejects, 'schemaVersion 3', json({ ...goodOci, schemaVersion: 3 }), MT.ociManifest, /schemaVersion/);
test(rejects, 'a manifest without config', json({ schemaVersion: 2, mediaType: MT.ociManifest, layers: [] }), MT.ociManifest, /config/);
test(rejects, 'a manifest without layers', json({ schemaVersion: 2, mediaType: MT.ociManifest, config: goodOci.config }), MT.ociManifest, /layers/);
test(rejects, 'layers that are not an array', json({ ...goodOci, layers: {} }), MT.ociManifest, /layers/);
test(rejects, 'a descriptor without size', json({ ...goodOci, layers: [{ mediaType: MT.ociLayer, digest: l1.digest }] }), MT.ociManifest, /size/);
test(rejects, 'a negative size', json({ ...goodOci, layers: [{ ...desc(l1), size: -1 }] }), MT.ociManifest, /size/);
test(rejects, 'a fractional size', json({ ...goodOci, layers: [{ ...desc(l1), size: 1.5 }] }), MT.ociManifest, /size/);
test(rejects, 'a size given as a string', json({ ...goodOci, layers: [{ ...desc(l1), size: '12' }] }), MT.ociManifest, /size/);
test(rejects, 'a malformed digest', json({ ...goodOci, layers: [{ ...desc(l1), digest: 'sha256:xyz' }] }), MT.ociManifest, /digest/);
test(rejects, 'a digest of the wrong length', json({ ...goodOci, layers: [{ ...desc(l1), digest: `sha256:${'a'.repeat(63)}` }] }), MT.ociManifest, /digest/);
test(rejects, 'an unsupported digest algorithm', json({ ...goodOci, layers: [{ ...desc(l1), digest: `md5:${'a'.repeat(32)}` }] }), MT.ociManifest, /unsupported digest/);
test(rejects, 'a malformed media type in a descriptor', json({ ...goodOci, layers: [{ ...desc(l1), mediaType: 'not a type' }] }), MT.ociManifest, /mediaType/);
test(rejects, 'a non-string annotation', json({ ...goodOci, annotations: { a: 1 } }), MT.ociManifest, /annotations/);
test(rejects, 'a subject that is not a descriptor', json({ ...goodOci, subject: 'sha256:abc' }), MT.ociManifest, /subject/);
test(rejects, 'a layer url that is not http(s)', json({ ...goodOci, layers: [{ ...desc(l1), urls: ['file:///etc/passwd'] }] }), MT.ociManifest, /urls/);
test(rejects, 'an index without manifests', json({ schemaVersion: 2, mediaType: MT.ociIndex }), MT.ociIndex, /manifests/);
test(rejects, 'an index entry with a bad digest', json({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: [{ mediaType: MT.ociManifest, digest: 'nope', size: 1 }] }), MT.ociIndex, /digest/);
test(rejects, 'a Docker manifest without its mediaType field', json({ schemaVersion: 2, config: desc(config, MT.dockerConfig), layers: [] }), MT.dockerManifest, /mediaType/);
test(rejects, 'a Docker list entry without platform', json({ schemaVersion: 2, mediaType: MT.dockerList, manifests: [desc(v2, MT.dockerManifest)] }), MT.dockerList, /platform/);

const s1 = schema1Doc({ name: 'a', tag: 'b', layers: [l1, l2] }).doc;
test(rejects, 'schema 1 with more history than layers', json({ ...s1, history: [...s1.history, s1.history[0]] }), MT.schema1, /differ in length/);
test(rejects, 'schema 1 without layers', json({ ...s1, fsLayers: [], history: [] }), MT.schema1, /fsLayers/);
test(rejects, 'schema 1 whose v1Compatibility is not JSON', json({ ...s1, history: [{ v1Compatibility: '{' }, s1.history[1]] }), MT.schema1, /v1Compatibility is not JSON/);
test(rejects, 'schema 1 whose top v1Compatibility has no id', json({ ...s1, history: [{ v1Compatibility: '{"parent":"x"}' }, s1.history[1]] }), MT.schema1, /no valid id/);
test(rejects, 'schema 1 whose blobSum is malformed', json({ ...s1, fsLayers: [{ blobSum: 'x' }, s1.fsLayers[1]] }), MT.schema1, /blobSum/);
test(rejects, 'an unsigned schema 1 sent as prettyjws', unsigned.bytes, MT.schema1Signed, /no signatures/);

// ---- tampered signed schema 1 ------------------------------------------------------------------

function tamper(bytes: Buffer, edit: (doc: Record<string, unknown> & { signatures: Array<Record<string, unknown>> }) => void): Buffer {
  // edit the signatures array in place, keeping the payload prefix byte-identical
  const text = bytes.toString('utf8');
  const at = text.indexOf(',\n   "signatures"');
  const doc = JSON.parse(text) as Record<string, unknown> & { signatures: Array<Record<string, unknown>> };
  edit(doc);
  const tailStart = text.lastIndexOf('\n}');
  return Buffer.from(`${text.slice(0, at)},\n   "signatures": ${JSON.stringify(doc.signatures)}${text.slice(tailStart)}`);
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

test(rejects, 'a signed schema 1 whose payload was altered after signing', Buffer.from(signed.bytes.toString('utf8').replace('"architecture": "amd64"', '"architecture": "arm64"')), MT.schema1Signed, /does not verify/);
test(rejects, 'a signed schema 1 with a forged signature', tamper(signed.bytes, (d) => (d.signatures[0]!.signature = Buffer.alloc(64, 1).toString('base64url'))), MT.schema1Signed, /does not verify/);
test(rejects, 'a signed schema 1 with formatLength beyond the end', tamper(signed.bytes, (d) => (d.signatures[0]!.protected = b64({ formatLength: 10_000_000, formatTail: 'Cn0' }))), MT.schema1Signed, /beyond the end/);
test(rejects, 'a signed schema 1 with a non-numeric formatLength', tamper(signed.bytes, (d) => (d.signatures[0]!.protected = b64({ formatLength: '12', formatTail: 'Cn0' }))), MT.schema1Signed, /formatLength/);
test(rejects, 'a signed schema 1 whose protected header is not JSON', tamper(signed.bytes, (d) => (d.signatures[0]!.protected = Buffer.from('{nope').toString('base64url'))), MT.schema1Signed, /not JSON/);
test(rejects, 'a signed schema 1 with an unsupported algorithm', tamper(signed.bytes, (d) => ((d.signatures[0]!.header as Record<string, unknown>).alg = 'HS256')), MT.schema1Signed, /unsupported algorithm/);
test(rejects, 'a signed schema 1 with a key that is not a key', tamper(signed.bytes, (d) => ((d.signatures[0]!.header as Record<string, unknown>).jwk = { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' })), MT.schema1Signed, /not a valid public key/);
test(rejects, 'a signed schema 1 whose signature names no key', tamper(signed.bytes, (d) => delete (d.signatures[0]!.header as Record<string, unknown>).jwk), MT.schema1Signed, /names no key/);
test(rejects, 'a signed schema 1 with an empty signatures array', tamper(signed.bytes, (d) => (d.signatures = [])), MT.schema1Signed, /signatures/);

test('signatures that disagree on the payload are refused', (t) => {
  const { doc } = schema1Doc({ name: 'x', tag: 'y', layers: [l1] });
  const a = signSchema1(doc, [ecSigner(), ecSigner()]);
  const bad = tamper(a.bytes, (d) => {
    d.signatures[1]!.protected = b64({ formatLength: 5, formatTail: 'Cn0' });
  });
  const err = t.throws(() => parseManifest(bad, MT.schema1Signed), { instanceOf: VolregError });
  t.regex(err?.message ?? '', /disagree/);
});

test('schema errors name the failing path in the detail, without echoing values', (t) => {
  const err = t.throws(() => parseManifest(Buffer.from(json({ ...goodOci, layers: [{ ...desc(l1), size: 'SECRET' }] })), MT.ociManifest), {
    instanceOf: VolregError,
  });
  const detail = err?.detail as { schema: string; errors: Array<{ path: string }> };
  t.is(detail.schema, 'oci-image-manifest');
  t.true(detail.errors.some((e) => e.path === '/layers/0/size'));
  t.false(JSON.stringify(detail).includes('SECRET'));
});

test('unknown extra fields are allowed (the conformance suite sends them)', (t) => {
  const body = Buffer.from(json({ ...goodOci, 'x-custom': { a: [1, 2] }, config: { ...goodOci.config, 'x-field': true } }));
  t.is<string, string>(parseManifest(body, MT.ociManifest).digest, sha256(body));
});
