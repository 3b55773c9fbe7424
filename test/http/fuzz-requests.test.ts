import test from 'ava';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { MT } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, pushBlobs, request, type Reply } from '../helpers/oci-client.ts';
import { BLOBS, MANIFESTS } from '../helpers/model-content.ts';
import { BAD_DIGESTS } from '../helpers/model-mutations.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { isErrorEnvelope, rawRequest } from '../helpers/raw-request.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Generated /v2 requests: every route and method, with hostile headers (Content-Range, Range,
 * If-*, Accept, Digest, Content-Type, chunked bodies), query strings (n, last, digest,
 * mount/from, artifactType, tag, repeated parameters) and names and references (encoded
 * slashes, %2e%2e, unicode, upper case, length limits). Every answer comes within a few seconds
 * and is 2xx, 3xx, or a 4xx in the OCI error envelope, never a 5xx; the server stays healthy; a
 * refused request changes nothing, and nothing ever changes the repository no request names.
 */

const FIXED = 'fuzz/fixed';
const SCRATCH = 'fuzz/scratch';
let server: TestServer;
let url: string;
let session: string;

async function pushImage(repo: string): Promise<void> {
  await pushBlobs(url, repo, [BLOBS.cfgOci0, BLOBS.l0, BLOBS.cfgOci1, BLOBS.l1, BLOBS.l2, BLOBS.empty, BLOBS.l3]);
  for (const [name, ref] of [
    ['ociA', 'v1'],
    ['ociB', 'v2'],
    ['ociIdx', 'list'],
    ['sbomA', null],
  ] as const) {
    const m = MANIFESTS[name];
    const r = await request(url, `/v2/${repo}/manifests/${ref ?? m.digest}`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes });
    if (r.status !== 201) throw new Error(`seeding ${repo} ${name}: ${r.status} ${r.body.toString()}`);
  }
}

test.before(async () => {
  server = await startTestServer({ label: 'fuzz_requests' });
  url = server.url;
  await pushImage(FIXED);
  await pushImage(SCRATCH);
  const open = await request(url, `/v2/${SCRATCH}/blobs/uploads/`, { method: 'POST' });
  session = String(open.headers.location).split('/').pop()!;
  const chunk = await request(url, `/v2/${SCRATCH}/blobs/uploads/${session}`, { method: 'PATCH', headers: { 'Content-Range': '0-9' }, body: Buffer.alloc(10, 1) });
  if (chunk.status !== 202) throw new Error(`seeding the session: ${chunk.status}`);
});
test.after.always(async () => {
  await server?.close();
});

// ---- what a request may change --------------------------------------------------------------

async function repoState(repo: string): Promise<unknown> {
  const show = (r: Reply): unknown => [r.status, r.headers['docker-content-digest'], r.body.length];
  const replies = await Promise.all([
    request(url, `/v2/${repo}/tags/list`),
    ...['v1', 'v2', 'list'].map((tag) => request(url, `/v2/${repo}/manifests/${tag}`, { headers: { Accept: ACCEPT_ALL } })),
    ...(['ociA', 'ociB', 'ociIdx', 'sbomA'] as const).map((m) => request(url, `/v2/${repo}/manifests/${MANIFESTS[m].digest}`, { method: 'HEAD' })),
    ...(['cfgOci0', 'l0', 'l1', 'l2', 'l3', 'empty'] as const).map((b) => request(url, `/v2/${repo}/blobs/${BLOBS[b].digest}`, { method: 'HEAD' })),
    request(url, `/v2/${repo}/referrers/${MANIFESTS.ociA.digest}`),
  ]);
  return [replies[0]!.body.toString(), ...replies.slice(1).map(show)];
}

async function everything(): Promise<unknown> {
  const [fixed, scratch, catalog, upload] = await Promise.all([
    repoState(FIXED),
    repoState(SCRATCH),
    request(url, '/v2/_catalog'),
    request(url, `/v2/${SCRATCH}/blobs/uploads/${session}`),
  ]);
  return { fixed, scratch, catalog: catalog.body.toString(), upload: [upload.status, upload.headers.range] };
}

// ---- generated requests ---------------------------------------------------------------------

const NAMES = [
  SCRATCH,
  SCRATCH,
  // the name is percent-decoded before it is read (as distribution's router reads it), so these name scratch
  'fuzz%2fscratch',
  'fuzz%2Fscratch',
  'fuzz/scratch/%2e%2e/fixed',
  'fuzz/scratch/../fixed',
  'fuzz/%2e%2e/fuzz/fixed',
  'fuzz/./fixed',
  'fuzz//fixed',
  'Fuzz/Fixed',
  'fuzz/fix%C3%A9d',
  'fuzz/fixed%00',
  'fuzz/fixed%20',
  '%20',
  '_catalog',
  'a',
  `a/${'b'.repeat(253)}`,
  `a/${'b'.repeat(254)}`,
  'a__b--c.d/e',
  'a___b',
  '-a',
  'a.',
  'v2',
  'fuzz/scratch/blobs/uploads',
  'fuzz/scratch/manifests/v1',
];

