import { readFile, stat, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import anyTest, { type TestFn } from 'ava';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { blobFiles, bytesOf, hexOf, isError, pushBlob, raw, run, sha256, sha512, startSession } from './blobs-client.ts';

const test = anyTest as TestFn<{ server: TestServer; tmp: string }>;

test.before(async (t) => {
  t.context.server = await startTestServer({ label: 'blobs' });
  t.context.tmp = await mkdtemp(join(tmpdir(), 'volreg-blobs-test-'));
});

test.after.always(async (t) => {
  await t.context.server?.close();
  if (t.context.tmp) await rm(t.context.tmp, { recursive: true, force: true });
});

test('GET serves the exact bytes with digest, length, type, etag and Accept-Ranges', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(3000, 11);
  const digest = await pushBlob(url, 'get/full', bytes);
  const res = await raw(url, 'GET', `/v2/get/full/blobs/${digest}`);
  t.is(res.status, 200);
  t.true(res.body.equals(bytes));
  t.is(res.headers['docker-content-digest'], digest);
  t.is(res.headers['content-length'], '3000');
  t.is(res.headers['content-type'], 'application/octet-stream');
  t.is(res.headers['accept-ranges'], 'bytes');
  t.is(res.headers.etag, `"${digest}"`);
});

test('HEAD answers digest and length with no body; unknown blobs are 404 without a body', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(1234, 12);
  const digest = await pushBlob(url, 'head/repo', bytes);
  const res = await raw(url, 'HEAD', `/v2/head/repo/blobs/${digest}`);
  t.is(res.status, 200);
  t.is(res.headers['docker-content-digest'], digest);
  t.is(res.headers['content-length'], '1234');
  t.is(res.body.length, 0);

  const missing = await raw(url, 'HEAD', `/v2/head/repo/blobs/${sha256('absent')}`);
  t.is(missing.status, 404);
  t.is(missing.body.length, 0);
  // with the headers of the GET, as HTTP asks of HEAD (and distribution does): the error
  // envelope's type and length
  const missingGet = await raw(url, 'GET', `/v2/head/repo/blobs/${sha256('absent')}`);
  t.is(missingGet.status, 404);
  t.is(missing.headers['content-type'], missingGet.headers['content-type']);
  t.is(missing.headers['content-length'], String(missingGet.body.length));

  // curl -I sees the same
  const { stdout } = await run('curl', ['-sS', '-I', `${url}/v2/head/repo/blobs/${digest}`]);
  t.regex(stdout, /^HTTP\/1\.1 200/);
  t.regex(stdout, new RegExp(`Docker-Content-Digest: ${digest}`, 'i'));
  t.regex(stdout, /Content-Length: 1234/i);
});

test('If-None-Match with the blob ETag (or *) is 304 for GET and HEAD; only for a blob the repository holds', async (t) => {
  const { url } = t.context.server;
  const digest = await pushBlob(url, 'inm/repo', bytesOf(2000, 14));
  for (const method of ['GET', 'HEAD']) {
    for (const tag of [`"${digest}"`, `W/"${digest}"`, '*', `"${sha256('other')}", "${digest}"`]) {
      const res = await raw(url, method, `/v2/inm/repo/blobs/${digest}`, { headers: { 'If-None-Match': tag } });
      t.is(res.status, 304, `${method} ${tag}`);
      t.is(res.body.length, 0);
      t.is(res.headers.etag, `"${digest}"`);
      t.is(res.headers['docker-content-digest'], digest);
    }
    const other = await raw(url, method, `/v2/inm/repo/blobs/${digest}`, { headers: { 'If-None-Match': `"${sha256('other')}"` } });
    t.is(other.status, 200, method);
    t.is((await raw(url, method, `/v2/inm/elsewhere/blobs/${digest}`, { headers: { 'If-None-Match': '*' } })).status, 404, `${method} in another repository`);
  }
});

const RANGE_BLOB = bytesOf(3000, 13);

