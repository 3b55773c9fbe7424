import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import anyTest, { type TestFn } from 'ava';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stalledChunk } from '../helpers/stalled-chunk.ts';
import { blobFiles, bytesOf, hexOf, isError, pushBlob, raw, run, sha256, sha512, startSession, uploadFiles } from './blobs-client.ts';

const test = anyTest as TestFn<{ server: TestServer; tmp: string }>;

test.before(async (t) => {
  t.context.server = await startTestServer({ label: 'uploads' });
  t.context.tmp = await mkdtemp(join(tmpdir(), 'volreg-uploads-test-'));
});

test.after.always(async (t) => {
  await t.context.server?.close();
  if (t.context.tmp) await rm(t.context.tmp, { recursive: true, force: true });
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

test('POST opens a session: 202, Location with the id, Docker-Upload-UUID, Range, OCI-Chunk-Min-Length', async (t) => {
  const { url } = t.context.server;
  const res = await raw(url, 'POST', '/v2/session/open/blobs/uploads/', { headers: { 'Content-Length': '0' } });
  t.is(res.status, 202);
  const id = String(res.headers['docker-upload-uuid']);
  t.regex(id, UUID);
  t.is(res.headers.location, `/v2/session/open/blobs/uploads/${id}`);
  t.is(res.headers.range, '0-0');
  t.is(res.headers['content-length'], '0');
  t.true(Number(res.headers['oci-chunk-min-length']) > 0);
  const status = await raw(url, 'GET', String(res.headers.location));
  t.is(status.status, 204);
  t.is(status.headers.range, '0-0');
  t.is(status.headers['docker-upload-uuid'], id);
  t.is(status.headers.location, res.headers.location);
});

test('POST then PUT with the whole body (monolithic): 201, Location of the blob, digest', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(100_000, 21);
  const loc = await startSession(url, 'mono/put');
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  t.is(put.status, 201);
  t.is(put.headers.location, `/v2/mono/put/blobs/${sha256(bytes)}`);
  t.is(put.headers['docker-content-digest'], sha256(bytes));
  t.is(put.headers['content-length'], '0');
  t.true((await raw(url, 'GET', String(put.headers.location))).body.equals(bytes));
  isError(t, await raw(url, 'GET', loc), 404, 'BLOB_UPLOAD_UNKNOWN');
});

test('single POST with ?digest=: 201 with Location and digest', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(5000, 22);
  const res = await raw(url, 'POST', `/v2/mono/post/blobs/uploads/?digest=${sha256(bytes)}`, { body: bytes });
  t.is(res.status, 201);
  t.is(res.headers.location, `/v2/mono/post/blobs/${sha256(bytes)}`);
  t.is(res.headers['docker-content-digest'], sha256(bytes));
  t.true((await raw(url, 'GET', String(res.headers.location))).body.equals(bytes));
});

test('single POST with a wrong digest is 400 DIGEST_INVALID and keeps nothing', async (t) => {
  const { url, dataDir, db } = t.context.server;
  const bytes = bytesOf(5000, 23);
  const claimed = sha256('not these bytes');
  isError(t, await raw(url, 'POST', `/v2/mono/wrong/blobs/uploads/?digest=${claimed}`, { body: bytes }), 400, 'DIGEST_INVALID');
  for (const d of [claimed, sha256(bytes)]) {
    t.is((await raw(url, 'HEAD', `/v2/mono/wrong/blobs/${d}`)).status, 404);
    t.false((await blobFiles(dataDir)).includes(hexOf(d)));
    t.is(await db.collection('units_docker_blob').countDocuments({ digest: d }), 0);
  }
  t.is(await db.collection('repo_content_units').countDocuments({ repo_id: 'mono/wrong' }), 0);
});

