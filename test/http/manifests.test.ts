import test from 'ava';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { blobPath } from '../../src/storage/paths.ts';
import type { Digest } from '../../src/domain/digest.ts';
import { request as httpRequest } from 'node:http';
import { collections, UNIT_TYPES } from '../../src/metadata/collections.ts';
import {
  blobOf,
  configBlob,
  dockerList,
  dockerManifest,
  MT,
  ociIndex,
  ociManifest,
  randomBlob,
  schema1Signed,
  schema1Unsigned,
  sha256,
  type Blob,
  type Built,
} from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, errorCode, errorDetail, getManifest, pushBlobs, putManifest, repoName, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { MAX_TAGS_PER_PUSH } from '../../src/services/manifest-service.ts';
import { MAX_V1_TAGS_PER_REPO } from '../../src/metadata/tag-repository.ts';
import { HELD_BODY_BYTES } from '../../src/http/body.ts';

/**
 * GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference> on a real server: every media type,
 * the headers, Accept-driven tag resolution, deletion, and hostile input.
 */

let server: TestServer;
let url: string;
test.before(async () => {
  server = await startTestServer({ label: 'http_manifests' });
  url = server.url;
});
test.after.always(async () => {
  await server?.close();
});

const tagUnits = (repo: string, name: string) => collections(server.db).tags.find({ repo_id: repo, name }).toArray();

/** An OCI image whose blobs are pushed to `repo`. */
async function pushedImage(repo: string, layers = 2): Promise<{ manifest: Built; config: Blob; layers: Blob[] }> {
  const config = configBlob();
  const ls = Array.from({ length: layers }, () => randomBlob(128));
  await pushBlobs(url, repo, [config, ...ls]);
  return { manifest: ociManifest({ config, layers: ls }), config, layers: ls };
}

async function pushedDockerImage(repo: string): Promise<Built> {
  const config = configBlob();
  const layer = randomBlob(64);
  await pushBlobs(url, repo, [config, layer]);
  return dockerManifest({ config, layers: [layer] });
}

// ---- push and pull of every media type ------------------------------------------------------

const roundTrip = test.macro({
  async exec(t, _label: string, make: (repo: string) => Promise<{ manifest: Built; digest: string }>) {
    const repo = repoName('rt');
    const { manifest, digest } = await make(repo);
    const put = await putManifest(url, repo, 'v1', manifest);
    t.is(put.status, 201, put.body.toString());
    t.is(put.headers['docker-content-digest'], digest);
    t.is(put.headers.location, `/v2/${repo}/manifests/${digest}`);
    t.is(put.headers['content-length'], '0');

    for (const ref of ['v1', digest]) {
      const got = await getManifest(url, repo, ref, manifest.mediaType);
      t.is(got.status, 200);
      t.true(got.body.equals(manifest.bytes), 'the exact bytes as pushed');
      t.is(got.headers['content-type'], manifest.mediaType);
      t.is(got.headers['docker-content-digest'], digest);
      t.is(got.headers['content-length'], String(manifest.bytes.length));
      t.is(got.headers.etag, `"${digest}"`);

      const head = await getManifest(url, repo, ref, manifest.mediaType, 'HEAD');
      t.is(head.status, 200);
      t.is(head.body.length, 0);
      t.is(head.headers['content-length'], String(manifest.bytes.length));
      t.is(head.headers['docker-content-digest'], digest);
      t.is(head.headers['content-type'], manifest.mediaType);
    }
    // the Location header is a pullable URL
    const loc = await getManifest(url, repo, put.headers.location!.split('/manifests/')[1]!, ACCEPT_ALL);
    t.true(loc.body.equals(manifest.bytes));
  },
  title: (_t, label: string) => `push and pull ${label}`,
});

test(roundTrip, 'an OCI image manifest', async (repo) => {
  const { manifest } = await pushedImage(repo);
  return { manifest, digest: manifest.digest };
});
test(roundTrip, 'a Docker v2 schema 2 manifest', async (repo) => {
  const m = await pushedDockerImage(repo);
  return { manifest: m, digest: m.digest };
});
test(roundTrip, 'an OCI image index', async (repo) => {
  const a = await pushedImage(repo);
  const b = await pushedImage(repo);
  for (const m of [a.manifest, b.manifest]) t_ok(await putManifest(url, repo, m.digest, m));
  const idx = ociIndex([
    { manifest: a.manifest, platform: { os: 'linux', architecture: 'amd64' } },
    { manifest: b.manifest, platform: { os: 'linux', architecture: 'arm64' } },
  ]);
  return { manifest: idx, digest: idx.digest };
});
test(roundTrip, 'a Docker manifest list', async (repo) => {
  const a = await pushedDockerImage(repo);
  t_ok(await putManifest(url, repo, a.digest, a));
  const list = dockerList([{ manifest: a, platform: { os: 'linux', architecture: 'amd64' } }]);
  return { manifest: list, digest: list.digest };
});
test(roundTrip, 'an unsigned schema 1 manifest', async (repo) => {
  const layer = randomBlob();
  await pushBlobs(url, repo, [layer]);
  const m = schema1Unsigned({ name: repo, tag: 'v1', layers: [layer] });
  return { manifest: m, digest: m.digest };
});
test(roundTrip, 'a signed schema 1 manifest (digest of the payload, bytes with signatures)', async (repo) => {
  const layer = randomBlob();
  await pushBlobs(url, repo, [layer]);
  const m = schema1Signed({ name: repo, tag: 'v1', layers: [layer, layer] });
  return { manifest: m, digest: m.payloadDigest };
});

function t_ok(r: { status: number; body: Buffer }): void {
  if (r.status !== 201) throw new Error(`expected 201, got ${r.status}: ${r.body.toString()}`);
}