const REFERENCES = ['v1', 'list', 'V1', 'nope', 'v1%2F..', '%2e%2e', '..', '.', `a${'b'.repeat(127)}`, `a${'b'.repeat(128)}`, 'la%C3%A9test', 'latest%00', MANIFESTS.ociA.digest, MANIFESTS.ociIdx.digest, BLOBS.l0.digest, ...BAD_DIGESTS.filter((d) => d && !d.includes('\n')).map(encodeURIComponent)];

const DIGEST_VALUES = [BLOBS.l0.digest, BLOBS.l2.digest, `sha256:${'0'.repeat(64)}`, ...BAD_DIGESTS.filter((d) => d && !d.includes('\n'))];

const queryPairArb: fc.Arbitrary<[string, string]> = fc.oneof(
  fc.tuple(fc.constantFrom('n', 'n', 'last'), fc.constantFrom('0', '1', '2', '-1', '1.5', '1e3', '99999999999999999999999', '', 'abc', '0x10', ' 1', 'v1', 'fuzz/fixed', 'ZZZ', '%00', 'é')),
  fc.tuple(fc.constantFrom('digest', 'mount'), fc.constantFrom(...DIGEST_VALUES).map(encodeURIComponent)),
  fc.tuple(fc.constant('from'), fc.constantFrom(FIXED, SCRATCH, 'fuzz%2Fscratch', 'FUZZ/FIXED', '', '..', 'fuzz/nope')),
  fc.tuple(fc.constant('artifactType'), fc.constantFrom('', 'a/b', 'application/vnd.example.sbom.v1', 'application/vnd.example.att.v1+json', 'application%2Fx', '*/*', '%zz', 'é')),
  fc.tuple(fc.constantFrom('tag', 'digest-algorithm'), fc.constantFrom('v9', '', '..', 'sha512', 'sha256', 'md5', 'a'.repeat(200))),
  fc.tuple(fc.constantFrom('x', '', '%', '&', 'n[]'), fc.constantFrom('', '1', '%', '%%')),
);

const HEADER_VALUES: Record<string, string[]> = {
  'Content-Range': ['0-0', '0-9', '10-19', '5-1', '-1', 'bytes 0-9/10', 'bytes */10', '0-99999999999999999999', 'abc', '0-', '1-2-3', ' 10 - 19 ', 'bytes=0-9'],
  Range: ['bytes=0-0', 'bytes=-0', 'bytes=5-1', 'bytes=0-9,100-109', 'bytes=99999999999999999999-', 'items=0-1', 'bytes=', 'bytes=-', `bytes=${'0-1,'.repeat(300)}0-1`, 'bytes=-99999999999999999999', 'bytes=1-'],
  'If-Match': ['*', `"${MANIFESTS.ociA.digest}"`, `W/"${MANIFESTS.ociA.digest}"`, 'garbage', '"', '"a", "b"', ''],
  'If-None-Match': ['*', `"${MANIFESTS.ociA.digest}"`, `"${BLOBS.l0.digest}"`, 'W/"x"', 'garbage', '"', ''],
  'If-Range': [`"${BLOBS.l0.digest}"`, 'Wed, 21 Oct 2015 07:28:00 GMT', 'W/"x"', 'garbage'],
  'If-Modified-Since': ['Wed, 21 Oct 2015 07:28:00 GMT', 'garbage', '0'],
  Accept: [ACCEPT_ALL, '*/*;q=2', ';;;', 'application/*', 'a/b;q=abc', ','.repeat(1000), MT.ociIndex + ';q=0', 'text/html', '', `${MT.schema1};q=0.001`],
  Digest: ['sha-256=x', 'sha-256=', 'sha-512=!!!', 'md5=abc', `sha-256=${Buffer.from(BLOBS.l0.digest.slice(7), 'hex').toString('base64')}`, 'sha-256=a, sha-256=b'],
  'Content-Type': [MT.ociManifest, MT.ociIndex, MT.schema1Signed, 'application/octet-stream', 'application/json', 'text/plain', '', ';', 'multipart/byteranges; boundary=x'],
  Expect: ['100-continue', 'nonsense'],
};