for (const [header, start, end] of [
  ['bytes=0-0', 0, 0],
  ['bytes=500-1499', 500, 1499],
  ['bytes=500-', 500, 2999],
  ['bytes=-500', 2500, 2999],
  ['bytes=2000-5000', 2000, 2999],
  ['bytes=2999-2999', 2999, 2999],
  ['bytes=-5000', 0, 2999],
] as const) {
  test(`Range ${header} is 206 with Content-Range`, async (t) => {
    const { url } = t.context.server;
    const digest = await pushBlob(url, 'range/repo', RANGE_BLOB);
    const res = await raw(url, 'GET', `/v2/range/repo/blobs/${digest}`, { headers: { Range: header } });
    t.is(res.status, 206);
    t.is(res.headers['content-range'], `bytes ${start}-${end}/3000`);
    t.is(res.headers['content-length'], String(end - start + 1));
    t.is(res.headers['docker-content-digest'], digest);
    t.true(res.body.equals(RANGE_BLOB.subarray(start, end + 1)));
  });
}

for (const header of ['bytes=500-0', 'bytes=5000-10000', 'bytes=3000-', 'bytes=-0', 'bytes=x-y', 'bytes=99999999999999999999-1']) {
  test(`Range ${header} is 416 RANGE_INVALID with Content-Range bytes */size`, async (t) => {
    const { url } = t.context.server;
    const digest = await pushBlob(url, 'range/repo', RANGE_BLOB);
    const res = await raw(url, 'GET', `/v2/range/repo/blobs/${digest}`, { headers: { Range: header } });
    isError(t, res, 416, 'RANGE_INVALID');
    t.is(res.headers['content-range'], 'bytes */3000');
  });
}