test('single POST whose body is shorter than Content-Length says so and keeps nothing', async (t) => {
  const { url, dataDir } = t.context.server;
  const bytes = bytesOf(3000, 24);
  // curl --data-binary with a lying Content-Length would hang; a raw socket shows it: the
  // server sees the connection end early.
  const { connect } = await import('node:net');
  const port = Number(new URL(url).port);
  await new Promise<void>((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(`POST /v2/mono/short/blobs/uploads/?digest=${sha256(bytes)} HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n`);
      sock.end(bytes.subarray(0, 1000));
    });
    sock.on('error', reject);
    sock.on('close', () => resolve());
    sock.resume();
  });
  t.is((await raw(url, 'HEAD', `/v2/mono/short/blobs/${sha256(bytes)}`)).status, 404);
  t.false((await blobFiles(dataDir)).includes(hexOf(sha256(bytes))));
  // the partial upload is cancelled, not left for the purge: no session holds our bytes
  await new Promise((r) => setTimeout(r, 300));
  const { readFile } = await import('node:fs/promises');
  for (const f of (await uploadFiles(dataDir)).filter((x) => x.endsWith('/data'))) {
    const held = await readFile(join(dataDir, 'uploads', f)).catch(() => Buffer.alloc(0));
    t.false(held.length > 0 && held.equals(bytes.subarray(0, held.length)), `left behind in ${f}`);
  }
});

test('a chunk whose client stalled gives way to the next request on its session: the retry goes through at once', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(20_000, 26);
  const loc = await startSession(url, 'stalled/chunk');
  // a PATCH that announces 10,000 bytes, sends 10 and then nothing (its connection died unnoticed)
  const stalled = stalledChunk(url, loc, bytes);
  await new Promise((r) => setTimeout(r, 300)); // it holds the session now
  const started = Date.now();
  const retry = await raw(url, 'PATCH', loc, { body: bytes.subarray(0, 10_000), headers: { 'Content-Range': '0-9999' } });
  t.is(retry.status, 202);
  t.is(retry.headers.range, '0-9999');
  // it gives way after 2 s of silence (a busy session used to hold a retry 10 s, then refuse it); loaded CI machines took up to 5 s
  t.true(Date.now() - started < 8000, `the retry waited ${Date.now() - started} ms`);
  await stalled.closed; // the stalled request's connection is closed, its 10 bytes dropped
  const rest = await raw(url, 'PUT', `${String(retry.headers.location)}?digest=${sha256(bytes)}`, { body: bytes.subarray(10_000) });
  t.is(rest.status, 201);
  t.true((await raw(url, 'GET', `/v2/stalled/chunk/blobs/${sha256(bytes)}`)).body.equals(bytes));
});

test('chunked upload with Content-Range: 202s with Range, status, then PUT', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(30_000, 25);
  let loc = await startSession(url, 'chunked/ranges');
  for (const [start, end] of [
    [0, 9999],
    [10_000, 19_999],
    [20_000, 29_999],
  ] as const) {
    const res = await raw(url, 'PATCH', loc, {
      body: bytes.subarray(start, end + 1),
      headers: { 'Content-Range': `${start}-${end}`, 'Content-Type': 'application/octet-stream' },
    });
    t.is(res.status, 202);
    t.is(res.headers.range, `0-${end}`);
    t.is(res.headers['content-length'], '0');
    loc = String(res.headers.location);
    const status = await raw(url, 'GET', loc);
    t.is(status.status, 204);
    t.is(status.headers.range, `0-${end}`);
  }
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { headers: { 'Content-Length': '0' } });
  t.is(put.status, 201);
  t.true((await raw(url, 'GET', `/v2/chunked/ranges/blobs/${sha256(bytes)}`)).body.equals(bytes));
});

test('chunks without Content-Range (streamed PATCHes) and a final chunk in the PUT', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(50_000, 26);
  const loc = await startSession(url, 'chunked/stream');
  t.is((await raw(url, 'PATCH', loc, { body: bytes.subarray(0, 20_000) })).headers.range, '0-19999');
  t.is((await raw(url, 'PATCH', loc, { body: bytes.subarray(20_000, 30_000) })).headers.range, '0-29999');
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, {
    body: bytes.subarray(30_000),
    headers: { 'Content-Range': '30000-49999' },
  });
  t.is(put.status, 201);
  t.true((await raw(url, 'GET', `/v2/chunked/stream/blobs/${sha256(bytes)}`)).body.equals(bytes));
});

test('Transfer-Encoding: chunked bodies work for PATCH, PUT and single POST', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(200_000, 27);
  const loc = await startSession(url, 'te/chunked');
  const patch = await raw(url, 'PATCH', loc, { body: [bytes.subarray(0, 50_000), bytes.subarray(50_000, 100_000)], chunked: true });
  t.is(patch.status, 202);
  t.is(patch.headers.range, '0-99999');
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: [bytes.subarray(100_000)], chunked: true });
  t.is(put.status, 201);
  t.true((await raw(url, 'GET', `/v2/te/chunked/blobs/${sha256(bytes)}`)).body.equals(bytes));

  const other = bytesOf(70_000, 28);
  const post = await raw(url, 'POST', `/v2/te/chunked/blobs/uploads/?digest=${sha256(other)}`, { body: [other.subarray(0, 1), other.subarray(1)], chunked: true });
  t.is(post.status, 201);
});

