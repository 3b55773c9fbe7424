import test from 'ava';
import { blobOf, configBlob, MT, ociIndex, ociManifest, randomBlob, sha256, type Built } from '../helpers/manifest-fixtures.ts';
import { errorCode, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** GET /v2/<name>/referrers/<digest>: the OCI 1.1 referrers index and its artifactType filter. */

let server: TestServer;
let url: string;
test.before(async () => {
  server = await startTestServer({ label: 'http_referrers' });
  url = server.url;
});
test.after.always(async () => {
  await server?.close();
});

interface Index {
  schemaVersion: number;
  mediaType: string;
  manifests: Array<{ mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }>;
}

const referrers = (repo: string, digest: string, query = '') => request(url, `/v2/${repo}/referrers/${digest}${query}`);

async function push(repo: string, m: Built, ref = m.digest): Promise<void> {
  const r = await putManifest(url, repo, ref, m);
  if (r.status !== 201) throw new Error(`push failed: ${r.status} ${r.body.toString()}`);
}

/** A subject image and, pointing at it: two artifacts of different types, one typed by config only, and an index. */
async function scenario(): Promise<{ repo: string; subject: Built; sbom: Built; sig: Built; byConfig: Built; index: Built }> {
  const repo = repoName('refs');
  const config = configBlob();
  const empty = blobOf('{}');
  const layer = randomBlob();
  const cfg2 = blobOf('{"kind":"scan"}');
  await pushBlobs(url, repo, [config, empty, layer, cfg2]);
  const subject = ociManifest({ config, layers: [layer] });
  await push(repo, subject, 'image');
  const sbom = ociManifest({ config: empty, configMediaType: MT.ociEmpty, layers: [layer], subject, artifactType: 'application/vnd.example.sbom.v1', annotations: { 'org.example.format': 'json' } });
  const sig = ociManifest({ config: empty, configMediaType: MT.ociEmpty, layers: [layer], subject, artifactType: 'application/vnd.example.sig.v1' });
  const byConfig = ociManifest({ config: cfg2, configMediaType: 'application/vnd.example.scan.config.v1+json', layers: [], subject });
  const index = ociIndex([{ manifest: subject }], { subject, annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' } });
  for (const m of [sbom, sig, byConfig, index]) await push(repo, m);
  return { repo, subject, sbom, sig, byConfig, index };
}

test('the referrers of a digest are an OCI index of descriptors with artifact types and annotations', async (t) => {
  const { repo, subject, sbom, sig, byConfig, index } = await scenario();
  const r = await referrers(repo, subject.digest);
  t.is(r.status, 200);
  t.is(r.headers['content-type'], MT.ociIndex);
  t.is(r.headers['oci-filters-applied'], undefined);
  const body = r.json<Index>();
  t.is(body.schemaVersion, 2);
  t.is(body.mediaType, MT.ociIndex);
  const byDigest = new Map(body.manifests.map((d) => [d.digest, d]));
  t.is(body.manifests.length, 4);
  t.deepEqual(byDigest.get(sbom.digest), {
    mediaType: MT.ociManifest,
    digest: sbom.digest,
    size: sbom.size,
    artifactType: 'application/vnd.example.sbom.v1',
    annotations: { 'org.example.format': 'json' },
  });
  t.is(byDigest.get(sig.digest)!.artifactType, 'application/vnd.example.sig.v1');
  // an image manifest without artifactType is typed by its config
  t.is(byDigest.get(byConfig.digest)!.artifactType, 'application/vnd.example.scan.config.v1+json');
  // an index without artifactType has none
  t.is(byDigest.get(index.digest)!.mediaType, MT.ociIndex);
  t.false('artifactType' in byDigest.get(index.digest)!);
  t.deepEqual(byDigest.get(index.digest)!.annotations, { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' });
  // the subject itself refers to nothing
  t.deepEqual((await referrers(repo, sbom.digest)).json<Index>().manifests, []);
});

test('artifactType filters, and says so in OCI-Filters-Applied', async (t) => {
  const { repo, subject, sbom } = await scenario();
  const r = await referrers(repo, subject.digest, `?artifactType=${encodeURIComponent('application/vnd.example.sbom.v1')}`);
  t.is(r.status, 200);
  t.is(r.headers['oci-filters-applied'], 'artifactType');
  t.deepEqual(
    r.json<Index>().manifests.map((d) => d.digest),
    [sbom.digest],
  );
  const none = await referrers(repo, subject.digest, '?artifactType=application/x-nothing');
  t.is(none.headers['oci-filters-applied'], 'artifactType');
  t.deepEqual(none.json<Index>().manifests, []);
});

test('an artifactType with a + sent unescaped (a space once decoded) filters as the + it was', async (t) => {
  const { repo, subject, byConfig } = await scenario();
  const type = 'application/vnd.example.scan.config.v1+json';
  for (const q of [type, encodeURIComponent(type)]) {
    const r = await referrers(repo, subject.digest, `?artifactType=${q}`);
    t.is(r.status, 200, q);
    t.is(r.headers['oci-filters-applied'], 'artifactType', q);
    t.deepEqual(r.json<Index>().manifests.map((d) => d.digest), [byConfig.digest], q);
  }
  const twice = await referrers(repo, subject.digest, `?artifactType=a&artifactType=b`);
  t.is(twice.status, 400);
  t.is(errorCode(twice), 'BAD_REQUEST');
});

test('no referrers, an unknown repository: an empty index, never 404', async (t) => {
  const { repo } = await scenario();
  for (const [r, d] of [
    [repo, sha256('no such subject')],
    [repoName('nobody'), sha256('x')],
  ] as const) {
    const res = await referrers(r, d);
    t.is(res.status, 200);
    t.is(res.headers['content-type'], MT.ociIndex);
    t.deepEqual(res.json(), { schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] });
  }
});

test('a referrer pushed before its subject is listed; a deleted one is not', async (t) => {
  const repo = repoName('order');
  const config = configBlob();
  const empty = blobOf('{}');
  await pushBlobs(url, repo, [config, empty]);
  const subject = ociManifest({ config, layers: [] });
  const early = ociManifest({ config: empty, configMediaType: MT.ociEmpty, layers: [], subject, artifactType: 'application/x.early' });
  await push(repo, early);
  t.deepEqual(
    (await referrers(repo, subject.digest)).json<Index>().manifests.map((d) => d.digest),
    [early.digest],
  );
  await push(repo, subject);
  t.is((await request(url, `/v2/${repo}/manifests/${early.digest}`, { method: 'DELETE' })).status, 202);
  t.deepEqual((await referrers(repo, subject.digest)).json<Index>().manifests, []);
});

test('referrers are per repository', async (t) => {
  const { repo, subject } = await scenario();
  const other = repoName('other');
  const config = configBlob();
  await pushBlobs(url, other, [config]);
  t.true((await referrers(repo, subject.digest)).json<Index>().manifests.length > 0);
  t.deepEqual((await referrers(other, subject.digest)).json<Index>().manifests, []);
});

test('an invalid digest is 400', async (t) => {
  const repo = repoName('bad');
  for (const d of ['sha256:short', 'nodigest', `sha256:${'G'.repeat(64)}`, `sha384:${'a'.repeat(96)}`, 'sha256:']) {
    const r = await referrers(repo, d);
    t.is(r.status, 400, d);
    t.is(errorCode(r), 'DIGEST_INVALID', d);
  }
  const twice = await referrers(repo, sha256('x'), '?artifactType=a/b&artifactType=c/d');
  t.is(twice.status, 400);
});

test('annotations are listed as pushed, whatever their keys (__proto__ is a key like any other)', async (t) => {
  const repo = repoName('refs-keys');
  const config = configBlob();
  const empty = blobOf('{}');
  await pushBlobs(url, repo, [config, empty]);
  const subject = ociManifest({ config, layers: [] });
  await push(repo, subject, 'image');
  const annotations = JSON.parse('{"__proto__":"x","constructor":"y","b":"c"}') as Record<string, string>;
  const artifact = ociManifest({ config: empty, configMediaType: MT.ociEmpty, layers: [], subject, artifactType: 'application/vnd.example.keys.v1', annotations });
  await push(repo, artifact);
  const listed = (await referrers(repo, subject.digest)).json<Index>().manifests;
  t.is(listed.length, 1);
  t.deepEqual(Object.entries(listed[0]!.annotations ?? {}), [
    ['__proto__', 'x'],
    ['constructor', 'y'],
    ['b', 'c'],
  ]);
});