test('what a tag answers is never served from a cache without asking: no-cache, and the ETag that answers a revalidation', async (t) => {
  const repo = repoName('cache');
  const first = (await pushedImage(repo)).manifest;
  t.is((await putManifest(url, repo, 'latest', first)).status, 201);
  const got = await getManifest(url, repo, 'latest', first.mediaType);
  t.is(got.headers['cache-control'], 'no-cache');
  const list = await request(url, `/v2/${repo}/tags/list`);
  t.is(list.headers['cache-control'], 'no-cache');
  // the tag moves: a revalidation with the old ETag gets the new manifest, not a 304
  const second = (await pushedImage(repo)).manifest;
  t.is((await putManifest(url, repo, 'latest', second)).status, 201);
  const again = await request(url, `/v2/${repo}/manifests/latest`, { headers: { accept: first.mediaType, 'if-none-match': got.headers.etag! } });
  t.is(again.status, 200);
  t.is(again.headers['docker-content-digest'], second.digest);
  t.is(again.headers['cache-control'], 'no-cache');
});

test('an OCI manifest without mediaType field is accepted by Content-Type and served with it', async (t) => {
  const repo = repoName('nofield');
  const config = configBlob();
  await pushBlobs(url, repo, [config]);
  const m = ociManifest({ config, layers: [], withMediaType: false });
  t.is((await putManifest(url, repo, 'x', m, `${MT.ociManifest}; charset=utf-8`)).status, 201);
  const got = await getManifest(url, repo, 'x', MT.ociManifest);
  t.is(got.headers['content-type'], MT.ociManifest);
  t.true(got.body.equals(m.bytes));
});

test('whitespace and key order are kept byte for byte', async (t) => {
  const repo = repoName('bytes');
  const config = configBlob();
  await pushBlobs(url, repo, [config]);
  const text = `{\n\t"layers" : [ ],   "config": {"size": ${config.size}, "digest": "${config.digest}", "mediaType": "${MT.ociConfig}"},\n"schemaVersion":2 }\n\n`;
  const bytes = Buffer.from(text);
  const put = await request(url, `/v2/${repo}/manifests/exact`, { method: 'PUT', headers: { 'Content-Type': MT.ociManifest }, body: bytes });
  t.is(put.status, 201);
  t.is(put.headers['docker-content-digest'], sha256(bytes));
  t.true((await getManifest(url, repo, 'exact', MT.ociManifest)).body.equals(bytes));
});

// ---- references and digests ------------------------------------------------------------------

test('push by digest: the digest must be that of the bytes', async (t) => {
  const repo = repoName('bydigest');
  const { manifest } = await pushedImage(repo);
  t.is((await putManifest(url, repo, manifest.digest, manifest)).status, 201);

  const other = sha256('something else');
  const wrong = await putManifest(url, repo, other, manifest);
  t.is(wrong.status, 400);
  t.is(errorCode(wrong), 'DIGEST_INVALID');

  const bad = await putManifest(url, repo, 'sha256:baddigeststring', manifest);
  t.is(bad.status, 400);
  t.is(errorCode(bad), 'DIGEST_INVALID');

  // the conformance suite's "bad digest image": trailing whitespace changes the digest
  const padded = { ...manifest, bytes: Buffer.concat([manifest.bytes, Buffer.from('  ')]) };
  t.is((await putManifest(url, repo, manifest.digest, padded)).status, 400);

  // a digest of an algorithm volreg does not implement is a digest it cannot use: 400, on every method
  const md5 = `md5:${'a'.repeat(32)}`;
  const unsupported = await putManifest(url, repo, md5, manifest);
  t.is(unsupported.status, 400);
  t.is(errorCode(unsupported), 'DIGEST_INVALID');
  for (const method of ['GET', 'HEAD', 'DELETE']) {
    const r = await request(url, `/v2/${repo}/manifests/${md5}`, { method });
    t.is(r.status, 400, method);
    if (method !== 'HEAD') t.is(errorCode(r), 'DIGEST_INVALID', method);
  }
  t.is((await getManifest(url, repo, 'sha256:baddigeststring', ACCEPT_ALL)).status, 400);
});

test('push by sha512 digest names the manifest with sha512', async (t) => {
  const repo = repoName('sha512');
  const { manifest } = await pushedImage(repo);
  const { createHash } = await import('node:crypto');
  const d512 = `sha512:${createHash('sha512').update(manifest.bytes).digest('hex')}`;
  const put = await putManifest(url, repo, d512, manifest);
  t.is(put.status, 201, put.body.toString());
  t.is(put.headers['docker-content-digest'], d512);
  const got = await getManifest(url, repo, d512, MT.ociManifest);
  t.true(got.body.equals(manifest.bytes));
});

test('invalid names and tags are refused; a tag outside the grammar names no manifest to read or delete', async (t) => {
  const { manifest } = await pushedImage(repoName('names'));
  for (const [repo, ref, code] of [
    ['UPPER', 'latest', 'NAME_INVALID'],
    ['a..b', 'latest', 'NAME_INVALID'],
    ['ok', '-tag', 'TAG_INVALID'],
    ['ok', '.tag', 'TAG_INVALID'],
    ['ok', '.INVALID_MANIFEST_NAME', 'TAG_INVALID'],
    ['ok', 'a'.repeat(129), 'TAG_INVALID'],
    ['ok', 'tag%00x', 'TAG_INVALID'],
    ['ok', 'tag%2F..%2Fx', 'TAG_INVALID'],
    [`${'a'.repeat(256)}`, 'latest', 'NAME_INVALID'],
  ] as const) {
    for (const method of ['GET', 'HEAD', 'PUT', 'DELETE']) {
      const r = await request(url, `/v2/${repo}/manifests/${ref}`, {
        method,
        headers: { 'Content-Type': MT.ociManifest },
        ...(method === 'PUT' ? { body: manifest.bytes } : {}),
      });
      // A push of an invalid tag is a client error; a lookup of one finds nothing (the OCI
      // conformance suite reads and checks `.INVALID_MANIFEST_NAME` and expects 404).
      const lookup = method !== 'PUT' && code === 'TAG_INVALID';
      t.is(r.status, lookup ? 404 : 400, `${method} ${repo} ${ref}`);
      if (method !== 'HEAD') t.is(errorCode(r), lookup ? 'MANIFEST_UNKNOWN' : code, `${method} ${repo} ${ref}`);
    }
  }
});

