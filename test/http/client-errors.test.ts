import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import anyTest, { type TestFn } from 'ava';
import { blobOf } from '../helpers/manifest-fixtures.ts';
import { request, repoName } from '../helpers/oci-client.ts';
import { capturedLog } from '../helpers/captured-log.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { answerClientErrors } from '../../src/http/client-errors.ts';
import { oneRequestAtATimePerConnection } from '../../src/http/connection-order.ts';

/**
 * Requests Node's HTTP parser refuses, sent through the real server over a raw connection. A
 * refusal pipelined behind requests that parsed is the last answer on the connection: every
 * request before it is answered first, in order, and carried out.
 */

const test = anyTest as TestFn<{ server: TestServer; logLines: Array<Record<string, unknown>> }>;

test.before(async (t) => {
  const { logger, lines } = capturedLog('warn');
  t.context.logLines = lines;
  t.context.server = await startTestServer({ label: 'client-errors', logger });
});
test.after.always(async (t) => {
  await t.context.server?.close();
});

interface RawReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Writes `bytes` (a string: one byte a character) in one write and reads everything until the server closes the connection. */
function exchange(url: string, bytes: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1', () => socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes));
    const chunks: Buffer[] = [];
    socket.on('data', (b: Buffer) => chunks.push(b));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => reject(new Error(`no end of the connection; read so far: ${Buffer.concat(chunks).toString('latin1').slice(0, 500)}`)));
  });
}

/** The replies on one connection, one after the other (each framed by its Content-Length). */
function replies(raw: Buffer): RawReply[] {
  const text = raw.toString('latin1');
  const out: RawReply[] = [];
  let at = 0;
  while (at < text.length) {
    const headEnd = text.indexOf('\r\n\r\n', at);
    if (headEnd < 0) throw new Error(`an incomplete reply: ${JSON.stringify(text.slice(at))}`);
    const [statusLine, ...fields] = text.slice(at, headEnd).split('\r\n');
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine!)?.[1];
    if (!status) throw new Error(`not a status line: ${JSON.stringify(statusLine)}`);
    const headers: Record<string, string> = {};
    for (const field of fields) {
      const colon = field.indexOf(':');
      headers[field.slice(0, colon).toLowerCase()] = field.slice(colon + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    out.push({ status: Number(status), headers, body: text.slice(headEnd + 4, headEnd + 4 + length) });
    at = headEnd + 4 + length;
  }
  return out;
}

function errorCodeOf(reply: RawReply | undefined): string | undefined {
  return (JSON.parse(reply?.body ?? '{}') as { errors?: Array<{ code: string }> }).errors?.[0]?.code;
}

function blobPost(repo: string, bytes: Buffer, digest: string): Buffer {
  const head = `POST /v2/${repo}/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${bytes.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), bytes]);
}

const GARBAGE = 'GARBAGE\r\n\r\n';
const HUGE_HEADERS = `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`;

test('a blob POST followed in the same write by garbage: its 201 first, then the 400 envelope; the blob exists', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('pipelined-garbage');
  const blob = blobOf(randomBytes(3000));
  const got = replies(await exchange(url, Buffer.concat([blobPost(repo, blob.bytes, blob.digest), Buffer.from(GARBAGE)])));
  t.is(got.length, 2, JSON.stringify(got.map((r) => r.status)));
  t.is(got[0]!.status, 201);
  t.is(got[0]!.headers['docker-content-digest'], blob.digest);
  t.is(got[0]!.headers.location, `/v2/${repo}/blobs/${blob.digest}`);
  t.is(got[1]!.status, 400);
  t.is(got[1]!.headers['content-type'], 'application/json');
  t.is(got[1]!.headers.connection, 'close');
  t.is(errorCodeOf(got[1]), 'BAD_REQUEST');
  t.is((await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 200);
});

test('a blob POST followed in the same write by 70 KB of headers: its 201 first, then 431', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('pipelined-431');
  const blob = blobOf(randomBytes(3000));
  const got = replies(await exchange(url, Buffer.concat([blobPost(repo, blob.bytes, blob.digest), Buffer.from(HUGE_HEADERS)])));
  t.deepEqual(
    got.map((r) => r.status),
    [201, 431],
  );
  t.is(got[0]!.headers['docker-content-digest'], blob.digest);
  t.is(errorCodeOf(got[1]), 'HEADERS_TOO_LARGE');
  t.is((await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 200);
});

test('a PATCH whose Content-Length is shorter than the bytes sent: 202 with the Range of its body, then 400', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('pipelined-patch');
  const session = await request(url, `/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0' } });
  t.is(session.status, 202);
  const loc = String(session.headers.location);
  const sent = `PATCH ${loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\n0123456789these bytes are no request\r\n\r\n`;
  const got = replies(await exchange(url, sent));
  t.deepEqual(
    got.map((r) => r.status),
    [202, 400],
  );
  t.is(got[0]!.headers.range, '0-9');
  t.is(got[0]!.headers.location, loc);
  t.is(errorCodeOf(got[1]), 'BAD_REQUEST');
  // the session has the 10 bytes of the body, not a byte of what followed
  t.is((await request(url, loc)).headers.range, '0-9');
});

