import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { digestOf, type Digest } from '../../src/domain/digest.ts';
import { blobPath } from '../../src/storage/paths.ts';
import { SNAPSHOTS_COLLECTION } from '../../src/metadata/snapshot-repository.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';
import { damageTar } from '../helpers/fuzz-archives.ts';

let server: TestServer;
let work = '';
let tarBytes = Buffer.alloc(0);
let gzBytes = Buffer.alloc(0);
let zstBytes = Buffer.alloc(0);
// archives a restore could not reproduce exactly (GNU tar's sparse formats, non-UTF-8 names)
let sparseGnu = Buffer.alloc(0);
let sparsePax = Buffer.alloc(0);
let latin1Names = Buffer.alloc(0);
// pax records a restore could not apply (entry-attributes.ts)
let badPaxTime: Buffer = Buffer.alloc(0);
let badPaxOwner: Buffer = Buffer.alloc(0);
let longName: Buffer = Buffer.alloc(0);
// what a restore can not set (GNU tar --xattrs / --acls write these pax records)
let xattrs: Buffer = Buffer.alloc(0);
let acls: Buffer = Buffer.alloc(0);
// a header with a bad checksum after 3 MiB of data, so that the refusal comes while the body streams
let badHeader: Buffer = Buffer.alloc(0);
let junkMode: Buffer = Buffer.alloc(0);

const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const url = (p: string): string => `${server.url}${p}`;

interface ErrorReply {
  errors: Array<{ code: string; message: string }>;
}

async function put(path: string, body: Buffer, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url(path), { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Type': 'application/octet-stream', ...headers } });
}

async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as ErrorReply;
  return body.errors[0]!.code;
}

test.before(async () => {
  server = await startTestServer({ label: 'http-volumes' });
  work = await mkdtemp(join(tmpdir(), 'volreg-http-volumes-'));
  const root = join(work, 'tree');
  await mkdir(join(root, 'x/y'), { recursive: true });
  await writeFile(join(root, 'x/y/file.txt'), 'hello volumes\n');
  await writeFile(join(root, 'big.bin'), Buffer.alloc(200_000, 7));
  tarBytes = execFileSync('tar', ['-C', root, '-cf', '-', '.']);
  gzBytes = execFileSync('gzip', ['-c'], { input: tarBytes });
  zstBytes = execFileSync('zstd', ['-q', '-c'], { input: tarBytes });

  const sparse = join(work, 'sparse');
  await mkdir(sparse);
  execFileSync('truncate', ['-s', '10M', join(sparse, 'holes.img')]);
  await writeFile(join(sparse, 'holes.img'), 'data after a hole\n', { flag: 'a' });
  sparseGnu = execFileSync('tar', ['-C', sparse, '-cSf', '-', '.']);
  sparsePax = execFileSync('tar', ['-C', sparse, '--format=posix', '-cSf', '-', '.']);
  const latin1 = join(work, 'latin1');
  await mkdir(latin1);
  // "café" and "cafè" in Latin-1: two files whose names are not UTF-8
  for (const last of [0xe9, 0xe8]) await writeFile(Buffer.concat([Buffer.from(`${latin1}/caf`), Buffer.from([last])]), String(last));
  latin1Names = execFileSync('tar', ['-C', latin1, '-cf', '-', '.']);
  badPaxTime = await buildTar([{ name: 'fine', body: 'f' }, { name: 'bad-time', body: 'x', pax: { mtime: 'yesterday' } }]);
  badPaxOwner = await buildTar([{ name: 'bad-owner', body: 'x', pax: { uid: '-5', gid: '1e3' } }]);
  longName = await buildTar([{ name: `dir/${'n'.repeat(256)}`, body: 'x' }]);
  xattrs = await buildTar([{ name: 'noted', body: 'x', pax: { 'SCHILY.xattr.user.note': 'kept?' } }]);
  acls = await buildTar([{ name: 'shared', type: 'directory', pax: { 'SCHILY.acl.access': 'user::rwx,group::r-x,other::r-x,user:1000:rwx,mask::rwx' } }]);
  const late = join(work, 'late');
  await mkdir(late);
  await writeFile(join(late, 'big'), randomBytes(3 * 1024 * 1024));
  await writeFile(join(late, 'z'), 'z\n');
  badHeader = execFileSync('tar', ['-C', late, '-cf', '-', 'big', 'z'], { maxBuffer: 16 * 1024 * 1024 });
  badHeader[512 + 3 * 1024 * 1024] ^= 0x01; // z's name: its header's checksum no longer holds
  // a mode field of "7K" (checksum fixed): tar-stream would read mode 7, GNU tar fails on it
  junkMode = damageTar(await buildTar([{ name: 'fine', body: 'f' }, { name: 'odd-mode', body: 'x' }]), { op: 'field', header: 1, field: 'mode', value: '7K', fixChecksum: true }, []);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** Uploads a blob through /v2 in one request (201 asserted); its digest. */
async function pushV2Blob(t: import('ava').ExecutionContext, name: string, bytes: Buffer): Promise<string> {
  const d = sha256(bytes);
  const res = await fetch(url(`/v2/${name}/blobs/uploads/?digest=${d}`), { method: 'POST', body: new Uint8Array(bytes), headers: { 'Content-Type': 'application/octet-stream' } });
  t.is(res.status, 201);
  await res.arrayBuffer();
  return d;
}

/** An OCI manifest of a volume artifact: `config` and one tar layer, as described (digests and sizes). */
function volumeArtifact(config: { mediaType: string; digest: string; size: number }, layer: { mediaType: string; digest: string; size: number }) {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.volreg.volume.v1',
      config,
      layers: [layer],
    }),
  );
}