test('unknown manifests, tags and repositories are 404 MANIFEST_UNKNOWN', async (t) => {
  const repo = repoName('unknown');
  const { manifest } = await pushedImage(repo);
  t.is((await putManifest(url, repo, 'there', manifest)).status, 201);
  for (const [r, ref] of [
    [repo, 'missing'],
    [repo, sha256('nothing')],
    [repoName('never-pushed'), 'latest'],
    [repoName('never-pushed'), sha256('x')],
  ] as const) {
    const got = await getManifest(url, r, ref, ACCEPT_ALL);
    t.is(got.status, 404);
    t.is(errorCode(got), 'MANIFEST_UNKNOWN');
    const head = await getManifest(url, r, ref, ACCEPT_ALL, 'HEAD');
    t.is(head.status, 404);
    t.is(head.body.length, 0);
    const del = await request(url, `/v2/${r}/manifests/${ref}`, { method: 'DELETE' });
    t.is(del.status, 404);
  }
});

test('a manifest in one repository is not in another', async (t) => {
  const a = repoName('iso-a');
  const b = repoName('iso-b');
  const { manifest } = await pushedImage(a);
  t.is((await putManifest(url, a, 'x', manifest)).status, 201);
  t.is((await getManifest(url, b, manifest.digest, ACCEPT_ALL)).status, 404);
  // and its blobs must be in the repository it is pushed to
  const r = await putManifest(url, b, 'x', manifest);
  t.is(r.status, 400);
  t.is(errorCode(r), 'MANIFEST_BLOB_UNKNOWN');
});

// ---- referenced content --------------------------------------------------------------------

test('every missing blob is listed in MANIFEST_BLOB_UNKNOWN, and nothing is stored', async (t) => {
  const repo = repoName('missing');
  const config = configBlob();
  const present = randomBlob();
  const absent1 = randomBlob();
  const absent2 = randomBlob();
  await pushBlobs(url, repo, [present]);
  const m = ociManifest({ config, layers: [present, absent1, absent2, absent1] });
  const r = await putManifest(url, repo, 'latest', m);
  t.is(r.status, 400);
  t.is(errorCode(r), 'MANIFEST_BLOB_UNKNOWN');
  const detail = errorDetail<{ missing: string[] }>(r);
  t.deepEqual([...detail.missing].sort(), [config.digest, absent1.digest, absent2.digest].sort());
  t.is((await getManifest(url, repo, 'latest', ACCEPT_ALL)).status, 404);
  t.is((await getManifest(url, repo, m.digest, ACCEPT_ALL)).status, 404);
  t.is(await collections(server.db).manifests.countDocuments({ digest: m.digest }), 0);
});

test('a blob whose bytes were set aside as damaged counts as missing, though its records stay', async (t) => {
  const repo = repoName('set-aside');
  const { manifest, layers } = await pushedImage(repo);
  const layer = layers[0]!;
  // what quarantineIfDamaged leaves: the records of the blob, no bytes
  await mkdir(join(server.dataDir, 'quarantine'), { recursive: true });
  await rename(blobPath(server.dataDir, layer.digest as Digest), join(server.dataDir, 'quarantine', 'by-test'));
  const r = await putManifest(url, repo, 'v1', manifest);
  t.is(r.status, 400);
  t.is(errorCode(r), 'MANIFEST_BLOB_UNKNOWN');
  t.deepEqual(errorDetail<{ blobs: string[] }>(r).blobs, [layer.digest]);
  t.is((await getManifest(url, repo, 'v1', ACCEPT_ALL)).status, 404, 'nothing acknowledged over missing bytes');
  t.is((await request(url, `/v2/${repo}/blobs/${layer.digest}`, { method: 'HEAD' })).status, 404, 'so the client uploads it');
  await pushBlobs(url, repo, [layer]);
  t.is((await putManifest(url, repo, 'v1', manifest)).status, 201);
  await rm(join(server.dataDir, 'quarantine'), { recursive: true });
});

test('an index whose manifests are not in the repository lists them all', async (t) => {
  const repo = repoName('missing-idx');
  const a = await pushedImage(repo);
  t.is((await putManifest(url, repo, a.manifest.digest, a.manifest)).status, 201);
  const ghost1 = ociManifest({ config: configBlob(), layers: [] });
  const ghost2 = dockerManifest({ config: configBlob(), layers: [] });
  const idx = ociIndex([{ manifest: a.manifest }, { manifest: ghost1 }, { manifest: ghost2 }]);
  const r = await putManifest(url, repo, 'idx', idx);
  t.is(r.status, 400);
  t.is(errorCode(r), 'MANIFEST_BLOB_UNKNOWN');
  t.deepEqual([...errorDetail<{ manifests: string[] }>(r).manifests].sort(), [ghost1.digest, ghost2.digest].sort());
});

test('a layer with urls (non-distributable) need not be in the registry', async (t) => {
  const repo = repoName('foreign');
  const config = configBlob();
  await pushBlobs(url, repo, [config]);
  const m = ociManifest({ config, layers: [randomBlob()], layerExtra: { urls: ['https://store.example.com/blobs/x'] } });
  t.is((await putManifest(url, repo, 'nd', m)).status, 201);
});

test('subject: OCI-Subject on push, and a subject that does not exist is accepted', async (t) => {
  const repo = repoName('subject');
  const { manifest: subject } = await pushedImage(repo);
  const empty = blobOf('{}');
  const layer = randomBlob();
  await pushBlobs(url, repo, [empty, layer]);
  const artifact = ociManifest({ config: empty, configMediaType: MT.ociEmpty, layers: [layer], subject, artifactType: 'application/x.sig' });
  const r = await putManifest(url, repo, artifact.digest, artifact);
  t.is(r.status, 201);
  t.is(r.headers['oci-subject'], subject.digest);

  const plain = await pushedImage(repo);
  t.is((await putManifest(url, repo, 'plain', plain.manifest)).headers['oci-subject'], undefined);
});

// ---- size and body checks -------------------------------------------------------------------

