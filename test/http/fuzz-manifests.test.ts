import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { MT, sha256 } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, pushBlobs, request, type Reply } from '../helpers/oci-client.ts';
import { BLOB_NAMES, BLOBS, MANIFEST_NAMES, MANIFESTS, type ManifestName } from '../helpers/model-content.ts';
import { BAD_DIGESTS, contentTypeArb, mutate, mutationArb } from '../helpers/model-mutations.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Manifest pushes of mutated bodies (every media type, wrong types, missing and extra fields,
 * out-of-range numbers, deep nesting, duplicate keys, invalid UTF-8, a BOM, bad digests, broken
 * schema 1 signatures) with any Content-Type, by tag and by digest. Whatever is sent, the answer
 * is 201 or a 4xx in the OCI error envelope, never a 5xx; a refused push changes nothing; an
 * accepted one serves exactly its bytes and is a manifest the OCI rules allow.
 */

const REPO = 'fuzz/manifests';
let server: TestServer;
let url: string;

// The tests run one at a time: the property compares the repository before and after each push.

/** every blob and manifest of the catalogue, and a tag holding a schema 2 and a schema 1 manifest */
async function seed(): Promise<void> {
  await pushBlobs(url, REPO, BLOB_NAMES.map((b) => BLOBS[b]));
  const order = [...MANIFEST_NAMES].sort((a, b) => MANIFESTS[a].children.length - MANIFESTS[b].children.length);
  for (const name of order) {
    const m = MANIFESTS[name];
    const r = await request(url, `/v2/${REPO}/manifests/${m.digest}`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes });
    if (r.status !== 201) throw new Error(`seeding ${name}: ${r.status} ${r.body.toString()}`);
  }
  for (const name of ['ociIdx', 's1u'] as const) {
    const m = MANIFESTS[name];
    const r = await request(url, `/v2/${REPO}/manifests/fuzz`, { method: 'PUT', headers: { 'Content-Type': m.mediaType }, body: m.bytes });
    if (r.status !== 201) throw new Error(`tagging ${name}: ${r.status}`);
  }
}

test.before(async () => {
  server = await startTestServer({ label: 'fuzz_manifests' });
  url = server.url;
  await seed();
});
test.after.always(async () => {
  await server?.close();
});

/** What a push could change: the tags, what the tag serves to each kind of client, whether the body's digest is held, the referrers. */
async function observable(bodyDigest: string): Promise<unknown> {
  const show = (r: Reply): unknown => ({ status: r.status, digest: r.headers['docker-content-digest'], length: r.body.length });
  const [tags, all, s1, held, referrers] = await Promise.all([
    request(url, `/v2/${REPO}/tags/list`),
    request(url, `/v2/${REPO}/manifests/fuzz`, { headers: { Accept: ACCEPT_ALL } }),
    request(url, `/v2/${REPO}/manifests/fuzz`, { headers: { Accept: MANIFESTS.s1u.mediaType } }),
    request(url, `/v2/${REPO}/manifests/${bodyDigest}`, { method: 'HEAD' }),
    request(url, `/v2/${REPO}/referrers/${MANIFESTS.ociA.digest}`),
  ]);
  return { tags: tags.body.toString(), all: show(all), s1: show(s1), held: held.status, referrers: referrers.body.toString() };
}

function envelopeCode(r: Reply): string | undefined {
  try {
    const errors = r.json<{ errors?: Array<{ code?: unknown; message?: unknown }> }>().errors;
    const first = errors?.[0];
    return first && typeof first.code === 'string' && typeof first.message === 'string' ? first.code : undefined;
  } catch {
    return undefined;
  }
}

const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/** The descriptor rules of the OCI image spec, checked on what a server accepted. */
function descriptorProblems(doc: unknown, at = ''): string[] {
  if (doc === null || typeof doc !== 'object') return [];
  const out: string[] = [];
  const d = doc as Record<string, unknown>;
  if ('digest' in d && 'size' in d) {
    if (typeof d.digest !== 'string' || !DIGEST.test(d.digest)) out.push(`${at}/digest ${JSON.stringify(d.digest)}`);
    if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) out.push(`${at}/size ${JSON.stringify(d.size)}`);
    if (typeof d.mediaType !== 'string' || !MEDIA_TYPE.test(d.mediaType)) out.push(`${at}/mediaType ${JSON.stringify(d.mediaType)}`);
  }
  for (const [k, v] of Object.entries(d)) if (k !== 'annotations') out.push(...descriptorProblems(v, `${at}/${k}`));
  return out;
}