/** Asserts that nothing of a refused upload is visible anywhere. */
async function assertNothingKept(t: import('ava').ExecutionContext, name: string, tag: string, body: Buffer): Promise<void> {
  const meta = await fetch(url(`/api/v1/volumes/${name}/tags/${tag}`));
  t.is(meta.status, 404);
  t.is(await errorCode(meta), 'SNAPSHOT_UNKNOWN');
  const manifest = await fetch(url(`/v2/${name}/manifests/${tag}`), { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(manifest.status, 404);
  await manifest.arrayBuffer();
  const blob = await fetch(url(`/v2/${name}/blobs/${sha256(body)}`));
  t.is(blob.status, 404);
  await blob.arrayBuffer();
  t.is(await server.services.blobStore!.stat(digestOf(body)), null, 'no blob committed');
  t.is(await server.db.collection(SNAPSHOTS_COLLECTION).countDocuments({ repo_id: name }), 0, 'no snapshot document');
  const sessions: string[] = [];
  for await (const u of server.services.blobStore!.listUploads()) sessions.push(u.id);
  t.deepEqual(sessions, [], 'no upload session left');
}

for (const [kind, body] of [
  ['none', () => tarBytes],
  ['gzip', () => gzBytes],
  ['zstd', () => zstBytes],
] as const) {
  test(`PUT a ${kind} tar: 201 with digests, sizes and entries; GET metadata agrees`, async (t) => {
    const name = `http/${kind}`;
    const res = await put(`/api/v1/volumes/${name}/tags/v1?label=env=prod&label=tier=db`, body(), {
      'X-Volreg-Host': 'web-01',
      'X-Volreg-Label': 'env=header-loses, zone=eu-1',
    });
    t.is(res.status, 201);
    const created = (await res.json()) as Record<string, unknown> & { layer: { digest: string; size: number; mediaType: string }; uncompressed: { digest: string; size: number } };
    t.is(created.layer.digest, sha256(body()));
    t.is(created.layer.size, body().length);
    t.is(created.compression, kind);
    t.is(created.layer.mediaType, `application/vnd.oci.image.layer.v1.tar${kind === 'none' ? '' : kind === 'gzip' ? '+gzip' : '+zstd'}`);
    t.deepEqual(created.uncompressed, { digest: sha256(tarBytes), size: tarBytes.length });
    t.is(created.entries, execFileSync('tar', ['-tf', '-'], { input: tarBytes }).toString().trim().split('\n').length);
    t.is(created.host, 'web-01');
    t.deepEqual(created.labels, { env: 'prod', tier: 'db', zone: 'eu-1' });
    t.is(res.headers.get('docker-content-digest'), created.manifestDigest as string);
    t.is(res.headers.get('location'), `/api/v1/volumes/${name}/tags/v1`);

    const meta = await fetch(url(`/api/v1/volumes/${name}/tags/v1`));
    t.is(meta.status, 200);
    const got = (await meta.json()) as Record<string, unknown>;
    t.is(got.manifestDigest, created.manifestDigest);
    t.deepEqual(got.uncompressed, created.uncompressed);

    // the manifest is an OCI artifact any client can read
    const m = await fetch(url(`/v2/${name}/manifests/v1`), { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const manifest = (await m.json()) as { artifactType: string; config: { mediaType: string; digest: string }; layers: Array<{ annotations: Record<string, string> }> };
    t.is(manifest.artifactType, 'application/vnd.volreg.volume.v1');
    t.is(manifest.config.mediaType, 'application/vnd.volreg.volume.config.v1+json');
    t.is(manifest.layers[0]!.annotations['org.opencontainers.image.title'], `http-${kind}-v1${kind === 'none' ? '.tar' : kind === 'gzip' ? '.tar.gz' : '.tar.zst'}`);
    const config = (await (await fetch(url(`/v2/${name}/blobs/${manifest.config.digest}`))).json()) as Record<string, unknown>;
    t.is(config.volume, name);
    t.is(config.uncompressedDigest, sha256(tarBytes));
    t.is(config.compression, kind);
  });
}

test('a snapshot of the longest volume name and tag saves under a file name a file system takes (curl -OJ), its .sha256 too', async (t) => {
  const name = `http/${'n'.repeat(60)}/${'n'.repeat(60)}/${'n'.repeat(60)}/${'n'.repeat(67)}`;
  t.is(name.length, 255);
  const tags = [`a${'t'.repeat(127)}`, `b${'t'.repeat(127)}`];
  const names: string[] = [];
  for (const tag of tags) {
    const pushed = await put(`/api/v1/volumes/${name}/tags/${tag}`, gzBytes);
    t.is(pushed.status, 201);
    const fileName = ((await pushed.json()) as { fileName: string }).fileName;
    t.true(Buffer.byteLength(`${fileName}.sha256`) <= 255, fileName);
    t.true(fileName.startsWith('http-nnn') && fileName.endsWith('.tar.gz'), fileName);
    names.push(fileName);
    // what curl -OJ saves, as the README shows
    const dir = await mkdtemp(join(work, 'save-'));
    // (run asynchronously: the server answering curl runs in this process)
    await run('curl', ['-fsS', '-OJ', url(`/api/v1/volumes/${name}/tags/${tag}/content`)], { cwd: dir });
    t.deepEqual(await readFile(join(dir, fileName)), gzBytes);
    const sums = await (await fetch(url(`/api/v1/volumes/${name}/tags/${tag}/content.sha256`))).text();
    t.is(sums, `${sha256(gzBytes).slice('sha256:'.length)}  ${fileName}\n`);
    await run('curl', ['-fsS', '-OJ', url(`/api/v1/volumes/${name}/tags/${tag}/content.sha256`)], { cwd: dir });
    await run('sha256sum', ['-c', `${fileName}.sha256`], { cwd: dir });
    // the layer's title (what oras pull saves it as) is the same name
    const manifest = await fetch(url(`/v2/${name}/manifests/${tag}`), { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const layer = ((await manifest.json()) as { layers: Array<{ annotations: Record<string, string> }> }).layers[0]!;
    t.is(layer.annotations['org.opencontainers.image.title'], fileName);
  }
  t.not(names[0], names[1], 'two long names stay apart');
});

test("HEAD of a snapshot's metadata answers GET's status and headers, without the body", async (t) => {
  const name = 'http/head-metadata';
  t.is((await put(`/api/v1/volumes/${name}/tags/v1`, gzBytes)).status, 201);
  const get = await fetch(url(`/api/v1/volumes/${name}/tags/v1`));
  const body = Buffer.from(await get.arrayBuffer());
  const head = await fetch(url(`/api/v1/volumes/${name}/tags/v1`), { method: 'HEAD' });
  t.is(head.status, 200);
  for (const h of ['content-type', 'content-length', 'docker-content-digest']) t.is(head.headers.get(h), get.headers.get(h), h);
  t.is(head.headers.get('content-length'), String(body.length));
  t.is((await head.arrayBuffer()).byteLength, 0);
  const missing = await fetch(url(`/api/v1/volumes/${name}/tags/nope`), { method: 'HEAD' });
  t.is(missing.status, 404);
});

test('content: exact bytes and headers; Range, If-None-Match, If-Range, HEAD; content.sha256', async (t) => {
  const name = 'http/content';
  t.is((await put(`/api/v1/volumes/${name}/tags/2024.05`, gzBytes)).status, 201);
  const path = `/api/v1/volumes/${name}/tags/2024.05/content`;
  const full = await fetch(url(path));
  t.is(full.status, 200);
  t.deepEqual(Buffer.from(await full.arrayBuffer()), gzBytes);
  const digest = sha256(gzBytes) as Digest;
  t.is(full.headers.get('content-length'), String(gzBytes.length));
  t.is(full.headers.get('docker-content-digest'), digest);
  t.is(full.headers.get('digest'), `sha-256=${createHash('sha256').update(gzBytes).digest('base64')}`);
  t.is(full.headers.get('etag'), `"${digest}"`);
  t.is(full.headers.get('accept-ranges'), 'bytes');
  t.is(full.headers.get('content-disposition'), 'attachment; filename="http-content-2024.05.tar.gz"');
  t.is(full.headers.get('content-type'), 'application/gzip');

  const part = await fetch(url(path), { headers: { Range: 'bytes=100-' } });
  t.is(part.status, 206);
  t.is(part.headers.get('content-range'), `bytes 100-${gzBytes.length - 1}/${gzBytes.length}`);
  t.deepEqual(Buffer.from(await part.arrayBuffer()), gzBytes.subarray(100));
  const suffix = await fetch(url(path), { headers: { Range: 'bytes=-10' } });
  t.deepEqual(Buffer.from(await suffix.arrayBuffer()), gzBytes.subarray(gzBytes.length - 10));
  const beyond = await fetch(url(path), { headers: { Range: `bytes=${gzBytes.length + 5}-` } });
  t.is(beyond.status, 416);
  t.is(beyond.headers.get('content-range'), `bytes */${gzBytes.length}`);
  await beyond.arrayBuffer();

  const notModified = await fetch(url(path), { headers: { 'If-None-Match': `"${digest}"` } });
  t.is(notModified.status, 304);
  const staleIfRange = await fetch(url(path), { headers: { Range: 'bytes=0-9', 'If-Range': '"sha256:other"' } });
  t.is(staleIfRange.status, 200);
  t.is((await staleIfRange.arrayBuffer()).byteLength, gzBytes.length);
  const goodIfRange = await fetch(url(path), { headers: { Range: 'bytes=0-9', 'If-Range': `"${digest}"` } });
  t.is(goodIfRange.status, 206);
  t.is((await goodIfRange.arrayBuffer()).byteLength, 10);
  for (const notStrong of [`W/"${digest}"`, '*']) {
    const res = await fetch(url(path), { headers: { Range: 'bytes=0-9', 'If-Range': notStrong } });
    t.is(res.status, 200, `If-Range ${notStrong} takes the strong comparison`);
    t.is((await res.arrayBuffer()).byteLength, gzBytes.length);
  }
  const weakNoneMatch = await fetch(url(path), { headers: { 'If-None-Match': `W/"${digest}"` } });
  t.is(weakNoneMatch.status, 304, 'If-None-Match takes the weak comparison');

  const head = await fetch(url(path), { method: 'HEAD', headers: { Range: 'bytes=0-99' } });
  t.is(head.status, 206);
  t.is(head.headers.get('content-length'), '100');

  const sums = await fetch(url(`/api/v1/volumes/${name}/tags/2024.05/content.sha256`));
  t.is(await sums.text(), `${digest.slice(7)}  http-content-2024.05.tar.gz\n`);
});

const refusals: Array<{ title: string; body: () => Buffer; query?: string; headers?: Record<string, string>; code: string; message?: RegExp }> = [
  { title: 'truncated gzip', body: () => gzBytes.subarray(0, Math.floor(gzBytes.length / 2)), code: 'ARCHIVE_INVALID' },
  { title: 'truncated tar', body: () => tarBytes.subarray(0, 4096), code: 'ARCHIVE_INVALID' },
  { title: 'truncated zstd', body: () => zstBytes.subarray(0, zstBytes.length - 20), code: 'ARCHIVE_INVALID' },
  {
    title: 'corrupt gzip',
    body: () => {
      const b = Buffer.from(gzBytes);
      b[Math.floor(b.length / 2)] ^= 0xff;
      return b;
    },
    code: 'ARCHIVE_INVALID',
  },
  { title: 'not a tar', body: () => Buffer.from('just some text, not an archive\n'.repeat(100)), code: 'ARCHIVE_INVALID' },
  { title: 'tar with trailing garbage', body: () => Buffer.concat([tarBytes, Buffer.from('garbage')]), code: 'ARCHIVE_INVALID' },
  { title: 'xz', body: () => Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0]), code: 'ARCHIVE_INVALID' },
  { title: 'empty body', body: () => Buffer.alloc(0), code: 'ARCHIVE_INVALID' },
  { title: 'a GNU sparse file (tar -S)', body: () => sparseGnu, code: 'ARCHIVE_INVALID', message: /holes\.img.*entry type is not supported/ },
  { title: 'a sparse file in pax format (tar --format=posix -S)', body: () => sparsePax, code: 'ARCHIVE_INVALID', message: /sparse files \(tar -S\) are not supported/ },
  { title: 'names that are not UTF-8 (two would become one file on restore)', body: () => latin1Names, code: 'ARCHIVE_INVALID', message: /caf\uFFFD.*not valid UTF-8/ },
  { title: 'a name component longer than 255 bytes (no Linux filesystem holds one)', body: () => longName, code: 'ARCHIVE_INVALID', message: /longer than 255 bytes/ },
  { title: 'a pax mtime record that is not a number', body: () => badPaxTime, code: 'ARCHIVE_INVALID', message: /"bad-time".*pax record mtime=yesterday is not valid/ },
  { title: 'pax uid and gid records that are not owners', body: () => badPaxOwner, code: 'ARCHIVE_INVALID', message: /"bad-owner".*pax records uid=-5, gid=1e3 are not valid/ },
  { title: 'extended attributes (tar --xattrs)', body: () => xattrs, code: 'ARCHIVE_INVALID', message: /"noted".*extended attributes.*SCHILY\.xattr\.user\.note.*without --xattrs/ },
  { title: 'ACLs (tar --acls)', body: () => acls, code: 'ARCHIVE_INVALID', message: /"shared\/?".*SCHILY\.acl\.access/ },
  { title: 'a corrupt header, refused while the body streams: the reason is kept', body: () => badHeader, code: 'ARCHIVE_INVALID', message: /Invalid tar header/ },
  { title: 'a mode field whose digits are followed by something else', body: () => junkMode, code: 'ARCHIVE_INVALID', message: /malformed mode field "7K" in tar header \(entry 2\)/ },
  { title: 'wrong ?digest=', body: () => gzBytes, query: `?digest=sha256:${'0'.repeat(64)}`, code: 'DIGEST_INVALID' },
  { title: 'wrong Digest header', body: () => gzBytes, headers: { Digest: `sha-256=${Buffer.alloc(32, 1).toString('base64')}` }, code: 'DIGEST_INVALID' },
];

// serial (ava runs these before the concurrent tests): no other upload may be in flight when
// checking that no upload session was left behind
for (const [i, r] of refusals.entries()) {
  test.serial(`refused and nothing kept: ${r.title}`, async (t) => {
    const name = `http/refused-${i}`;
    const res = await put(`/api/v1/volumes/${name}/tags/v1${r.query ?? ''}`, r.body(), r.headers);
    t.is(res.status, 400);
    const error = ((await res.json()) as ErrorReply).errors[0]!;
    t.is(error.code, r.code);
    if (r.message) t.regex(error.message, r.message);
    await assertNothingKept(t, name, 'v1', r.body());
  });
}

test('a matching client digest is accepted, by query or RFC 3230 header', async (t) => {
  const byQuery = await put(`/api/v1/volumes/http/digest/tags/q?digest=${sha256(zstBytes)}`, zstBytes);
  t.is(byQuery.status, 201);
  await byQuery.arrayBuffer();
  const byHeader = await put('/api/v1/volumes/http/digest/tags/h', zstBytes, { Digest: `sha-256=${createHash('sha256').update(zstBytes).digest('base64')}` });
  t.is(byHeader.status, 201);
  await byHeader.arrayBuffer();
});

test('a sha512 the client gives is checked beside the sha256 the layer is stored under; every value given must hold', async (t) => {
  const b64 = (alg: string, bytes: Buffer): string => createHash(alg).update(bytes).digest('base64');
  const hex512 = createHash('sha512').update(zstBytes).digest('hex');
  for (const [tag, path, headers] of [
    ['q512', `?digest=sha512:${hex512}`, {}],
    ['h512', '', { Digest: `sha-512=${b64('sha512', zstBytes)}` }],
    ['both', '', { Digest: `sha-256=${b64('sha256', zstBytes)}, sha-512=${b64('sha512', zstBytes)}` }],
  ] as const) {
    const res = await put(`/api/v1/volumes/http/digest512/tags/${tag}${path}`, zstBytes, headers);
    t.is(res.status, 201, tag);
    const body = (await res.json()) as { layer: { digest: string } };
    t.is(body.layer.digest, sha256(zstBytes), `${tag}: stored under its sha256`);
    const sums = await fetch(url(`/api/v1/volumes/http/digest512/tags/${tag}/content.sha256`));
    t.is(sums.status, 200, `${tag}: content.sha256`);
    await sums.arrayBuffer();
  }
  const wrong512 = `sha-512=${b64('sha512', Buffer.from('other'))}`;
  const refused: Array<[string, Record<string, string>]> = [
    ['a good sha-256 and a wrong sha-512', { Digest: `sha-256=${b64('sha256', zstBytes)}, ${wrong512}` }],
    ['a wrong sha-512 alone', { Digest: wrong512 }],
    ['two sha-256 values, one wrong', { Digest: `sha-256=${b64('sha256', zstBytes)}, sha-256=${b64('sha256', Buffer.from('other'))}` }],
  ];
  for (const [what, headers] of refused) {
    const res = await put('/api/v1/volumes/http/digest512/tags/refused', zstBytes, headers);
    t.is(res.status, 400, what);
    t.is(await errorCode(res), 'DIGEST_INVALID', what);
  }
  t.is((await fetch(url('/api/v1/volumes/http/digest512/tags/refused'))).status, 404, 'nothing tagged');
});

test('names, tags, labels and hosts are validated before any byte is stored', async (t) => {
  const cases: Array<[string, Record<string, string>, string, number]> = [
    ['/api/v1/volumes/Bad_Name/tags/v1', {}, 'NAME_INVALID', 400],
    ['/api/v1/volumes/ok/tags/-bad', {}, 'TAG_INVALID', 400],
    ['/api/v1/volumes/ok/tags/v1?label=%20bad=1', {}, 'BAD_REQUEST', 400],
    ['/api/v1/volumes/ok/tags/v1', { 'X-Volreg-Host': 'bad host!' }, 'BAD_REQUEST', 400],
    ['/api/v1/volumes/ok/tags/v1?digest=sha256:xyz', {}, 'DIGEST_INVALID', 400],
    ['/api/v1/volumes/ok/tags/v1?digest=md5:abc', {}, 'DIGEST_INVALID', 400],
    // the volume ok/tags: its listing would be the address of the snapshot ok:tags
    ['/api/v1/volumes/ok/tags/tags/v1', {}, 'NAME_INVALID', 400],
  ];
  for (const [path, headers, code, status] of cases) {
    const res = await put(path, gzBytes, headers);
    t.is(res.status, status, path);
    t.is(await errorCode(res), code, path);
  }
  t.is(await server.db.collection(SNAPSHOTS_COLLECTION).countDocuments({ repo_id: 'ok' }), 0);
  const missing = await fetch(url('/api/v1/volumes/nothing/here/tags/v1/content'));
  t.is(missing.status, 404);
  t.is(await errorCode(missing), 'SNAPSHOT_UNKNOWN');
});

test('two tags sharing a layer: deleting one leaves the other pullable', async (t) => {
  const name = 'http/shared';
  const a = (await (await put(`/api/v1/volumes/${name}/tags/a`, gzBytes)).json()) as { layer: { digest: string } };
  const b = (await (await put(`/api/v1/volumes/${name}/tags/b`, gzBytes)).json()) as { layer: { digest: string } };
  t.is(a.layer.digest, b.layer.digest);
  const del = await fetch(url(`/api/v1/volumes/${name}/tags/a`), { method: 'DELETE' });
  t.is(del.status, 200);
  await del.arrayBuffer();
  t.is((await fetch(url(`/api/v1/volumes/${name}/tags/a`))).status, 404);
  const again = await fetch(url(`/api/v1/volumes/${name}/tags/a`), { method: 'DELETE' });
  t.is(again.status, 404);
  await again.arrayBuffer();
  const still = await fetch(url(`/api/v1/volumes/${name}/tags/b/content`));
  t.is(still.status, 200);
  t.deepEqual(Buffer.from(await still.arrayBuffer()), gzBytes);
  const list = (await (await fetch(url(`/api/v1/volumes/${name}/tags`))).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(list.snapshots.map((s) => s.tag), ['b']);
});

test('a tag holding an index whose linux/amd64 entry is a snapshot: read and deleted through /api/v1 like any', async (t) => {
  const name = 'http/indexed';
  const direct = (await (await put(`/api/v1/volumes/${name}/tags/direct`, gzBytes)).json()) as { manifestDigest: string };
  const manifest = await fetch(url(`/v2/${name}/manifests/${direct.manifestDigest}`), { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const size = (await manifest.arrayBuffer()).byteLength;
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: direct.manifestDigest, size, platform: { os: 'linux', architecture: 'amd64' } }],
  });
  const pushed = await fetch(url(`/v2/${name}/manifests/idx`), { method: 'PUT', body: index, headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' } });
  t.is(pushed.status, 201);
  const meta = (await (await fetch(url(`/api/v1/volumes/${name}/tags/idx`))).json()) as { manifestDigest: string };
  t.is(meta.manifestDigest, direct.manifestDigest);

  const del = await fetch(url(`/api/v1/volumes/${name}/tags/idx`), { method: 'DELETE' });
  t.is(del.status, 200);
  t.is(((await del.json()) as { deleted: { manifestDigest: string } }).deleted.manifestDigest, direct.manifestDigest);
  t.is((await fetch(url(`/api/v1/volumes/${name}/tags/idx`))).status, 404);
  const tags = (await (await fetch(url(`/v2/${name}/tags/list`))).json()) as { tags: string[] };
  t.deepEqual(tags.tags, ['direct'], 'the tag is gone, the other one stays');
  t.is((await fetch(url(`/api/v1/volumes/${name}/tags/direct/content`))).status, 200);
});

test('listing: newest first, filtered by host and time, paginated; volumes with latest and total size', async (t) => {
  const name = 'http/listing';
  const stamps: string[] = [];
  for (const [tag, host] of [
    ['t1', 'alpha'],
    ['t2', 'beta'],
    ['t3', 'alpha'],
    ['t4', 'alpha'],
  ] as const) {
    const res = await put(`/api/v1/volumes/${name}/tags/${tag}?host=${host}`, tag === 't4' ? zstBytes : gzBytes);
    stamps.push(((await res.json()) as { created: string }).created);
    await new Promise((r) => setTimeout(r, 15));
  }
  const all = (await (await fetch(url(`/api/v1/volumes/${name}/tags`))).json()) as { total: number; snapshots: Array<{ tag: string }> };
  t.deepEqual(all.snapshots.map((s) => s.tag), ['t4', 't3', 't2', 't1']);
  t.is(all.total, 4);
  const alpha = (await (await fetch(url(`/api/v1/volumes/${name}/tags?host=alpha`))).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(alpha.snapshots.map((s) => s.tag), ['t4', 't3', 't1']);
  const since = (await (await fetch(url(`/api/v1/volumes/${name}/tags?since=${encodeURIComponent(stamps[2]!)}`))).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(since.snapshots.map((s) => s.tag), ['t4', 't3']);
  const until = (await (await fetch(url(`/api/v1/volumes/${name}/tags?until=${encodeURIComponent(stamps[1]!)}`))).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(until.snapshots.map((s) => s.tag), ['t1']);
  const page1 = await fetch(url(`/api/v1/volumes/${name}/tags?limit=2`));
  // the next page starts after the last snapshot listed: its time and tag
  t.is(page1.headers.get('link'), `</api/v1/volumes/${name}/tags?limit=2&after=${Date.parse(stamps[2]!)}.t3>; rel="next"`);
  t.deepEqual(((await page1.json()) as { snapshots: Array<{ tag: string }> }).snapshots.map((s) => s.tag), ['t4', 't3']);
  const page2 = await fetch(url(`/api/v1/volumes/${name}/tags?limit=2&offset=2`));
  t.is(page2.headers.get('link'), null);
  t.deepEqual(((await page2.json()) as { snapshots: Array<{ tag: string }> }).snapshots.map((s) => s.tag), ['t2', 't1']);
  for (const query of ['limit=abc', 'limit=0', 'limit=1001', 'offset=-1', 'offset=1000000001', 'limit=%2B1', 'limit=1e2', 'limit=0x10', 'limit=%201', 'limit=', 'limit=1,2', `offset=${2 ** 53}`, 'offset=99999999999999999999999']) {
    const bad = await fetch(url(`/api/v1/volumes/${name}/tags?${query}`));
    t.is(bad.status, 400, query);
    t.is(await errorCode(bad), 'PAGINATION_NUMBER_INVALID', query);
    const badVolumes = await fetch(url(`/api/v1/volumes?${query}`));
    t.is(badVolumes.status, 400, query);
    await badVolumes.arrayBuffer();
  }
  // the largest offset the message names is taken
  t.is((await fetch(url(`/api/v1/volumes/${name}/tags?offset=1000000000`))).status, 200);
  // leading zeros, however many, are the number
  const zeros = (await (await fetch(url(`/api/v1/volumes/${name}/tags?limit=${'0'.repeat(20)}1`))).json()) as { limit: number; snapshots: unknown[] };
  t.is(zeros.limit, 1);
  t.is(zeros.snapshots.length, 1);
  // times that are not ISO 8601 or epoch seconds, or do not exist, are refused rather than guessed at
  for (const query of ['since=March%207', 'since=2024-02-30', 'since=-1', 'since=yesterday', 'since=%ff', 'until=2024-02-30', 'until=25:00', 'host=no%20spaces']) {
    const bad = await fetch(url(`/api/v1/volumes/${name}/tags?${query}`));
    t.is(bad.status, 400, query);
    t.is(await errorCode(bad), 'BAD_REQUEST', query);
  }
  // the volume list does not filter: a filter is refused (whatever its value), not taken and ignored
  for (const query of ['since=2024-05-01', 'until=%ff', 'host=web-1', 'limit=5&host=a&since=1']) {
    const refused = await fetch(url(`/api/v1/volumes?${query}`));
    t.is(refused.status, 400, query);
    const body = (await refused.json()) as { errors: Array<{ code: string; message: string }> };
    t.is(body.errors[0]!.code, 'BAD_REQUEST', query);
    t.regex(body.errors[0]!.message, /this list does not filter by .*\/api\/v1\/volumes\/<name>\/tags\) does/, query);
  }

  // a parameter a list does not take (a label or tag filter, a typo) is refused, not ignored:
  // a retention job would otherwise read every snapshot as one that matched
  for (const [path, query, names] of [
    [`/api/v1/volumes/${name}/tags`, 'label=env%3Dtest&until=2099-01-01', 'label'],
    [`/api/v1/volumes/${name}/tags`, 'limit=2&tag=t1&hosts=alpha', 'tag, hosts'],
    ['/api/v1/volumes', 'label=env%3Dtest', 'label'],
    ['/api/v1/volumes', 'limit=5&volume=x', 'volume'],
  ] as const) {
    const refused = await fetch(url(`${path}?${query}`));
    t.is(refused.status, 400, `${path}?${query}`);
    const body = (await refused.json()) as { errors: Array<{ code: string; message: string; detail: { unsupported: string[] } }> };
    t.is(body.errors[0]!.code, 'BAD_REQUEST');
    t.regex(body.errors[0]!.message, new RegExp(`^this list takes no parameter ${names} \\(it takes .*\\): nothing was filtered$`));
    t.deepEqual(body.errors[0]!.detail.unsupported, names.split(', '));
  }

  const volumes = (await (await fetch(url('/api/v1/volumes?limit=1000'))).json()) as {
    volumes: Array<{ volume: string; snapshots: number; totalSize: number; storedSize: number; latest: { tag: string } }>;
  };
  const row = volumes.volumes.find((v) => v.volume === name)!;
  // the volume list pages with a Link as the snapshot list does
  await (await put(`/api/v1/volumes/${name}-2/tags/t1`, gzBytes)).arrayBuffer();
  const first = await fetch(url('/api/v1/volumes?limit=1'));
  t.true(((await first.json()) as { total: number }).total >= 2);
  t.regex(first.headers.get('link') ?? '', /^<\/api\/v1\/volumes\?limit=1&after=[^&>]+>; rel="next"$/);
  t.is(row.snapshots, 4);
  t.is(row.totalSize, 3 * gzBytes.length + zstBytes.length);
  t.is(row.storedSize, gzBytes.length + zstBytes.length, 'the three snapshots of one layer hold it once');
  t.is(row.latest.tag, 't4');
});

test('a label sent in an X-Volreg-Label header is read as UTF-8; bytes that are not UTF-8 are refused', async (t) => {
  const res = await fetch(url('/api/v1/volumes/http/utf8-label/tags/v1?label=q=ü'), {
    method: 'PUT',
    body: new Uint8Array(gzBytes),
    headers: { 'X-Volreg-Label': Buffer.from('owner=Zoë Ōtsuka', 'utf8').toString('latin1') },
  });
  t.is(res.status, 201);
  t.deepEqual(((await res.json()) as { labels: Record<string, string> }).labels, { owner: 'Zoë Ōtsuka', q: 'ü' });
  const latin1 = await fetch(url('/api/v1/volumes/http/utf8-label/tags/v2'), {
    method: 'PUT',
    body: new Uint8Array(gzBytes),
    headers: { 'X-Volreg-Label': 'owner=Zo\u00eb' }, // one byte 0xEB: latin1, not UTF-8
  });
  t.is(latin1.status, 400);
  t.is(await errorCode(latin1), 'BAD_REQUEST');
});

test('re-pushing a tag replaces its snapshot', async (t) => {
  const name = 'http/overwrite';
  await (await put(`/api/v1/volumes/${name}/tags/v1`, gzBytes)).arrayBuffer();
  const second = (await (await put(`/api/v1/volumes/${name}/tags/v1`, zstBytes)).json()) as { layer: { digest: string } };
  const meta = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1`))).json()) as { layer: { digest: string }; compression: string };
  t.is(meta.layer.digest, second.layer.digest);
  t.is(meta.compression, 'zstd');
  const list = (await (await fetch(url(`/api/v1/volumes/${name}/tags`))).json()) as { total: number };
  t.is(list.total, 1);
});

test('verify re-hashes from the blob store and records the result', async (t) => {
  const name = 'http/verify';
  const body = await buildTar([{ name: 'only.txt', body: 'verify me '.repeat(1000) }]);
  const created = (await (await put(`/api/v1/volumes/${name}/tags/v1`, body)).json()) as { layer: { digest: Digest } };
  const ok = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1/verify`), { method: 'POST' })).json()) as { ok: boolean; lastVerify: { ok: boolean; at: string } };
  t.true(ok.ok);
  t.true(ok.lastVerify.ok);
  // corrupt the stored layer behind the store's back (same size, one byte changed)
  const file = blobPath(server.dataDir, created.layer.digest);
  const bytes = Buffer.from(body);
  bytes[600] ^= 0x01;
  await writeFile(file, bytes);
  const bad = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1/verify`), { method: 'POST' })).json()) as { ok: boolean; lastVerify: { ok: boolean; problems: string[] } };
  t.false(bad.ok);
  t.regex(bad.lastVerify.problems.join('\n'), /layer content hashes to/);
  const meta = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1`))).json()) as { lastVerify: { ok: boolean; at: string } };
  t.false(meta.lastVerify.ok);
  t.true(Date.parse(meta.lastVerify.at) >= Date.parse(ok.lastVerify.at));
  // the damaged bytes were set aside: absent to every client, so the next upload stores them again
  const place = /moved to (quarantine\/\S+) in the data directory/.exec(bad.lastVerify.problems.join('\n'))?.[1];
  t.truthy(place);
  t.deepEqual(await readFile(join(server.dataDir, place!)), bytes);
  t.is((await fetch(url(`/v2/${name}/blobs/${created.layer.digest}`), { method: 'HEAD' })).status, 404);
  t.is((await fetch(url(`/api/v1/volumes/${name}/tags/v1/content`))).status, 404);
  t.is((await put(`/api/v1/volumes/${name}/tags/v2`, body)).status, 201);
  const mended = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1/verify`), { method: 'POST' })).json()) as { ok: boolean };
  t.true(mended.ok, 'the same content pushed again mends the older snapshot');
  t.deepEqual(Buffer.from(await (await fetch(url(`/api/v1/volumes/${name}/tags/v1/content`))).arrayBuffer()), Buffer.from(body));

  // a config set aside cannot be pushed again (it is the snapshot's own), but the layer still restores
  const info = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1`))).json()) as { configDigest: Digest };
  await rename(blobPath(server.dataDir, info.configDigest), join(server.dataDir, 'quarantine', 'config-by-test'));
  const noConfig = (await (await fetch(url(`/api/v1/volumes/${name}/tags/v1/verify`), { method: 'POST' })).json()) as { ok: boolean; lastVerify: { problems: string[] } };
  t.false(noConfig.ok);
  t.regex(noConfig.lastVerify.problems.join('\n'), /config sha256:\w+ is missing/);
  t.deepEqual(Buffer.from(await (await fetch(url(`/api/v1/volumes/${name}/tags/v1/content`))).arrayBuffer()), Buffer.from(body));
  await rm(join(server.dataDir, 'quarantine'), { recursive: true });
});