test('a manifest over 4 MiB is refused with 413; one just under is stored', async (t) => {
  const repo = repoName('big');
  const config = configBlob();
  await pushBlobs(url, repo, [config]);
  const limit = server.config.limits.manifestBytes;
  t.is(limit, 4 * 1024 * 1024);
  const annotations: Record<string, string> = {};
  for (let i = 0; i < 390; i++) annotations[`large-annotation-${i}`] = 'A'.repeat(10_000);
  const near = ociManifest({ config, layers: [], annotations });
  t.true(near.bytes.length > 3_900_000 && near.bytes.length < limit);
  t.is((await putManifest(url, repo, 'near', near)).status, 201);
  t.true((await getManifest(url, repo, 'near', MT.ociManifest)).body.equals(near.bytes));

  annotations.more = 'B'.repeat(400_000);
  const over = ociManifest({ config, layers: [], annotations });
  t.true(over.bytes.length > limit);
  const r = await putManifest(url, repo, 'over', over);
  // 413 with the spec's MANIFEST_INVALID, as zot and distribution answer it (DESIGN.md section 2)
  t.is(r.status, 413);
  t.is(errorCode(r), 'MANIFEST_INVALID');
  // the same without a length (chunked): refused once the limit is passed, with the same reply
  const chunked = await putChunked(`${url}/v2/${repo}/manifests/over`, over.bytes, MT.ociManifest);
  t.is(chunked.status, 413);
  t.is(chunked.contentType, 'application/json; charset=utf-8');
  t.is(JSON.parse(chunked.body).errors[0].code, 'MANIFEST_INVALID');
  t.is((await getManifest(url, repo, 'over', ACCEPT_ALL)).status, 404);
});

/** PUT with Transfer-Encoding: chunked (no Content-Length), in 64 KiB pieces. */
function putChunked(target: string, body: Buffer, contentType: string): Promise<{ status: number; contentType: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(target, { method: 'PUT', headers: { 'Content-Type': contentType, 'Transfer-Encoding': 'chunked' } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body: Buffer.concat(parts).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (let i = 0; i < body.length; i += 65536) req.write(body.subarray(i, i + 65536));
    req.end();
  });
}

test('malformed and mismatched manifests are 400 MANIFEST_INVALID', async (t) => {
  const repo = repoName('malformed');
  const { manifest } = await pushedImage(repo);
  const cases: Array<[string, string | Buffer, string | null]> = [
    ['malformed JSON', '{"schemaVersion": 2, "config": ', MT.ociManifest],
    ['empty body', '', MT.ociManifest],
    ['not an object', '[1,2,3]', MT.ociManifest],
    ['binary garbage', Buffer.from([0xff, 0xfe, 0x00, 0x01]), MT.ociManifest],
    ['Content-Type contradicts mediaType', manifest.bytes, MT.dockerManifest],
    ['unknown Content-Type', manifest.bytes, 'application/vnd.example+json'],
    ['schema violation', JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config: {}, layers: [] }), MT.ociManifest],
    ['deeply nested JSON', `${'['.repeat(5000)}${']'.repeat(5000)}`, MT.ociManifest],
    // no field name of the stored unit can hold a NUL
    ['an annotation key with a NUL', manifest.bytes.toString().replace(/}$/, ',"annotations":{"k\\u0000":"v"}}'), MT.ociManifest],
  ];
  for (const [label, body, ct] of cases) {
    const r = await request(url, `/v2/${repo}/manifests/bad`, { method: 'PUT', headers: ct ? { 'Content-Type': ct } : {}, body });
    t.is(r.status, 400, label);
    t.is(errorCode(r), 'MANIFEST_INVALID', label);
  }
  t.is((await getManifest(url, repo, 'bad', ACCEPT_ALL)).status, 404);
});

// ---- tags: Accept-driven resolution and the Tag units ----------------------------------------

test('schema 1 and schema 2 under one tag: each by its Accept, two Tag units, the v1 tag recorded', async (t) => {
  const repo = repoName('dual');
  const v2 = await pushedDockerImage(repo);
  const layer = randomBlob();
  await pushBlobs(url, repo, [layer]);
  const s1 = schema1Signed({ name: repo, tag: 'latest', layers: [layer] });
  t.is((await putManifest(url, repo, 'latest', v2)).status, 201);
  t.is((await putManifest(url, repo, 'latest', s1)).status, 201);

  const units = await tagUnits(repo, 'latest');
  t.deepEqual(units.map((u) => [u.schema_version, u.manifest_digest]).sort(), [
    [1, s1.payloadDigest],
    [2, v2.digest],
  ]);
  const assoc = await collections(server.db).repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: UNIT_TYPES.tag });
  t.is(assoc, 2);

  const asV2 = await getManifest(url, repo, 'latest', MT.dockerManifest);
  t.is(asV2.headers['docker-content-digest'], v2.digest);
  t.true(asV2.body.equals(v2.bytes));
  const asS1 = await getManifest(url, repo, 'latest', MT.schema1Signed);
  t.is(asS1.headers['docker-content-digest'], s1.payloadDigest);
  t.is(asS1.headers['content-type'], MT.schema1Signed);
  t.true(asS1.body.equals(s1.bytes));
  t.is((await getManifest(url, repo, 'latest', `${MT.schema1}, application/json`)).headers['docker-content-digest'], s1.payloadDigest);
  t.is((await getManifest(url, repo, 'latest', ACCEPT_ALL)).headers['docker-content-digest'], v2.digest);
  // no Accept at all accepts every type: schema 2 first (DESIGN.md section 3)
  t.is((await getManifest(url, repo, 'latest')).headers['docker-content-digest'], v2.digest);
  // a client that reads neither
  const none = await getManifest(url, repo, 'latest', MT.ociManifest);
  t.is(none.status, 404);
  t.is(errorCode(none), 'MANIFEST_UNKNOWN');

  const doc = await collections(server.db).repos.findOne({ _id: repo });
  t.deepEqual(doc!.scratchpad.tags, [{ tag: 'latest', image_id: s1.topId }]);

  // re-pushing schema 2 moves only the schema 2 unit
  const v2b = await pushedDockerImage(repo);
  t.is((await putManifest(url, repo, 'latest', v2b)).status, 201);
  t.is((await getManifest(url, repo, 'latest', MT.dockerManifest)).headers['docker-content-digest'], v2b.digest);
  t.is((await getManifest(url, repo, 'latest', MT.schema1Signed)).headers['docker-content-digest'], s1.payloadDigest);
  t.is((await tagUnits(repo, 'latest')).length, 2);

  // a second schema 1 push replaces the v1 tag's image id, still one entry
  const s1b = schema1Unsigned({ name: repo, tag: 'latest', layers: [layer] });
  t.is((await putManifest(url, repo, 'latest', s1b)).status, 201);
  const doc2 = await collections(server.db).repos.findOne({ _id: repo });
  t.deepEqual(doc2!.scratchpad.tags, [{ tag: 'latest', image_id: s1b.topId }]);
});