/** The parts of a multipart/byteranges body, each with its Content-Range and bytes. */
function byteranges(contentType: string | undefined, body: Buffer): Array<{ type: string; range: string; bytes: Buffer }> {
  const boundary = /^multipart\/byteranges; boundary=(\S+)$/.exec(contentType ?? '')?.[1];
  if (!boundary) throw new Error(`not multipart/byteranges: ${contentType}`);
  const parts: Array<{ type: string; range: string; bytes: Buffer }> = [];
  const delimiter = Buffer.from(`--${boundary}`);
  let at = body.indexOf(delimiter);
  if (at !== 0) throw new Error('body does not start with the boundary');
  for (;;) {
    at += delimiter.length;
    if (body.subarray(at, at + 4).toString() === '--\r\n') {
      if (at + 4 !== body.length) throw new Error('bytes after the closing boundary');
      return parts;
    }
    const headEnd = body.indexOf('\r\n\r\n', at);
    const head = body.subarray(at + 2, headEnd).toString('latin1').split('\r\n');
    const field = (name: string): string => head.find((l) => l.toLowerCase().startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
    const [, start, end] = /^bytes (\d+)-(\d+)\//.exec(field('content-range')) ?? [];
    const from = headEnd + 4;
    const to = from + Number(end) - Number(start) + 1;
    parts.push({ type: field('content-type'), range: field('content-range'), bytes: body.subarray(from, to) });
    if (!body.subarray(to, to + 2).equals(Buffer.from('\r\n'))) throw new Error('a part is not followed by CRLF');
    at = to + 2;
    if (body.indexOf(delimiter, at) !== at) throw new Error('no boundary after a part');
  }
}

test('several ranges are a 206 multipart/byteranges reply, in the order asked; curl reads it', async (t) => {
  const { url } = t.context.server;
  const digest = await pushBlob(url, 'range/repo', RANGE_BLOB);
  const res = await raw(url, 'GET', `/v2/range/repo/blobs/${digest}`, { headers: { Range: 'bytes=2000-2009, 0-1,-3,5-6,99999-' } });
  t.is(res.status, 206);
  t.is(res.headers['content-length'], String(res.body.length));
  t.is(res.headers['docker-content-digest'], digest);
  const parts = byteranges(res.headers['content-type'] as string | undefined, res.body);
  t.deepEqual(
    parts.map((p) => p.range),
    ['bytes 2000-2009/3000', 'bytes 0-1/3000', 'bytes 2997-2999/3000', 'bytes 5-6/3000'],
    'the range past the end is left out',
  );
  for (const [i, [a, b]] of [[2000, 2010], [0, 2], [2997, 3000], [5, 7]].entries()) {
    t.true(parts[i]!.bytes.equals(RANGE_BLOB.subarray(a, b)), parts[i]!.range);
    t.is(parts[i]!.type, 'application/octet-stream');
  }
  // a real client: curl -r asks for the ranges and saves the multipart body as it came
  const dir = await mkdtemp(join(tmpdir(), 'volreg-ranges-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await run('curl', ['-fsS', '-r', '0-9,100-109', '-D', join(dir, 'headers'), '-o', join(dir, 'body'), `${url}/v2/range/repo/blobs/${digest}`]);
  const headers = await readFile(join(dir, 'headers'), 'latin1');
  t.regex(headers, /^HTTP\/1\.1 206 /);
  const type = /^content-type: (.*)\r$/im.exec(headers)?.[1];
  const curled = byteranges(type, await readFile(join(dir, 'body')));
  t.deepEqual(
    curled.map((p) => p.bytes),
    [RANGE_BLOB.subarray(0, 10), RANGE_BLOB.subarray(100, 110)],
  );
});

test('several ranges: all past the end is 416; malformed, too many, or more bytes than the blob get the whole blob; another unit too', async (t) => {
  const { url } = t.context.server;
  const digest = await pushBlob(url, 'range/repo', RANGE_BLOB);
  const get = (header: string) => raw(url, 'GET', `/v2/range/repo/blobs/${digest}`, { headers: { Range: header } });
  const none = await get('bytes=3000-3001,5000-');
  isError(t, none, 416, 'RANGE_INVALID');
  t.is(none.headers['content-range'], 'bytes */3000');
  const many = `bytes=${Array.from({ length: 257 }, (_, i) => `${i}-${i}`).join(',')}`;
  for (const header of ['bytes=0-1,x-y', 'bytes=0-1,5-2', many, 'bytes=0-2000,1000-2999', 'items=0-1,5-6']) {
    const res = await get(header);
    t.is(res.status, 200, header.slice(0, 40));
    t.true(res.body.equals(RANGE_BLOB), header.slice(0, 40));
  }
  const justEnough = await get(`bytes=${Array.from({ length: 256 }, (_, i) => `${i * 10}-${i * 10}`).join(',')}`);
  t.is(justEnough.status, 206);
  t.is(byteranges(justEnough.headers['content-type'] as string | undefined, justEnough.body).length, 256);
});

test('If-Range: the range applies only to exactly this strong entity tag; a weak one, *, another tag or a date get the whole blob', async (t) => {
  const { url } = t.context.server;
  const digest = await pushBlob(url, 'range/repo', RANGE_BLOB);
  const get = (ifRange: string) => raw(url, 'GET', `/v2/range/repo/blobs/${digest}`, { headers: { Range: 'bytes=0-9', 'If-Range': ifRange } });
  const hit = await get(`"${digest}"`);
  t.is(hit.status, 206);
  t.true(hit.body.equals(RANGE_BLOB.subarray(0, 10)));
  for (const other of [`W/"${digest}"`, '*', `"${sha256('other')}"`, 'Tue, 15 Nov 1994 08:12:31 GMT', `"${digest}", "x"`]) {
    const res = await get(other);
    t.is(res.status, 200, other);
    t.true(res.body.equals(RANGE_BLOB), other);
  }
});

test('any range of an empty blob is 416; the empty blob itself is served', async (t) => {
  const { url } = t.context.server;
  const digest = await pushBlob(url, 'range/empty', Buffer.alloc(0));
  const whole = await raw(url, 'GET', `/v2/range/empty/blobs/${digest}`);
  t.is(whole.status, 200);
  t.is(whole.headers['content-length'], '0');
  t.is(whole.headers['docker-content-digest'], sha256(''));
  isError(t, await raw(url, 'GET', `/v2/range/empty/blobs/${digest}`, { headers: { Range: 'bytes=0-0' } }), 416, 'RANGE_INVALID');
});

test('curl -C - resumes an interrupted download to a byte-identical file', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(700_000, 14);
  const digest = await pushBlob(url, 'curl/resume', bytes);
  const file = join(t.context.tmp, 'partial.bin');
  await writeFile(file, bytes.subarray(0, 123_457));
  await run('curl', ['-sSf', '-C', '-', '-o', file, `${url}/v2/curl/resume/blobs/${digest}`]);
  t.true((await readFile(file)).equals(bytes));
  const { stdout } = await run('curl', ['-sSf', '-r', '100-199', `${url}/v2/curl/resume/blobs/${digest}`], { encoding: 'buffer' });
  t.true(Buffer.from(stdout).equals(bytes.subarray(100, 200)));
});

test('a blob is visible only in repositories that hold it', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(100, 15);
  const digest = await pushBlob(url, 'scope/one', bytes);
  t.is((await raw(url, 'HEAD', `/v2/scope/one/blobs/${digest}`)).status, 200);
  isError(t, await raw(url, 'GET', `/v2/scope/two/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
  t.is((await raw(url, 'HEAD', `/v2/scope/two/blobs/${digest}`)).status, 404);
  isError(t, await raw(url, 'DELETE', `/v2/scope/two/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
});

test('unknown blob is 404 BLOB_UNKNOWN', async (t) => {
  const { url } = t.context.server;
  isError(t, await raw(url, 'GET', `/v2/nothing/here/blobs/${sha256('nope')}`), 404, 'BLOB_UNKNOWN');
  isError(t, await raw(url, 'GET', `/v2/nothing/here/blobs/${sha512('nope')}`), 404, 'BLOB_UNKNOWN');
});

for (const [label, digest] of [
  ['short hex', 'sha256:abc'],
  ['uppercase hex', `sha256:${'A'.repeat(64)}`],
  ['no algorithm', 'abcdef'],
  ['unsupported algorithm', `md5:${'a'.repeat(32)}`],
  ['unsupported sha1', `sha1:${'a'.repeat(40)}`],
  ['sha512 of sha256 length', `sha512:${'a'.repeat(64)}`],
  ['percent-encoded junk', 'sha256%3A%00%01'],
  ['trailing colon', 'sha256:'],
] as const) {
  test(`a bad digest in the path (${label}) is 400 DIGEST_INVALID`, async (t) => {
    const { url } = t.context.server;
    for (const method of ['GET', 'DELETE'] as const) {
      isError(t, await raw(url, method, `/v2/bad/digest/blobs/${digest}`), 400, 'DIGEST_INVALID');
    }
    const head = await raw(url, 'HEAD', `/v2/bad/digest/blobs/${digest}`);
    t.is(head.status, 400);
    t.is(head.body.length, 0);
  });
}

for (const name of ['UPPER', 'a..b', 'a/', '-lead', 'trail-', 'a//b', 'x'.repeat(256), 'a%2E%2Eb', 'a%2F..%2Fb', 'caf%C3%A9']) {
  test(`an invalid repository name (${name.slice(0, 20)}) is 400 NAME_INVALID`, async (t) => {
    const { url } = t.context.server;
    const digest = sha256('x');
    isError(t, await raw(url, 'GET', `/v2/${name}/blobs/${digest}`), 400, 'NAME_INVALID');
    isError(t, await raw(url, 'POST', `/v2/${name}/blobs/uploads/`), 400, 'NAME_INVALID');
  });
}

test('DELETE removes the blob from one repository only; bytes stay for GC', async (t) => {
  const { url, dataDir } = t.context.server;
  const bytes = bytesOf(4000, 16);
  const digest = await pushBlob(url, 'del/one', bytes);
  await pushBlob(url, 'del/two', bytes);
  const res = await raw(url, 'DELETE', `/v2/del/one/blobs/${digest}`);
  t.is(res.status, 202);
  t.is(res.headers['docker-content-digest'], digest);
  t.is(res.body.length, 0);
  isError(t, await raw(url, 'GET', `/v2/del/one/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
  isError(t, await raw(url, 'DELETE', `/v2/del/one/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
  t.true((await raw(url, 'GET', `/v2/del/two/blobs/${digest}`)).body.equals(bytes));
  t.true((await blobFiles(dataDir)).includes(hexOf(digest)));
  // pushing it again makes it visible again, cheaply
  await pushBlob(url, 'del/one', bytes);
  t.is((await raw(url, 'HEAD', `/v2/del/one/blobs/${digest}`)).status, 200);
});

test('the blob unit and its association are Pulp 2 documents', async (t) => {
  const { url, db } = t.context.server;
  const bytes = bytesOf(512, 17);
  const digest = await pushBlob(url, 'pulp/shape', bytes);
  const unit = await db.collection('units_docker_blob').findOne({ digest });
  t.truthy(unit);
  t.is(unit!.size, 512);
  t.is(unit!._content_type_id, 'docker_blob');
  t.is(unit!._ns, 'units_docker_blob');
  t.deepEqual(unit!.pulp_user_metadata, {});
  t.is(typeof unit!._last_updated, 'number');
  t.regex(String(unit!._id), /^[0-9a-f-]{36}$/);
  const assoc = await db.collection('repo_content_units').find({ repo_id: 'pulp/shape', unit_type_id: 'docker_blob' }).toArray();
  t.is(assoc.length, 1);
  t.is(assoc[0]!.unit_id, unit!._id);
  t.regex(String(assoc[0]!.created), /^\d{4}-\d\d-\d\dT/);
  t.truthy(await db.collection('repos').findOne({ _id: 'pulp/shape' } as never));
});

test('sha512 blobs: pushed with a sha512 digest, stored under blobs/sha512, served with it', async (t) => {
  const { url, dataDir } = t.context.server;
  const bytes = bytesOf(2048, 18);
  const digest = await pushBlob(url, 'sha/five-twelve', bytes, sha512(bytes));
  const res = await raw(url, 'GET', `/v2/sha/five-twelve/blobs/${digest}`);
  t.is(res.status, 200);
  t.is(res.headers['docker-content-digest'], digest);
  t.true(res.body.equals(bytes));
  const hex = hexOf(digest);
  t.true((await stat(join(dataDir, 'blobs', 'sha512', hex.slice(0, 2), hex))).isFile());
  // the same bytes under sha256 are another blob name, unknown until pushed so
  isError(t, await raw(url, 'GET', `/v2/sha/five-twelve/blobs/${sha256(bytes)}`), 404, 'BLOB_UNKNOWN');
});

test('a blob being uploaded is not visible until its upload is finished', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(10_000, 19);
  const loc = await startSession(url, 'partial/view');
  t.is((await raw(url, 'PATCH', loc, { body: bytes })).status, 202);
  t.is((await raw(url, 'HEAD', `/v2/partial/view/blobs/${sha256(bytes)}`)).status, 404);
  t.is((await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`)).status, 201);
  t.is((await raw(url, 'HEAD', `/v2/partial/view/blobs/${sha256(bytes)}`)).status, 200);
});

test('methods a blob URL does not serve are 405 UNSUPPORTED', async (t) => {
  const { url } = t.context.server;
  const res = await raw(url, 'PUT', `/v2/m/blobs/${sha256('x')}`, { body: Buffer.from('x') });
  isError(t, res, 405, 'UNSUPPORTED');
  t.regex(String(res.headers.allow), /GET/);
});