const headersArb = fc.uniqueArray(fc.constantFrom(...Object.keys(HEADER_VALUES)), { maxLength: 4 }).chain((names) =>
  fc.tuple(...names.map((n) => fc.constantFrom(...HEADER_VALUES[n]!).map((v) => [n, v] as const))).map((pairs) => Object.fromEntries(pairs) as Record<string, string>),
);

const bodyArb = fc.oneof(
  fc.constant(Buffer.alloc(0)),
  fc.constant(BLOBS.l0.bytes),
  fc.constant(Buffer.alloc(10, 1)),
  fc.constant(MANIFESTS.ociA.bytes),
  fc.constant(MANIFESTS.s1s.bytes),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
);

const routeArb = fc.oneof(
  fc.tuple(fc.constantFrom(...NAMES), fc.constantFrom(...REFERENCES)).map(([n, r]) => `/v2/${n}/manifests/${r}`),
  fc.tuple(fc.constantFrom(...NAMES), fc.constantFrom(...DIGEST_VALUES, ...REFERENCES)).map(([n, d]) => `/v2/${n}/blobs/${d}`),
  fc.constantFrom(...NAMES).map((n) => `/v2/${n}/blobs/uploads/`),
  fc.tuple(fc.constantFrom(...NAMES), fc.constantFrom('SESSION', 'SESSION', 'nope', '..', '%2e%2e', '00000000-0000-0000-0000-000000000000', 'a'.repeat(300))).map(([n, u]) => `/v2/${n}/blobs/uploads/${u}`),
  fc.constantFrom(...NAMES).map((n) => `/v2/${n}/tags/list`),
  fc.constant('/v2/_catalog'),
  fc.tuple(fc.constantFrom(...NAMES), fc.constantFrom(...DIGEST_VALUES, MANIFESTS.ociA.digest, MANIFESTS.ociB.digest)).map(([n, d]) => `/v2/${n}/referrers/${d}`),
);

const caseArb = fc.record({
  method: fc.constantFrom('GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE'),
  route: routeArb,
  query: fc.array(queryPairArb, { maxLength: 3 }),
  headers: headersArb,
  body: bodyArb,
  chunked: fc.boolean(),
});

test('a generated /v2 request is never a 5xx or a hang, a 4xx carries the error envelope, and a refused one changes nothing', async (t) => {
  const property = fc.asyncProperty(caseArb, async (c) => {
    const before = await everything();
    const query = c.query.map(([k, v]) => `${k}=${v}`).join('&');
    // what a client could put on the wire: anything outside printable ASCII percent-encoded
    const path = `${c.route.replace('SESSION', session)}${query ? `?${query}` : ''}`.replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch));
    const r = await rawRequest(url, c.method, path, c.headers, c.method === 'GET' || c.method === 'HEAD' ? Buffer.alloc(0) : c.body, { chunked: c.chunked && c.method !== 'GET' && c.method !== 'HEAD' });
    const what = `${c.method} ${path} ${JSON.stringify(c.headers)}: ${r.status} ${r.body.toString('utf8').slice(0, 300)}`;
    if (r.status >= 500 || r.status < 200) throw new Error(`server error: ${what}`);
    if (r.status >= 400 && c.method !== 'HEAD' && !isErrorEnvelope(r.body)) throw new Error(`no error envelope: ${what}`);
    const health = await request(url, '/v2/');
    if (health.status !== 200) throw new Error(`unhealthy after ${what}`);
    const after = (await everything()) as { fixed: unknown };
    if (!isDeepStrictEqual(after.fixed, (before as { fixed: unknown }).fixed)) throw new Error(`the repository no request names changed after ${what}`);
    if (r.status >= 400 && !isDeepStrictEqual(after, before)) throw new Error(`a refused request changed ${JSON.stringify({ before, after })}: ${what}`);
    if (r.status < 400) {
      // a request that took effect on scratch: put it back as it was for the next case
      session = await restoreScratch(session);
    }
  });
  await t.notThrowsAsync(fc.assert(property, { seed: fuzzSeed(777), numRuns: fuzzRuns(150), includeErrorInReport: true }));
});

/** Scratch's content and its session back as seeded (a later case compares against them). */
async function restoreScratch(current: string): Promise<string> {
  await pushImage(SCRATCH);
  const status = await request(url, `/v2/${SCRATCH}/blobs/uploads/${current}`);
  if (status.status === 204 && status.headers.range === '0-9') return current;
  const open = await request(url, `/v2/${SCRATCH}/blobs/uploads/`, { method: 'POST' });
  const fresh = String(open.headers.location).split('/').pop()!;
  await request(url, `/v2/${SCRATCH}/blobs/uploads/${fresh}`, { method: 'PATCH', headers: { 'Content-Range': '0-9' }, body: Buffer.alloc(10, 1) });
  return fresh;
}