test('a repository recording the most v1 tags refuses a schema 1 push of a new tag with 403 DENIED, writing nothing; existing ones still move', async (t) => {
  const repo = repoName('v1full');
  const layer = randomBlob();
  await pushBlobs(url, repo, [layer]);
  const keep = schema1Signed({ name: repo, tag: 'keep', layers: [layer] });
  t.is((await putManifest(url, repo, 'keep', keep)).status, 201);
  // the repository document as 50,000 schema 1 pushes leave it
  const full = [{ tag: 'keep', image_id: keep.topId }, ...Array.from({ length: MAX_V1_TAGS_PER_REPO - 1 }, (_, i) => ({ tag: `t${i}`, image_id: 'a'.repeat(64) }))];
  await collections(server.db).repos.updateOne({ _id: repo }, { $set: { 'scratchpad.tags': full } });

  const extra = schema1Signed({ name: repo, tag: 'extra', layers: [layer] });
  const refused = await putManifest(url, repo, 'extra', extra);
  t.is(refused.status, 403);
  t.is(errorCode(refused), 'DENIED');
  t.regex(refused.body.toString(), /records 50000 schema 1 tags, the most one repository can/);
  t.is((await getManifest(url, repo, 'extra', ACCEPT_ALL)).status, 404);
  t.deepEqual(await tagUnits(repo, 'extra'), []);
  t.is((await collections(server.db).repos.findOne({ _id: repo }))!.scratchpad.tags.length, MAX_V1_TAGS_PER_REPO);

  // a tag already recorded is replaced in place
  const moved = schema1Unsigned({ name: repo, tag: 'keep', layers: [layer] });
  t.is((await putManifest(url, repo, 'keep', moved)).status, 201);
  const doc = await collections(server.db).repos.findOne({ _id: repo });
  t.is(doc!.scratchpad.tags.length, MAX_V1_TAGS_PER_REPO);
  t.deepEqual(doc!.scratchpad.tags[0], { tag: 'keep', image_id: moved.topId });
});

test('repos.content_unit_counts tallies the units a repository holds, by unit type, as pushes and deletes change them', async (t) => {
  const repo = repoName('counts');
  const counts = async () => (await collections(server.db).repos.findOne({ _id: repo }))?.content_unit_counts;
  const { manifest: image, layers } = await pushedImage(repo, 2);
  t.deepEqual(await counts(), { [UNIT_TYPES.blob]: 3 });
  // a blob pushed again is held once
  await pushBlobs(url, repo, [layers[0]!]);
  t.is((await putManifest(url, repo, 'v1', image)).status, 201);
  t.is((await putManifest(url, repo, 'v2', image)).status, 201);
  const s1 = schema1Unsigned({ name: repo, tag: 'v1', layers: [layers[0]!] });
  t.is((await putManifest(url, repo, 'v1', s1)).status, 201);
  const list = ociIndex([{ manifest: image, platform: { os: 'linux', architecture: 'amd64' } }]);
  t.is((await putManifest(url, repo, 'multi', list)).status, 201);
  t.deepEqual(await counts(), { [UNIT_TYPES.blob]: 3, [UNIT_TYPES.manifest]: 2, [UNIT_TYPES.tag]: 4, [UNIT_TYPES.manifestList]: 1 });

  // by tag: both units of v1 go; by digest: the index and its tag
  t.is((await request(url, `/v2/${repo}/manifests/v1`, { method: 'DELETE' })).status, 202);
  t.is((await request(url, `/v2/${repo}/manifests/${list.digest}`, { method: 'DELETE' })).status, 202);
  t.deepEqual(await counts(), { [UNIT_TYPES.blob]: 3, [UNIT_TYPES.manifest]: 2, [UNIT_TYPES.tag]: 1, [UNIT_TYPES.manifestList]: 0 });
  const held = async (type: string) => collections(server.db).repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: type as never });
  for (const [type, n] of Object.entries((await counts()) ?? {})) t.is(n, await held(type), type);
});

test('the tallies stay those of the associations, one per tag unit, through tags moved, pushed again, deleted and pushed anew, and a push refused after its writes', async (t) => {
  const repo = repoName('counts-moves');
  const c = collections(server.db);
  const tallied = async (when: string): Promise<void> => {
    const counts: Record<string, number> = (await c.repos.findOne({ _id: repo }))?.content_unit_counts ?? {};
    for (const type of Object.values(UNIT_TYPES)) {
      t.is(counts[type] ?? 0, await c.repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: type }), `${type} ${when}`);
    }
    for (const unit of await c.tags.find({ repo_id: repo }).toArray()) {
      t.is(await c.repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: UNIT_TYPES.tag, unit_id: unit._id }), 1, `tag ${unit.name} held once ${when}`);
    }
  };
  const { manifest: a } = await pushedImage(repo, 1);
  const { manifest: b } = await pushedImage(repo, 1);
  // new, moved, the same again; then by digest with a new tag and one already there
  for (const m of [a, b, b]) t.is((await putManifest(url, repo, 'v1', m)).status, 201);
  const byDigest = await request(url, `/v2/${repo}/manifests/${b.digest}?tag=v2&tag=v1`, { method: 'PUT', headers: { 'Content-Type': b.mediaType }, body: b.bytes });
  t.is(byDigest.status, 201);
  await tallied('after moves and re-pushes');
  t.is((await request(url, `/v2/${repo}/manifests/v1`, { method: 'DELETE' })).status, 202);
  t.is((await putManifest(url, repo, 'v1', a)).status, 201);
  await tallied('after a tag deleted and pushed anew');

  // refused after its manifest, its association and its tag were written (no room for its v1 tag)
  const layer = randomBlob();
  await pushBlobs(url, repo, [layer]);
  const full = Array.from({ length: MAX_V1_TAGS_PER_REPO }, (_, i) => ({ tag: `t${i}`, image_id: 'a'.repeat(64) }));
  await c.repos.updateOne({ _id: repo }, { $set: { 'scratchpad.tags': full } });
  t.is((await putManifest(url, repo, 'extra', schema1Signed({ name: repo, tag: 'extra', layers: [layer] }))).status, 403);
  await tallied('after a refused push');
});