test('a PATCH with Content-Length 0 or no body keeps the offset', async (t) => {
  const { url } = t.context.server;
  const loc = await startSession(url, 'empty/patch');
  t.is((await raw(url, 'PATCH', loc, { body: Buffer.from('abc') })).headers.range, '0-2');
  const zero = await raw(url, 'PATCH', loc, { headers: { 'Content-Length': '0' } });
  t.is(zero.status, 202);
  t.is(zero.headers.range, '0-2');
  const none = await raw(url, 'PATCH', loc);
  t.is(none.status, 202);
  t.is(none.headers.range, '0-2');
  t.is((await raw(url, 'PUT', `${loc}?digest=${sha256('abc')}`)).status, 201);
});

test('an empty-body PUT with the digest of zero bytes creates the empty blob', async (t) => {
  const { url } = t.context.server;
  const loc = await startSession(url, 'empty/blob');
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256('')}`, { headers: { 'Content-Length': '0' } });
  t.is(put.status, 201);
  t.is(put.headers['docker-content-digest'], sha256(''));
  const get = await raw(url, 'GET', `/v2/empty/blob/blobs/${sha256('')}`);
  t.is(get.status, 200);
  t.is(get.body.length, 0);
});

test('out-of-order and overlapping chunks are 416 with the current Range; the session carries on', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(3000, 29);
  const loc = await startSession(url, 'chunked/order');
  t.is((await raw(url, 'PATCH', loc, { body: bytes.subarray(0, 1000), headers: { 'Content-Range': '0-999' } })).status, 202);

  const cases: Array<[string, Buffer]> = [
    ['2000-2999', bytes.subarray(2000, 3000)], // skips ahead
    ['0-999', bytes.subarray(0, 1000)], // repeats
    ['500-1499', bytes.subarray(500, 1500)], // overlaps
    ['1001-1001', bytes.subarray(1001, 1002)], // one past
  ];
  for (const [range, body] of cases) {
    const res = await raw(url, 'PATCH', loc, { body, headers: { 'Content-Range': range } });
    isError(t, res, 416, 'RANGE_INVALID');
    t.is(res.headers.range, '0-999', range);
    t.is(res.headers.location, loc);
    t.is(res.headers['docker-upload-uuid'], loc.split('/').pop());
  }
  // the final chunk in a PUT is checked the same way
  const badPut = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: bytes.subarray(2000), headers: { 'Content-Range': '2000-2999' } });
  isError(t, badPut, 416, 'RANGE_INVALID');
  t.is(badPut.headers.range, '0-999');

  t.is((await raw(url, 'GET', loc)).headers.range, '0-999');
  t.is((await raw(url, 'PATCH', loc, { body: bytes.subarray(1000, 2000), headers: { 'Content-Range': '1000-1999' } })).status, 202);
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: bytes.subarray(2000), headers: { 'Content-Range': '2000-2999' } });
  t.is(put.status, 201);
  t.true((await raw(url, 'GET', `/v2/chunked/order/blobs/${sha256(bytes)}`)).body.equals(bytes));
});

for (const range of ['abc', '5-4', '-1', '1-', '0-1-2', 'bytes=0-9', '0-9,10-19']) {
  test(`a malformed Content-Range (${range}) is 416 RANGE_INVALID`, async (t) => {
    const { url } = t.context.server;
    const loc = await startSession(url, 'chunked/malformed');
    const res = await raw(url, 'PATCH', loc, { body: Buffer.alloc(10), headers: { 'Content-Range': range } });
    isError(t, res, 416, 'RANGE_INVALID');
    t.is(res.headers.range, '0-0');
    t.is((await raw(url, 'GET', loc)).headers.range, '0-0');
  });
}

test('Content-Range numbers are judged by value: past 2^53 - 1 or a total not past the end is 416 saying so; leading zeros are the number', async (t) => {
  const { url } = t.context.server;
  const refused: Array<[string, RegExp]> = [
    ['9007199254740992-9007199254740996', /past the largest offset/],
    ['0-9223372036854775808', /past the largest offset/],
    ['9007199254740990-9007199254740994', /past the largest offset/],
    ['bytes 0-4/3', /total is not past its end/],
  ];
  for (const [range, message] of refused) {
    const loc = await startSession(url, 'chunked/values');
    const res = await raw(url, 'PATCH', loc, { body: Buffer.from('hello'), headers: { 'Content-Range': range } });
    isError(t, res, 416, 'RANGE_INVALID');
    t.regex((JSON.parse(res.body.toString()) as { errors: Array<{ message: string }> }).errors[0]!.message, message, range);
    t.is((await raw(url, 'GET', loc)).headers.range, '0-0', `${range}: nothing appended`);
  }
  const loc = await startSession(url, 'chunked/values');
  const zeros = await raw(url, 'PATCH', loc, { body: Buffer.from('hello'), headers: { 'Content-Range': '00000000000000000000-00000000000000000004' } });
  t.is(zeros.status, 202);
  t.is(zeros.headers.range, '0-4');
});

test('a Content-Length that disagrees with the Content-Range is 400 SIZE_INVALID, nothing appended', async (t) => {
  const { url } = t.context.server;
  const loc = await startSession(url, 'chunked/size');
  isError(t, await raw(url, 'PATCH', loc, { body: Buffer.alloc(10), headers: { 'Content-Range': '0-19' } }), 400, 'SIZE_INVALID');
  // a chunked body longer than its range
  isError(t, await raw(url, 'PATCH', loc, { body: [Buffer.alloc(30)], chunked: true, headers: { 'Content-Range': '0-19' } }), 400, 'SIZE_INVALID');
  isError(t, await raw(url, 'PATCH', loc, { body: [Buffer.alloc(5)], chunked: true, headers: { 'Content-Range': '0-19' } }), 400, 'SIZE_INVALID');
  t.is((await raw(url, 'GET', loc)).headers.range, '0-0');
  t.is((await raw(url, 'PATCH', loc, { body: Buffer.alloc(20), headers: { 'Content-Range': '0-19' } })).headers.range, '0-19');
});

test('a final PUT whose Content-Range announces bytes it does not carry is 400 SIZE_INVALID; the session stays', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(3000, 31);
  const loc = await startSession(url, 'put/emptyrange');
  t.is((await raw(url, 'PATCH', loc, { body: bytes.subarray(0, 2000), headers: { 'Content-Range': '0-1999' } })).status, 202);
  // no body at all, and an explicitly empty one: the announced chunk never came
  isError(t, await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { headers: { 'Content-Range': '2000-2999' } }), 400, 'SIZE_INVALID');
  isError(t, await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: Buffer.alloc(0), headers: { 'Content-Range': '2000-2999' } }), 400, 'SIZE_INVALID');
  t.is((await raw(url, 'GET', loc)).headers.range, '0-1999');
  const put = await raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: bytes.subarray(2000), headers: { 'Content-Range': '2000-2999' } });
  t.is(put.status, 201);
  t.true((await raw(url, 'GET', String(put.headers.location))).body.equals(bytes));
});

test('PUT without a digest is 400 DIGEST_INVALID and the session stays', async (t) => {
  const { url } = t.context.server;
  const loc = await startSession(url, 'put/nodigest');
  await raw(url, 'PATCH', loc, { body: Buffer.from('hello') });
  isError(t, await raw(url, 'PUT', loc), 400, 'DIGEST_INVALID');
  isError(t, await raw(url, 'PUT', `${loc}?digest=`), 400, 'DIGEST_INVALID');
  isError(t, await raw(url, 'PUT', `${loc}?digest=sha256:123`), 400, 'DIGEST_INVALID');
  isError(t, await raw(url, 'PUT', `${loc}?digest=sha1:${'a'.repeat(40)}`), 400, 'DIGEST_INVALID');
  t.is((await raw(url, 'GET', loc)).headers.range, '0-4');
  t.is((await raw(url, 'PUT', `${loc}?digest=${sha256('hello')}`)).status, 201);
});

test('a final PUT sent twice at once (a client retrying) stores the blob once; the other is refused, not appended', async (t) => {
  const { url } = t.context.server;
  for (const size of [1000, 2 * 1024 * 1024]) {
    const bytes = bytesOf(size, 31);
    const loc = await startSession(url, 'put/twice');
    const puts = await Promise.all([1, 2, 3].map(() => raw(url, 'PUT', `${loc}?digest=${sha256(bytes)}`, { body: bytes })));
    t.deepEqual(puts.map((p) => p.status).filter((s) => s === 201), [201], `size ${size}: ${puts.map((p) => p.status).join(',')}`);
    for (const p of puts.filter((r) => r.status !== 201)) {
      t.true(p.status === 416 || p.status === 404, `size ${size}: ${p.status} ${p.body.toString()}`);
    }
    const got = await raw(url, 'GET', `/v2/put/twice/blobs/${sha256(bytes)}`);
    t.is(got.status, 200);
    t.true(got.body.equals(bytes));
  }
});

test('PUT with the wrong digest is 400 DIGEST_INVALID; the session and its bytes are gone', async (t) => {
  const { url, dataDir, db } = t.context.server;
  const bytes = bytesOf(40_000, 30);
  const loc = await startSession(url, 'put/wrong');
  const id = loc.split('/').pop()!;
  await raw(url, 'PATCH', loc, { body: bytes });
  t.true((await uploadFiles(dataDir)).some((f) => f.startsWith(id)));
  isError(t, await raw(url, 'PUT', `${loc}?digest=${sha256('other')}`), 400, 'DIGEST_INVALID');
  isError(t, await raw(url, 'GET', loc), 404, 'BLOB_UPLOAD_UNKNOWN');
  t.false((await uploadFiles(dataDir)).some((f) => f.startsWith(id)));
  t.is(await db.collection('uploads').countDocuments({ _id: id } as never), 0);
  t.is((await raw(url, 'HEAD', `/v2/put/wrong/blobs/${sha256(bytes)}`)).status, 404);
  t.false((await blobFiles(dataDir)).includes(hexOf(sha256(bytes))));
});

test('DELETE cancels a session: 204, then 404 BLOB_UPLOAD_UNKNOWN; files and document gone', async (t) => {
  const { url, dataDir, db } = t.context.server;
  const loc = await startSession(url, 'cancel/me');
  const id = loc.split('/').pop()!;
  await raw(url, 'PATCH', loc, { body: bytesOf(10_000, 31) });
  const del = await raw(url, 'DELETE', loc, { headers: { 'Content-Length': '0' } });
  t.is(del.status, 204);
  t.is(del.body.length, 0);
  for (const method of ['GET', 'PATCH', 'PUT', 'DELETE'] as const) {
    isError(t, await raw(url, method, method === 'PUT' ? `${loc}?digest=${sha256('')}` : loc), 404, 'BLOB_UPLOAD_UNKNOWN');
  }
  t.false((await uploadFiles(dataDir)).some((f) => f.startsWith(id)));
  t.is(await db.collection('uploads').countDocuments({ _id: id } as never), 0);
});

for (const id of [randomUUID(), 'not-a-uuid', '..%2F..%2F..%2Fetc%2Fpasswd', 'a%2e%2e', 'x'.repeat(500), 'ABCDEF00-0000-4000-8000-000000000000', '%00']) {
  test(`an unknown or hostile session id (${id.slice(0, 24)}) is 404 BLOB_UPLOAD_UNKNOWN`, async (t) => {
    const { url } = t.context.server;
    for (const method of ['GET', 'PATCH', 'PUT', 'DELETE'] as const) {
      const path = `/v2/hostile/ids/blobs/uploads/${id}${method === 'PUT' ? `?digest=${sha256('')}` : ''}`;
      isError(t, await raw(url, method, path, method === 'PATCH' ? { body: Buffer.from('x') } : {}), 404, 'BLOB_UPLOAD_UNKNOWN');
    }
  });
}

test("a session belongs to its repository: another repository's URL is 404", async (t) => {
  const { url } = t.context.server;
  const loc = await startSession(url, 'owner/one');
  const id = loc.split('/').pop()!;
  const foreign = `/v2/owner/two/blobs/uploads/${id}`;
  isError(t, await raw(url, 'GET', foreign), 404, 'BLOB_UPLOAD_UNKNOWN');
  isError(t, await raw(url, 'PATCH', foreign, { body: Buffer.from('x') }), 404, 'BLOB_UPLOAD_UNKNOWN');
  isError(t, await raw(url, 'PUT', `${foreign}?digest=${sha256('')}`), 404, 'BLOB_UPLOAD_UNKNOWN');
  isError(t, await raw(url, 'DELETE', foreign), 404, 'BLOB_UPLOAD_UNKNOWN');
  t.is((await raw(url, 'GET', loc)).status, 204);
});

test('mount from a repository that holds the blob: 201, visible in the target', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(7000, 32);
  const digest = await pushBlob(url, 'mount/source', bytes);
  const res = await raw(url, 'POST', `/v2/mount/target/blobs/uploads/?mount=${digest}&from=mount/source`);
  t.is(res.status, 201);
  t.is(res.headers.location, `/v2/mount/target/blobs/${digest}`);
  t.is(res.headers['docker-content-digest'], digest);
  t.true((await raw(url, 'GET', `/v2/mount/target/blobs/${digest}`)).body.equals(bytes));
});

test('mount that cannot be done falls back to a 202 session', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(700, 33);
  const digest = await pushBlob(url, 'mount/has', bytes);
  for (const query of [`?mount=${digest}&from=mount/lacks`, `?mount=${digest}`, `?mount=${sha256('absent')}&from=mount/has`]) {
    const res = await raw(url, 'POST', `/v2/mount/fallback/blobs/uploads/${query}`);
    t.is(res.status, 202, query);
    t.regex(String(res.headers.location), /^\/v2\/mount\/fallback\/blobs\/uploads\//);
    await raw(url, 'DELETE', String(res.headers.location));
  }
  t.is((await raw(url, 'HEAD', `/v2/mount/fallback/blobs/${digest}`)).status, 404);
});

test('mount with a malformed digest or source name is 400', async (t) => {
  const { url } = t.context.server;
  isError(t, await raw(url, 'POST', `/v2/mount/bad/blobs/uploads/?mount=sha256:zz&from=mount/has`), 400, 'DIGEST_INVALID');
  isError(t, await raw(url, 'POST', `/v2/mount/bad/blobs/uploads/?mount=${sha256('x')}&from=Not..Valid`), 400, 'NAME_INVALID');
});

test('digest-algorithm=sha512 sessions commit under sha512; unknown algorithms are 400', async (t) => {
  const { url } = t.context.server;
  const bytes = bytesOf(9000, 34);
  const loc = await startSession(url, 'algo/five', '?digest-algorithm=sha512');
  await raw(url, 'PATCH', loc, { body: bytes });
  const put = await raw(url, 'PUT', `${loc}?digest=${sha512(bytes)}`);
  t.is(put.status, 201);
  t.is(put.headers['docker-content-digest'], sha512(bytes));
  // a sha256 session finished with a sha512 digest works too (re-hashed once)
  const loc2 = await startSession(url, 'algo/five');
  await raw(url, 'PATCH', loc2, { body: bytes });
  t.is((await raw(url, 'PUT', `${loc2}?digest=${sha512(bytes)}`)).status, 201);
  isError(t, await raw(url, 'POST', '/v2/algo/five/blobs/uploads/?digest-algorithm=md5'), 400, 'DIGEST_INVALID');
  isError(t, await raw(url, 'POST', `/v2/algo/five/blobs/uploads/?digest=md5:${'a'.repeat(32)}`, { body: Buffer.from('x') }), 400, 'DIGEST_INVALID');
});

test('re-pushing an existing blob is cheap: HEAD 200, and a second upload commits as a no-op', async (t) => {
  const { url, db } = t.context.server;
  const bytes = bytesOf(20_000, 35);
  const digest = await pushBlob(url, 'repush/a', bytes);
  t.is((await raw(url, 'HEAD', `/v2/repush/a/blobs/${digest}`)).status, 200);
  await pushBlob(url, 'repush/a', bytes);
  await pushBlob(url, 'repush/b', bytes);
  t.is(await db.collection('units_docker_blob').countDocuments({ digest }), 1);
  t.is(await db.collection('repo_content_units').countDocuments({ repo_id: 'repush/a', unit_type_id: 'docker_blob' }), 1);
});

test('50 concurrent uploads of the same blob all succeed with one blob file and one unit', async (t) => {
  const { url, dataDir, db } = t.context.server;
  const bytes = bytesOf(300_000, 36);
  const digest = sha256(bytes);
  const results = await Promise.all(
    Array.from({ length: 50 }, async (_, i) => {
      if (i % 3 === 0) return (await raw(url, 'POST', `/v2/race/same/blobs/uploads/?digest=${digest}`, { body: bytes })).status;
      const loc = await startSession(url, 'race/same');
      if (i % 3 === 1) return (await raw(url, 'PUT', `${loc}?digest=${digest}`, { body: bytes })).status;
      await raw(url, 'PATCH', loc, { body: bytes.subarray(0, 100_000), headers: { 'Content-Range': '0-99999' } });
      return (await raw(url, 'PUT', `${loc}?digest=${digest}`, { body: bytes.subarray(100_000), headers: { 'Content-Range': '100000-299999' } })).status;
    }),
  );
  t.deepEqual(results, Array(50).fill(201));
  t.deepEqual((await blobFiles(dataDir)).filter((f) => f === hexOf(digest)), [hexOf(digest)]);
  t.is(await db.collection('units_docker_blob').countDocuments({ digest }), 1);
  t.is(await db.collection('repo_content_units').countDocuments({ repo_id: 'race/same', unit_type_id: 'docker_blob' }), 1);
  t.is(await db.collection('uploads').countDocuments({ repo_id: 'race/same' }), 0);
  t.true((await raw(url, 'GET', `/v2/race/same/blobs/${digest}`)).body.equals(bytes));
});

test('curl: monolithic and chunked uploads as the README shows them', async (t) => {
  const { url } = t.context.server;
  const file = join(t.context.tmp, 'layer.bin');
  const bytes = bytesOf(1_500_000, 37);
  await writeFile(file, bytes);
  const digest = sha256(bytes);

  // monolithic: POST for a session, PUT the file
  const post = await run('curl', ['-sSf', '-X', 'POST', '-D', '-', '-o', '/dev/null', `${url}/v2/curl/mono/blobs/uploads/`]);
  const location = /^location: (\S+)/im.exec(post.stdout)![1]!;
  const put = await run('curl', ['-sSf', '-X', 'PUT', '-D', '-', '-o', '/dev/null', '-H', 'Content-Type: application/octet-stream', '--data-binary', `@${file}`, `${url}${location}?digest=${digest}`]);
  t.regex(put.stdout, /^HTTP\/1\.1 201/m);
  t.regex(put.stdout, new RegExp(`docker-content-digest: ${digest}`, 'i'));

  // chunked: two PATCHes with Content-Range, then an empty PUT
  const half = 750_000;
  await writeFile(join(t.context.tmp, 'part1'), bytes.subarray(0, half));
  await writeFile(join(t.context.tmp, 'part2'), bytes.subarray(half));
  let loc = /^location: (\S+)/im.exec((await run('curl', ['-sSf', '-X', 'POST', '-D', '-', '-o', '/dev/null', `${url}/v2/curl/chunked/blobs/uploads/`])).stdout)![1]!;
  for (const [part, range] of [
    ['part1', `0-${half - 1}`],
    ['part2', `${half}-${bytes.length - 1}`],
  ] as const) {
    const res = await run('curl', ['-sSf', '-X', 'PATCH', '-D', '-', '-o', '/dev/null', '-H', `Content-Range: ${range}`, '--data-binary', `@${join(t.context.tmp, part)}`, `${url}${loc}`]);
    t.regex(res.stdout, new RegExp(`^range: 0-${range.split('-')[1]}`, 'im'));
    loc = /^location: (\S+)/im.exec(res.stdout)![1]!;
  }
  const done = await run('curl', ['-sSf', '-X', 'PUT', '-D', '-', '-o', '/dev/null', `${url}${loc}?digest=${digest}`]);
  t.regex(done.stdout, /^HTTP\/1\.1 201/m);
  const { stdout } = await run('curl', ['-sSf', `${url}/v2/curl/chunked/blobs/${digest}`], { encoding: 'buffer', maxBuffer: 4 << 20 });
  t.true(Buffer.from(stdout).equals(bytes));
});

test.serial('purgeAbandoned removes idle sessions (files and document) and keeps active ones', async (t) => {
  const { url, dataDir, db, services } = t.context.server;
  const idle = await startSession(url, 'purge/me');
  const idleId = idle.split('/').pop()!;
  await raw(url, 'PATCH', idle, { body: bytesOf(5000, 38) });
  const active = await startSession(url, 'purge/me');
  const activeId = active.split('/').pop()!;

  // Nothing is idle since an hour ago.
  t.is(await services.uploads!.purgeAbandoned(new Date(Date.now() - 3600_000)), 0);
  // Age the idle one: its document and its files.
  const old = new Date(Date.now() - 7200_000);
  await db.collection('uploads').updateOne({ _id: idleId } as never, { $set: { last_activity: old } });
  const { utimes } = await import('node:fs/promises');
  for (const f of ['', '/data', '/state.json']) await utimes(join(dataDir, 'uploads', idleId + f), old, old);

  const purged = await services.uploads!.purgeAbandoned(new Date(Date.now() - 3600_000));
  t.is(purged, 1);
  isError(t, await raw(url, 'GET', idle), 404, 'BLOB_UPLOAD_UNKNOWN');
  t.false((await uploadFiles(dataDir)).some((f) => f.startsWith(idleId)));
  t.is(await db.collection('uploads').countDocuments({ _id: idleId } as never), 0);
  t.is((await raw(url, 'GET', active)).status, 204);
  t.true((await uploadFiles(dataDir)).some((f) => f.startsWith(activeId)));
  await raw(url, 'DELETE', active);
});

test.serial('purgeAbandoned also removes store uploads that have no session document (a crashed single POST)', async (t) => {
  const { dataDir, services } = t.context.server;
  const { Readable } = await import('node:stream');
  const { utimes } = await import('node:fs/promises');
  const orphan = await services.blobStore!.createUpload();
  await orphan.append(Readable.from([bytesOf(4000, 39)]));
  const fresh = await services.blobStore!.createUpload();
  const old = new Date(Date.now() - 7200_000);
  for (const f of ['', '/data', '/state.json']) await utimes(join(dataDir, 'uploads', orphan.id + f), old, old);

  t.true((await services.uploads!.purgeAbandoned(new Date(Date.now() - 3600_000))) >= 1);
  t.false((await uploadFiles(dataDir)).some((f) => f.startsWith(`${orphan.id}/`)));
  t.true((await uploadFiles(dataDir)).some((f) => f.startsWith(`${fresh.id}/`)), 'a recent one stays');
  await fresh.cancel();
});

test.serial('purgeAbandoned removes what a crash left of a session: a half-made one, and one whose data was committed', async (t) => {
  const { dataDir, services } = t.context.server;
  const { mkdir, utimes } = await import('node:fs/promises');
  const { spawnSync } = await import('node:child_process');
  const { hostname } = await import('node:os');
  const deadPid = spawnSync(process.execPath, ['-e', '0']).pid!;
  const remains: Record<string, Record<string, string>> = {
    empty: {},
    'data only': { data: 'partial' },
    'data and a half-written state': { data: 'partial', 'state.json.tmp': '{"ver' },
    // killed between the commit's rename of data into the blobs and its cleanup, holding the lock
    'state and a dead owner lock': { 'state.json': JSON.stringify({ version: 1, algorithm: 'sha256', offset: 7, started: '2024-01-01T00:00:00Z', updated: '2024-01-01T00:00:00Z' }), lock: JSON.stringify({ host: hostname(), pid: deadPid, instance: 'gone' }) },
  };
  const old = new Date(Date.now() - 7200_000);
  const ids = new Map<string, string>();
  for (const [what, files] of Object.entries(remains)) {
    const id = randomUUID();
    ids.set(what, id);
    const dir = join(dataDir, 'uploads', id);
    await mkdir(dir);
    for (const [name, content] of Object.entries(files)) {
      await writeFile(join(dir, name), content);
      await utimes(join(dir, name), old, old);
    }
    await utimes(dir, old, old);
  }
  const purged = await services.uploads!.purgeAbandoned(new Date(Date.now() - 3600_000));
  t.true(purged >= ids.size, `purged ${purged}`);
  const left = await uploadFiles(dataDir);
  const { readdir } = await import('node:fs/promises');
  const dirs = await readdir(join(dataDir, 'uploads'));
  for (const [what, id] of ids) {
    t.false(dirs.includes(id) || left.some((f) => f.startsWith(`${id}/`)), `${what}: removed`);
  }
  t.is(await services.uploads!.purgeAbandoned(new Date(Date.now() - 3600_000)), 0, 'nothing left to purge, and none counted');
});