test('several requests, then garbage: each answered in order, then the refusal', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('pipelined-several');
  const blobs = [blobOf(randomBytes(100)), blobOf(randomBytes(200_000)), blobOf(randomBytes(100))];
  const sent = Buffer.concat([...blobs.map((b) => blobPost(repo, b.bytes, b.digest)), Buffer.from(`GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n${GARBAGE}`)]);
  const got = replies(await exchange(url, sent));
  t.deepEqual(
    got.map((r) => r.status),
    [201, 201, 201, 200, 400],
  );
  t.deepEqual(
    got.slice(0, 3).map((r) => r.headers['docker-content-digest']),
    blobs.map((b) => b.digest),
  );
});

test('garbage after a request that said Connection: close: only that request is answered', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('pipelined-close');
  const blob = blobOf(randomBytes(100));
  const post = blobPost(repo, blob.bytes, blob.digest).toString('latin1').replace('Host: x\r\n', 'Host: x\r\nConnection: close\r\n');
  const got = replies(await exchange(url, post + GARBAGE));
  t.deepEqual(
    got.map((r) => r.status),
    [201],
  );
  t.is(got[0]!.headers.connection, 'close');
});

test('a body whose chunked framing is broken is itself the refused request: one 400, at once, and nothing stored', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('broken-chunks');
  const blob = blobOf(randomBytes(20));
  const head = `POST /v2/${repo}/blobs/uploads/?digest=${blob.digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`;
  const started = Date.now();
  const got = replies(await exchange(url, `${head}a\r\n${blob.bytes.subarray(0, 10).toString('latin1')}\r\nzz\r\n`));
  t.deepEqual(
    got.map((r) => r.status),
    [400],
  );
  t.is(errorCodeOf(got[0]), 'BAD_REQUEST');
  t.true(Date.now() - started < 5000, `the refusal took ${Date.now() - started} ms`);
  t.is((await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
});

test('a client that goes before its pipelined request is answered: the request is carried out, nothing is thrown or logged as an error, the server still answers', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('pipelined-gone');
  const blob = blobOf(randomBytes(100_000));
  const errorsBefore = t.context.logLines.filter((l) => Number(l.level) >= 50).length;
  await new Promise<void>((resolve) => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1', () => {
      socket.write(Buffer.concat([blobPost(repo, blob.bytes, blob.digest), Buffer.from(GARBAGE)]), () => {
        socket.destroy();
        resolve();
      });
    });
    socket.on('error', () => undefined);
  });
  let head = await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
  for (let i = 0; i < 50 && head.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    head = await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
  }
  t.is(head.status, 200);
  t.is(t.context.logLines.filter((l) => Number(l.level) >= 50).length, errorsBefore);
});