test('a list tag: served to list clients, its linux/amd64 entry to the others', async (t) => {
  const repo = repoName('list');
  const amd = await pushedDockerImage(repo);
  const arm = await pushedDockerImage(repo);
  for (const m of [amd, arm]) t.is((await putManifest(url, repo, m.digest, m)).status, 201);
  const list = dockerList([
    { manifest: arm, platform: { os: 'linux', architecture: 'arm64' } },
    { manifest: amd, platform: { os: 'linux', architecture: 'amd64' } },
  ]);
  t.is((await putManifest(url, repo, 'multi', list)).status, 201);
  const units = await tagUnits(repo, 'multi');
  t.deepEqual(
    units.map((u) => [u.schema_version, u.manifest_type]),
    [[2, 'list']],
  );

  const asList = await getManifest(url, repo, 'multi', ACCEPT_ALL);
  t.is(asList.headers['docker-content-digest'], list.digest);
  const asImage = await getManifest(url, repo, 'multi', MT.dockerManifest);
  t.is(asImage.status, 200);
  t.is(asImage.headers['docker-content-digest'], amd.digest);
  t.true(asImage.body.equals(amd.bytes));
  const head = await getManifest(url, repo, 'multi', MT.dockerManifest, 'HEAD');
  t.is(head.headers['docker-content-digest'], amd.digest);
  t.is((await getManifest(url, repo, 'multi', MT.ociManifest)).status, 404);
});

test('a reply by tag says it varies with Accept (200, 304, and the 404 of an Accept nothing fits); by digest it does not', async (t) => {
  const repo = repoName('vary');
  const { manifest } = await pushedImage(repo);
  await putManifest(url, repo, 'v', manifest);
  for (const method of ['GET', 'HEAD']) {
    const byTag = await getManifest(url, repo, 'v', MT.ociManifest, method);
    t.is(byTag.status, 200, method);
    t.is(byTag.headers.vary, 'Accept', method);
    const held = await request(url, `/v2/${repo}/manifests/v`, { method, headers: { Accept: MT.ociManifest, 'If-None-Match': `"${manifest.digest}"` } });
    t.is(held.status, 304, method);
    t.is(held.headers.vary, 'Accept', method);
    const unfit = await getManifest(url, repo, 'v', MT.dockerManifest, method);
    t.is(unfit.status, 404, method);
    t.is(unfit.headers.vary, 'Accept', method);
    const byDigest = await getManifest(url, repo, manifest.digest, MT.ociManifest, method);
    t.is(byDigest.status, 200, method);
    t.is(byDigest.headers.vary, undefined, method);
  }
});

test('PUT by digest with ?tag= sets every tag and answers OCI-Tag', async (t) => {
  const repo = repoName('multitag');
  const { manifest } = await pushedImage(repo);
  const r = await request(url, `/v2/${repo}/manifests/${manifest.digest}?tag=1.2.3&tag=1.2&tag=latest`, {
    method: 'PUT',
    headers: { 'Content-Type': MT.ociManifest },
    body: manifest.bytes,
  });
  t.is(r.status, 201);
  t.is(r.headers['oci-tag'], '1.2.3, 1.2, latest');
  for (const tag of ['1.2.3', '1.2', 'latest']) t.is((await getManifest(url, repo, tag, MT.ociManifest)).headers['docker-content-digest'], manifest.digest);
  const bad = await request(url, `/v2/${repo}/manifests/${manifest.digest}?tag=..bad`, { method: 'PUT', headers: { 'Content-Type': MT.ociManifest }, body: manifest.bytes });
  t.is(bad.status, 400);
  t.is(errorCode(bad), 'TAG_INVALID');
  // too many tags: 414, as the spec suggests, and no tag of them is set
  const many = Array.from({ length: MAX_TAGS_PER_PUSH + 1 }, (_, i) => `many${i}`);
  const tooMany = await request(url, `/v2/${repo}/manifests/${manifest.digest}?${many.map((tag) => `tag=${tag}`).join('&')}`, { method: 'PUT', headers: { 'Content-Type': MT.ociManifest }, body: manifest.bytes });
  t.is(tooMany.status, 414);
  t.is(errorCode(tooMany), 'URI_TOO_LONG');
  t.is((await getManifest(url, repo, 'many0', MT.ociManifest, 'HEAD')).status, 404);
  const most = many.slice(1);
  const atMost = await request(url, `/v2/${repo}/manifests/${manifest.digest}?${most.map((tag) => `tag=${tag}`).join('&')}`, { method: 'PUT', headers: { 'Content-Type': MT.ociManifest }, body: manifest.bytes });
  t.is(atMost.status, 201);
  t.is(String(atMost.headers['oci-tag']).split(', ').length, MAX_TAGS_PER_PUSH);
});