const caseArb = fc.record({
  base: fc.constantFrom(...MANIFEST_NAMES),
  mutations: fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
  contentType: fc.oneof(fc.constant('own' as const), contentTypeArb),
  reference: fc.constantFrom('tag' as const, 'digest' as const, 'other-digest' as const, 'sha512' as const),
});

test.serial('a mutated manifest push is 201 or a 4xx in the error envelope, and a refused one changes nothing', async (t) => {
  const property = fc.asyncProperty(caseArb, async (c) => {
    const base = MANIFESTS[c.base as ManifestName];
    const body = mutate(base.bytes, c.mutations);
    const digest = sha256(body);
    const reference = { tag: 'fuzz', digest, 'other-digest': base.digest, sha512: `sha512:${createHash('sha512').update(body).digest('hex')}` }[c.reference];
    const contentType = c.contentType === 'own' ? base.mediaType : c.contentType;
    const before = await observable(digest);
    const r = await request(url, `/v2/${REPO}/manifests/${reference}`, { method: 'PUT', headers: contentType === null ? {} : { 'Content-Type': contentType }, body });
    if (r.status >= 500 || r.status < 200) throw new Error(`${r.status}: ${r.body.toString().slice(0, 300)}`);
    if (r.status !== 201) {
      if (r.status < 400 || envelopeCode(r) === undefined) throw new Error(`${r.status} without an error envelope: ${r.body.toString().slice(0, 300)}`);
      const after = await observable(digest);
      if (!isDeepStrictEqual(after, before)) throw new Error(`a refused push (${r.status} ${envelopeCode(r)}) changed ${JSON.stringify({ before, after })}`);
      return;
    }
    const problems = descriptorProblems(JSON.parse(body.toString('utf8')));
    if (problems.length > 0) throw new Error(`accepted a manifest with bad descriptors: ${problems.join(', ')}`);
    const stored = r.headers['docker-content-digest'] as string;
    const got = await request(url, `/v2/${REPO}/manifests/${stored}`);
    // a signed schema 1 manifest is named by its payload: pushed again with other signatures
    // (or other white space around them) it keeps the bytes first stored, equally valid
    const samePayload = got.headers['content-type'] === MT.schema1Signed && got.headers['docker-content-digest'] === stored;
    if (got.status !== 200 || !(got.body.equals(body) || samePayload)) throw new Error(`accepted ${stored} but serves ${got.status} ${got.body.length} bytes`);
  });
  await t.notThrowsAsync(fc.assert(property, { seed: fuzzSeed(4242), numRuns: fuzzRuns(300), includeErrorInReport: true }));
});

test.serial('a bad digest in the URL of a push or read is a 4xx in the error envelope', async (t) => {
  for (const bad of BAD_DIGESTS.filter((d) => d !== '' && !d.includes('\n'))) {
    const ref = encodeURIComponent(bad);
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const r = await request(url, `/v2/${REPO}/manifests/${ref}`, { method, ...(method === 'PUT' ? { headers: { 'Content-Type': MANIFESTS.ociA.mediaType }, body: MANIFESTS.ociA.bytes } : {}) });
      t.true(r.status >= 400 && r.status < 500 && envelopeCode(r) !== undefined, `${method} ${bad}: ${r.status} ${r.body.toString().slice(0, 200)}`);
    }
  }
});

test.serial('manifests at the 4 MiB limit are taken whole and one byte more is 413 MANIFEST_INVALID', async (t) => {
  const limit = 4 * 1024 * 1024;
  const base = MANIFESTS.ociB.bytes;
  const padded = (size: number): Buffer => Buffer.concat([base, Buffer.alloc(size - base.length, 0x20)]);
  const at = await request(url, `/v2/${REPO}/manifests/edge`, { method: 'PUT', headers: { 'Content-Type': MANIFESTS.ociB.mediaType }, body: padded(limit) });
  t.is(at.status, 201, at.body.toString());
  t.is(at.headers['docker-content-digest'], sha256(padded(limit)));
  const over = await request(url, `/v2/${REPO}/manifests/edge`, { method: 'PUT', headers: { 'Content-Type': MANIFESTS.ociB.mediaType }, body: padded(limit + 1) });
  t.is(over.status, 413);
  t.is(envelopeCode(over), 'MANIFEST_INVALID');
  const still = await request(url, `/v2/${REPO}/manifests/edge`, { method: 'HEAD', headers: { Accept: ACCEPT_ALL } });
  t.is(still.headers['docker-content-digest'], sha256(padded(limit)), 'the tag still holds the manifest of exactly 4 MiB');
});