test('headers that never complete still get 408 REQUEST_TIMEOUT, after the reply to a slow request before them', async (t) => {
  // Node's own timings, shortened: the real server keeps Node's 60 s headersTimeout
  const server = createServer(
    { headersTimeout: 400, requestTimeout: 0, connectionsCheckingInterval: 100 },
    oneRequestAtATimePerConnection((req, res) => {
      setTimeout(() => res.end(`answered ${req.url}`), req.url === '/slow' ? 1000 : 0);
    }),
  );
  answerClientErrors(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const alone = replies(await exchange(url, 'GET /never HTTP/1.1\r\nHost: x\r\nX-Slow: '));
  t.deepEqual(
    alone.map((r) => r.status),
    [408],
  );
  t.is(errorCodeOf(alone[0]), 'REQUEST_TIMEOUT');

  const started = Date.now();
  const behind = replies(await exchange(url, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\nX-Slow: '));
  t.deepEqual(
    behind.map((r) => r.status),
    [200, 408],
  );
  t.is(behind[0]!.body, 'answered /slow');
  t.is(errorCodeOf(behind[1]), 'REQUEST_TIMEOUT');
  t.true(Date.now() - started >= 1000, 'the 408 came before the slow reply was due');
});

test('an HTTP/1.1 request without Host is 400 with the envelope, and the connection closes; HTTP/1.0 needs none', async (t) => {
  const { url } = t.context.server;
  const got = replies(await exchange(url, 'GET /v2/ HTTP/1.1\r\n\r\n'));
  t.deepEqual(
    got.map((r) => r.status),
    [400],
  );
  t.is(got[0]!.headers['content-type'], 'application/json; charset=utf-8');
  t.is(got[0]!.headers.connection, 'close');
  t.is(errorCodeOf(got[0]), 'BAD_REQUEST');
  t.deepEqual(
    replies(await exchange(url, 'GET /v2/ HTTP/1.0\r\n\r\n')).map((r) => r.status),
    [200],
  );
});

test('an Expect other than 100-continue is 417 with the envelope, and the request is not carried out', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('expect-other');
  const blob = blobOf(randomBytes(100));
  const post = blobPost(repo, blob.bytes, blob.digest).toString('latin1').replace('Host: x\r\n', 'Host: x\r\nExpect: 200-ok\r\n');
  const got = replies(await exchange(url, post));
  t.deepEqual(
    got.map((r) => r.status),
    [417],
  );
  t.is(errorCodeOf(got[0]), 'EXPECTATION_FAILED');
  t.is((await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
});

test('a transfer coding other than chunked (gzip, chunked) is 501 with the envelope, and the request is not carried out', async (t) => {
  const { url } = t.context.server;
  const repo = repoName('gzip-chunked');
  // the body as sent matches the digest: taking it as it is, gzip ignored, would store it
  const blob = blobOf(randomBytes(100));
  const head = `POST /v2/${repo}/blobs/uploads/?digest=${blob.digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: gzip, chunked\r\n\r\n`;
  const body = Buffer.concat([Buffer.from(`${blob.bytes.length.toString(16)}\r\n`), blob.bytes, Buffer.from('\r\n0\r\n\r\n')]);
  const got = replies(await exchange(url, Buffer.concat([Buffer.from(head), body])));
  t.deepEqual(
    got.map((r) => r.status),
    [501],
  );
  t.is(got[0]!.headers.connection, 'close');
  t.is(errorCodeOf(got[0]), 'NOT_IMPLEMENTED');
  t.is((await request(url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404);
  // chunked alone is taken
  const plain = head.replace('gzip, chunked', 'chunked');
  t.deepEqual(
    replies(await exchange(url, Buffer.concat([Buffer.from(plain.replace('Host: x', 'Host: x\r\nConnection: close')), body]))).map((r) => r.status),
    [201],
  );
});