test('an artifact pushed through /v2 with the volume type is readable through /api/v1', async (t) => {
  const name = 'http/oci-pushed';
  const pushBlob = (bytes: Buffer): Promise<string> => pushV2Blob(t, name, bytes);
  const config = Buffer.from('{}');
  const configDigest = await pushBlob(config);
  const layerDigest = await pushBlob(zstBytes);
  const manifest = volumeArtifact(
    { mediaType: 'application/vnd.oci.empty.v1+json', digest: configDigest, size: config.length },
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: layerDigest, size: zstBytes.length },
  );
  const res = await fetch(url(`/v2/${name}/manifests/from-oras`), { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(res.status, 201);
  await res.arrayBuffer();
  // listed among the volumes before anything read it through /api/v1
  const volumes = (await (await fetch(url('/api/v1/volumes?limit=1000'))).json()) as { volumes: Array<{ volume: string; snapshots: number; totalSize: number; latest: { tag: string } }> };
  const row = volumes.volumes.find((v) => v.volume === name);
  t.is(row?.snapshots, 1);
  t.is(row?.totalSize, zstBytes.length);
  t.is(row?.latest.tag, 'from-oras');
  const meta = (await (await fetch(url(`/api/v1/volumes/${name}/tags/from-oras`))).json()) as { source: string; compression: string; layer: { digest: string }; uncompressed: unknown };
  t.is(meta.source, 'oci');
  t.is(meta.compression, 'zstd');
  t.is(meta.layer.digest, layerDigest);
  t.is(meta.uncompressed, null);
  const content = await fetch(url(`/api/v1/volumes/${name}/tags/from-oras/content`));
  t.deepEqual(Buffer.from(await content.arrayBuffer()), zstBytes);
  t.is(content.headers.get('content-disposition'), 'attachment; filename="http-oci-pushed-from-oras.tar.zst"');
  const list = (await (await fetch(url(`/api/v1/volumes/${name}/tags`))).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(list.snapshots.map((s) => s.tag), ['from-oras']);

  // a tag holding something that is not a volume is not a snapshot
  const plain = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [],
    }),
  );
  const p = await fetch(url(`/v2/${name}/manifests/image`), { method: 'PUT', body: plain, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(p.status, 201);
  await p.arrayBuffer();
  const notVolume = await fetch(url(`/api/v1/volumes/${name}/tags/image`));
  t.is(notVolume.status, 404);
  t.is(await errorCode(notVolume), 'SNAPSHOT_UNKNOWN');
});

// serial: ava runs it before the concurrent tests, so the volumes it lists are its own
test.serial('the volume list holds only volumes with a snapshot, and its total and pages agree', async (t) => {
  type VolumeList = { total: number; volumes: Array<{ volume: string }> };
  const list = async (q: string): Promise<VolumeList> => (await (await fetch(url(`/api/v1/volumes?${q}`))).json()) as VolumeList;
  for (const v of ['a', 'b', 'c']) await (await put(`/api/v1/volumes/http/listed-${v}/tags/t`, gzBytes)).arrayBuffer();
  await (await put(`/api/v1/volumes/http/emptied/tags/only`, gzBytes)).arrayBuffer();
  t.true((await list('limit=1000')).volumes.some((v) => v.volume === 'http/emptied'));
  // deleted through /v2: its index document stays until a listing brings the index in line
  const del = await fetch(url(`/v2/http/emptied/manifests/only`), { method: 'DELETE' });
  t.is(del.status, 202);
  const all = await list('limit=1000');
  t.deepEqual(all.volumes.map((v) => v.volume), ['http/listed-a', 'http/listed-b', 'http/listed-c'], 'a volume whose last snapshot was deleted is not listed');
  t.is(all.total, 3);
  const paged: string[] = [];
  for (let offset = 0; offset < all.total; offset += 2) {
    const page = await list(`limit=2&offset=${offset}`);
    t.is(page.total, all.total);
    paged.push(...page.volumes.map((v) => v.volume));
  }
  t.deepEqual(paged, all.volumes.map((v) => v.volume));
});

test('verify of a /v2-pushed snapshot whose layer is not an archive answers at once, whenever the inspection gives up', async (t) => {
  const name = 'http/verify-garbage';
  const push = (bytes: Buffer): Promise<string> => pushV2Blob(t, name, bytes);
  const config = Buffer.from('{"volume":"x"}');
  const configDigest = await push(config);
  // Random bytes are refused at the first header, while verify is still reading the layer: the
  // inspection stops reading then, at a moment that varies with the bytes, so several layers.
  for (let i = 0; i < 8; i++) {
    const layer = randomBytes(5_000_000);
    const manifest = volumeArtifact(
      { mediaType: 'application/vnd.volreg.volume.config.v1+json', digest: configDigest, size: config.length },
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: await push(layer), size: layer.length },
    );
    const m = await fetch(url(`/v2/${name}/manifests/bad`), { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
    t.is(m.status, 201);
    await m.arrayBuffer();
    const verified = await fetch(url(`/api/v1/volumes/${name}/tags/bad/verify`), { method: 'POST', signal: AbortSignal.timeout(20_000) });
    const body = (await verified.json()) as { ok: boolean; lastVerify: { problems: string[] } };
    t.false(body.ok);
    t.regex(body.lastVerify.problems.join('\n'), /layer is not a complete tar/);
  }
});

test('a tag deleted through /v2 disappears from the /api/v1 listing', async (t) => {
  const name = 'http/v2-deleted';
  await (await put(`/api/v1/volumes/${name}/tags/keep`, gzBytes)).arrayBuffer();
  await (await put(`/api/v1/volumes/${name}/tags/drop`, gzBytes)).arrayBuffer();
  const del = await fetch(url(`/v2/${name}/manifests/drop`), { method: 'DELETE' });
  t.is(del.status, 202);
  const list = (await (await fetch(url(`/api/v1/volumes/${name}/tags`))).json()) as { total: number; snapshots: Array<{ tag: string }> };
  t.deepEqual(list.snapshots.map((s) => s.tag), ['keep']);
  t.is(list.total, 1);
});

test('clients sending a snapshot very slowly do not hold up the others: uploads and verifies go on beside them', async (t) => {
  const { request } = await import('node:http');
  const { hostname, port } = new URL(server.url);
  // more slow uploads than the inspection's shared buffer has slots: some send part of a tar, then
  // wait; others trickle a few bytes every 20 ms (a slow link), which would take minutes to fill a slot
  const slow = Array.from({ length: 12 }, (_, i) => {
    const req = request({ hostname, port, method: 'PUT', path: `/api/v1/volumes/slow/clients/tags/t${i}`, headers: { 'Content-Type': 'application/octet-stream' } });
    req.on('error', () => undefined);
    req.write(tarBytes.subarray(0, 600));
    return req;
  });
  const trickling = slow.filter((_, i) => i % 2 === 0);
  const trickle = setInterval(() => {
    for (const req of trickling) req.write(Buffer.alloc(64));
  }, 20);
  t.teardown(() => {
    clearInterval(trickle);
    for (const req of slow) req.destroy();
  });
  await new Promise((r) => setTimeout(r, 500));
  const deadline = <T>(p: Promise<T>, what: string): Promise<T> =>
    Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} waited for the slow clients`)), 15_000))]);
  const fast = await deadline(put('/api/v1/volumes/slow/others/tags/fast', tarBytes), 'the upload');
  t.is(fast.status, 201);
  const verified = await deadline(fetch(url('/api/v1/volumes/slow/others/tags/fast/verify'), { method: 'POST' }), 'the verify');
  t.is(verified.status, 200);
  t.is(((await verified.json()) as { ok: boolean }).ok, true);
});