test('a manifest nesting deeper than 128 levels is refused before it is parsed; 100 levels are kept as pushed', async (t) => {
  const repo = repoName('deep');
  const { manifest } = await pushedImage(repo);
  const withField = (depth: number): Buffer => {
    const doc = JSON.parse(manifest.bytes.toString()) as Record<string, unknown>;
    const text = JSON.stringify({ ...doc, extra: '@' });
    // strings holding brackets do not count
    return Buffer.from(text.replace('"@"', `${'['.repeat(depth - 1)}"[[[{{{\\"]]]"${']'.repeat(depth - 1)}`));
  };
  const put = (body: Buffer, ref: string) => request(url, `/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'Content-Type': MT.ociManifest }, body });
  const deep = await put(withField(200), 'deep');
  t.is(deep.status, 400);
  t.is(errorCode(deep), 'MANIFEST_INVALID');
  t.deepEqual(errorDetail(deep), { maxDepth: 128 });
  const bomb = await put(Buffer.from('['.repeat(1_000_000) + ']'.repeat(1_000_000)), 'bomb');
  t.is(bomb.status, 400);
  t.deepEqual(errorDetail(bomb), { maxDepth: 128 });
  t.is((await getManifest(url, repo, 'deep', MT.ociManifest, 'HEAD')).status, 404);
  const fine = withField(100);
  t.is((await put(fine, 'fine')).status, 201);
  t.true((await getManifest(url, repo, 'fine', MT.ociManifest)).body.equals(fine));
});

test('requests pipelined on one connection take effect in order: a PUT then a DELETE of the tag leaves no tag', async (t) => {
  const { connect } = await import('node:net');
  const repo = repoName('pipelined');
  const { manifest } = await pushedImage(repo);
  const { hostname, port } = new URL(url);
  const raw = Buffer.concat([
    Buffer.from(`PUT /v2/${repo}/manifests/p1 HTTP/1.1\r\nHost: x\r\nContent-Type: ${MT.ociManifest}\r\nContent-Length: ${manifest.bytes.length}\r\n\r\n`),
    manifest.bytes,
    Buffer.from(`DELETE /v2/${repo}/manifests/p1 HTTP/1.1\r\nHost: x\r\n\r\n`),
    Buffer.from(`HEAD /v2/${repo}/manifests/p1 HTTP/1.1\r\nHost: x\r\nAccept: ${MT.ociManifest}\r\nConnection: close\r\n\r\n`),
  ]);
  const replies = await new Promise<string>((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(raw));
    let got = '';
    socket.on('data', (b: Buffer) => (got += b.toString('latin1')));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
  });
  t.deepEqual([...replies.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]), ['201', '202', '404']);
  t.is((await getManifest(url, repo, 'p1', MT.ociManifest, 'HEAD')).status, 404);
});

test.serial('manifest bodies held in memory at once are bounded: past the bound a push gets 429 with Retry-After, and goes through once they are gone', async (t) => {
  const { connect } = await import('node:net');
  const repo = repoName('held');
  const { manifest } = await pushedImage(repo);
  const { hostname, port } = new URL(url);
  const max = 4 * 1024 * 1024;
  // clients announcing the largest manifest and sending it very slowly, until the bound is taken
  const slow = Array.from({ length: HELD_BODY_BYTES / max }, (_, i) => {
    const socket = connect(Number(port), hostname, () =>
      socket.write(`PUT /v2/${repo}/manifests/slow${i} HTTP/1.1\r\nHost: x\r\nContent-Type: ${MT.ociManifest}\r\nContent-Length: ${max}\r\n\r\n{`),
    );
    socket.on('error', () => undefined);
    return socket;
  });
  t.teardown(() => {
    for (const s of slow) s.destroy();
  });
  await new Promise((r) => setTimeout(r, 1000));
  const refused = await putManifest(url, repo, 'now', manifest);
  t.is(refused.status, 429);
  t.is(errorCode(refused), 'TOOMANYREQUESTS');
  t.is(refused.headers['retry-after'], '1');
  for (const s of slow) s.destroy();
  await new Promise((r) => setTimeout(r, 500));
  t.is((await putManifest(url, repo, 'now', manifest)).status, 201);
});

test('20 concurrent PUTs of different manifests to one tag all succeed, one Tag unit, consistent reads', async (t) => {
  const repo = repoName('race');
  const images = await Promise.all(Array.from({ length: 20 }, () => pushedImage(repo, 1)));
  const puts = await Promise.all(images.map((img) => putManifest(url, repo, 'hot', img.manifest)));
  t.deepEqual(
    puts.map((p) => p.status),
    Array(20).fill(201),
  );
  const units = await tagUnits(repo, 'hot');
  t.is(units.length, 1);
  const winner = units[0]!.manifest_digest;
  t.true(images.some((i) => i.manifest.digest === winner));
  const reads = await Promise.all(Array.from({ length: 10 }, () => getManifest(url, repo, 'hot', ACCEPT_ALL)));
  for (const r of reads) t.is(r.headers['docker-content-digest'], winner);
  // every pushed manifest is still there by digest
  for (const img of images) t.is((await getManifest(url, repo, img.manifest.digest, MT.ociManifest, 'HEAD')).status, 200);
  t.is(await collections(server.db).repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: UNIT_TYPES.tag }), 1);
});

test('the same manifest pushed concurrently to 20 tags and by digest stores one unit', async (t) => {
  const repo = repoName('same');
  const { manifest } = await pushedImage(repo);
  const puts = await Promise.all([
    ...Array.from({ length: 20 }, (_, i) => putManifest(url, repo, `t${i}`, manifest)),
    putManifest(url, repo, manifest.digest, manifest),
  ]);
  t.true(puts.every((p) => p.status === 201));
  t.is(await collections(server.db).manifests.countDocuments({ digest: manifest.digest }), 1);
  t.is(await collections(server.db).repoContentUnits.countDocuments({ repo_id: repo, unit_type_id: UNIT_TYPES.manifest }), 1);
});

// ---- conditional GET -------------------------------------------------------------------------

test('If-None-Match with the ETag is 304, for GET and HEAD', async (t) => {
  const repo = repoName('etag');
  const { manifest } = await pushedImage(repo);
  await putManifest(url, repo, 'e', manifest);
  const r = await request(url, `/v2/${repo}/manifests/e`, { headers: { Accept: MT.ociManifest, 'If-None-Match': `"${manifest.digest}"` } });
  t.is(r.status, 304);
  t.is(r.body.length, 0);
  const other = await request(url, `/v2/${repo}/manifests/e`, { headers: { Accept: MT.ociManifest, 'If-None-Match': `"${sha256('x')}"` } });
  t.is(other.status, 200);
  const head = await request(url, `/v2/${repo}/manifests/e`, { method: 'HEAD', headers: { Accept: MT.ociManifest, 'If-None-Match': '*' } });
  t.is(head.status, 304);
  t.is(head.headers['docker-content-digest'], manifest.digest);
  t.is(head.headers.etag, `"${manifest.digest}"`);
});

// ---- deletion -------------------------------------------------------------------------------

test('DELETE by tag removes that name (both schema versions) and leaves the manifest', async (t) => {
  const repo = repoName('deltag');
  const v2 = await pushedDockerImage(repo);
  const layer = randomBlob();
  await pushBlobs(url, repo, [layer]);
  const s1 = schema1Unsigned({ name: repo, tag: 'gone', layers: [layer] });
  await putManifest(url, repo, 'gone', v2);
  await putManifest(url, repo, 'gone', s1);
  await putManifest(url, repo, 'kept', v2);
  const del = await request(url, `/v2/${repo}/manifests/gone`, { method: 'DELETE' });
  t.is(del.status, 202);
  t.is(del.body.length, 0);
  t.is((await getManifest(url, repo, 'gone', ACCEPT_ALL, 'HEAD')).status, 404);
  t.is((await getManifest(url, repo, 'gone', MT.schema1)).status, 404);
  t.deepEqual(await tagUnits(repo, 'gone'), []);
  t.is((await getManifest(url, repo, v2.digest, ACCEPT_ALL)).status, 200);
  t.is((await getManifest(url, repo, 'kept', ACCEPT_ALL)).status, 200);
  const doc = await collections(server.db).repos.findOne({ _id: repo });
  t.deepEqual(doc!.scratchpad.tags, []);
  t.is((await request(url, `/v2/${repo}/manifests/gone`, { method: 'DELETE' })).status, 404);
});

test('DELETE by digest removes the manifest and every tag pointing at it', async (t) => {
  const repo = repoName('deldigest');
  const a = await pushedImage(repo);
  const b = await pushedImage(repo);
  await putManifest(url, repo, 'a1', a.manifest);
  await putManifest(url, repo, 'a2', a.manifest);
  await putManifest(url, repo, 'b', b.manifest);
  const del = await request(url, `/v2/${repo}/manifests/${a.manifest.digest}`, { method: 'DELETE' });
  t.is(del.status, 202);
  t.is((await getManifest(url, repo, a.manifest.digest, ACCEPT_ALL)).status, 404);
  t.is((await getManifest(url, repo, 'a1', ACCEPT_ALL)).status, 404);
  t.is((await getManifest(url, repo, 'a2', ACCEPT_ALL)).status, 404);
  t.is((await getManifest(url, repo, 'b', ACCEPT_ALL)).status, 200);
  t.is((await request(url, `/v2/${repo}/manifests/${a.manifest.digest}`, { method: 'DELETE' })).status, 404);
  // pushing it again brings it back
  t.is((await putManifest(url, repo, 'a1', a.manifest)).status, 201);
  t.is((await getManifest(url, repo, 'a1', ACCEPT_ALL)).status, 200);
});

test('DELETE by digest of an index entry is 409 MANIFEST_REFERENCED while the repository holds the index; after the index, it goes', async (t) => {
  const repo = repoName('delentry');
  const other = repoName('delentry-other');
  const a = await pushedImage(repo);
  const b = await pushedImage(repo);
  for (const m of [a.manifest, b.manifest]) t_ok(await putManifest(url, repo, m.digest, m));
  const inner = ociIndex([{ manifest: a.manifest, platform: { os: 'linux', architecture: 'amd64' } }]);
  const outer = ociIndex([
    { manifest: inner, platform: { os: 'linux', architecture: 'amd64' } },
    { manifest: b.manifest, platform: { os: 'linux', architecture: 'arm64' } },
  ]);
  t_ok(await putManifest(url, repo, inner.digest, inner));
  t_ok(await putManifest(url, repo, 'multi', outer));
  // another repository holding the same image but no index may delete it
  await pushBlobs(url, other, [a.config, ...a.layers]);
  t_ok(await putManifest(url, other, 'solo', a.manifest));

  for (const [entry, by] of [
    [a.manifest, inner],
    [b.manifest, outer],
    [inner, outer],
  ] as const) {
    const del = await request(url, `/v2/${repo}/manifests/${entry.digest}`, { method: 'DELETE' });
    t.is(del.status, 409);
    t.is(errorCode(del), 'MANIFEST_REFERENCED');
    t.deepEqual(errorDetail<{ referencedBy: string[] }>(del).referencedBy, [by.digest]);
    t.is((await getManifest(url, repo, entry.digest, ACCEPT_ALL)).status, 200, 'still there');
  }
  t.is((await getManifest(url, repo, 'multi', ACCEPT_ALL)).status, 200);
  t.is((await request(url, `/v2/${other}/manifests/${a.manifest.digest}`, { method: 'DELETE' })).status, 202);

  // the outer index first, then what it listed
  t.is((await request(url, `/v2/${repo}/manifests/${outer.digest}`, { method: 'DELETE' })).status, 202);
  t.is((await request(url, `/v2/${repo}/manifests/${b.manifest.digest}`, { method: 'DELETE' })).status, 202);
  t.is((await request(url, `/v2/${repo}/manifests/${a.manifest.digest}`, { method: 'DELETE' })).status, 409, 'the inner index still lists it');
  t.is((await request(url, `/v2/${repo}/manifests/${inner.digest}`, { method: 'DELETE' })).status, 202);
  t.is((await request(url, `/v2/${repo}/manifests/${a.manifest.digest}`, { method: 'DELETE' })).status, 202);
});

test('methods a manifest URL does not serve are 405', async (t) => {
  const r = await request(url, `/v2/${repoName('m')}/manifests/x`, { method: 'POST', body: '{}' });
  t.is(r.status, 405);
  t.is(errorCode(r), 'UNSUPPORTED');
});
