import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * A request refused before its body is read (no credentials, a bad name) must still reach the
 * client as that refusal: real curl uploads a body and must read the 401 or 400, not a reset.
 */

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'volreg-early-'));
const htpasswd = join(dir, 'htpasswd');
const body = join(dir, 'body.bin');
let server: TestServer;

test.before(async () => {
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', '-c', htpasswd, 'alice', 'secret'], { stdio: 'ignore' });
  writeFileSync(body, randomBytes(8 * 1024 * 1024));
  server = await startTestServer({ label: 'early-refusal', env: { VOLREG_AUTH_FILE: htpasswd } });
});
test.after.always(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function curlUpload(args: string[], url: string): Promise<{ status: string; body: string }> {
  const out = join(dir, `reply-${Math.random().toString(36).slice(2)}`);
  // curl exits non-zero on a reset ("Connection reset by peer", "Send failure"): that rejects here.
  const { stdout } = await run('curl', ['-sS', '-o', out, '-w', '%{http_code}', '-T', body, ...args, url]);
  const { readFileSync } = await import('node:fs');
  return { status: stdout.trim(), body: readFileSync(out, 'utf8') };
}

test('an unauthenticated 8 MiB upload reads its 401, not a reset', async (t) => {
  for (let i = 0; i < 3; i++) {
    const reply = await curlUpload([], `${server.url}/api/v1/volumes/team/pg/tags/t${i}`);
    t.is(reply.status, '401');
    t.is((JSON.parse(reply.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
  }
});

test('an 8 MiB upload to an invalid name reads its 400 NAME_INVALID', async (t) => {
  const reply = await curlUpload(['-u', 'alice:secret'], `${server.url}/api/v1/volumes/Bad..Name/tags/t`);
  t.is(reply.status, '400');
  t.is((JSON.parse(reply.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'NAME_INVALID');
});

test('the connection stays usable after a drained refusal', async (t) => {
  // two requests on one curl invocation reuse the connection: the refused body must not be
  // parsed as the second request (no Expect: 100-continue here, so the body is sent and drained)
  const { stdout } = await run('curl', [
    '-sS', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\n', '-H', 'Expect:', '-T', body, `${server.url}/api/v1/volumes/x/tags/a`,
    '--next', '-sS', '-o', '/dev/null', '-w', '%{http_code} %{num_connects}\n', '-u', 'alice:secret', `${server.url}/v2/`,
  ]);
  const [first, second] = stdout.trim().split('\n');
  t.is(first?.split(' ')[0], '401');
  t.is(second, '200 0', 'the second request reused the connection and was answered');
});

test('requests the HTTP parser refuses get the error envelope too: malformed framing 400, headers too large 431', async (t) => {
  const { connect } = await import('node:net');
  const { port } = new URL(server.url);
  const exchange = (raw: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write(raw));
      let got = '';
      socket.on('data', (b: Buffer) => (got += b.toString('latin1')));
      socket.on('end', () => resolve(got));
      socket.on('error', reject);
    });
  const cases: Array<[string, string, string]> = [
    ['PUT /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', '400', 'BAD_REQUEST'],
    ['GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n', '400', 'BAD_REQUEST'],
    [`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`, '431', 'HEADERS_TOO_LARGE'],
  ];
  // a client that keeps its side of a refused connection open does not keep the server's descriptor
  const halfOpen = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true }, () => halfOpen.write('GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n'));
  halfOpen.on('data', () => undefined);
  halfOpen.on('error', () => undefined);
  const closing = new Promise<boolean>((r) => halfOpen.on('close', () => r(true)));
  // once the server let go of it, bytes sent on it are answered with a reset
  await new Promise((r) => setTimeout(r, 3000));
  halfOpen.write('more');
  await new Promise((r) => setTimeout(r, 300));
  halfOpen.write('more'); // after the reset: a broken pipe
  const closed = await Promise.race([closing, new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  halfOpen.destroy();
  t.true(closed, 'the server closed the half-open connection');
  for (const [raw, status, code] of cases) {
    const reply = await exchange(raw);
    const [head, json] = reply.split('\r\n\r\n');
    t.regex(head!, new RegExp(`^HTTP/1\\.1 ${status} `), raw.slice(0, 60));
    t.regex(head!, /Content-Type: application\/json/);
    t.is((JSON.parse(json!) as { errors: Array<{ code: string }> }).errors[0]!.code, code);
  }
});

test('a client waiting for 100 Continue gets the refusal instead, and sends no body; an accepted upload gets its 100', async (t) => {
  // curl sends Expect: 100-continue for a body over 1 MiB; it waits long for the 100 here, so a
  // slow machine does not make it send the body before the answer
  const refused = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_upload}', '-H', 'Expect: 100-continue', '--expect100-timeout', '60', '-T', body, `${server.url}/api/v1/volumes/x/tags/expecting`]);
  t.is(refused.stdout, '401 0');
  const tooBig = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_upload}', '-u', 'alice:secret', '-H', 'Expect: 100-continue', '--expect100-timeout', '60', '-H', 'Content-Type: application/vnd.oci.image.manifest.v1+json', '-T', body, `${server.url}/v2/x/manifests/big`]);
  t.is(tooBig.stdout, '413 0');
  const accepted = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_upload}', '-u', 'alice:secret', '-H', 'Expect: 100-continue', '--expect100-timeout', '60', '-H', 'Content-Type: application/octet-stream', '--data-binary', `@${body}`, `${server.url}/v2/x/blobs/uploads/?digest=sha256:${createHash('sha256').update(readFileSync(body)).digest('hex')}`]);
  t.is(accepted.stdout, `201 ${8 * 1024 * 1024}`);
});

test('a refusal of a body too large to drain (a Content-Length of 2^31 to 2^63, a few bytes sent) is answered without waiting for the rest', async (t) => {
  const { connect } = await import('node:net');
  const { port } = new URL(server.url);
  const auth = `Basic ${Buffer.from('alice:secret').toString('base64')}`;
  const opened = await fetch(`${server.url}/v2/team/big/blobs/uploads/`, { method: 'POST', headers: { Authorization: auth } });
  const session = opened.headers.get('location')!;
  const digest = `sha256:${'a'.repeat(64)}`;
  // the client sends its headers and five bytes, and nothing more: the body it announced never
  // ends, so an answer that waited for it (up to 10 s) would come after this bound
  const exchange = (method: string, path: string, length: string, withAuth = true) =>
    new Promise<{ head: string; code: string }>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () =>
        socket.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\n${withAuth ? `Authorization: ${auth}\r\n` : ''}Content-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: ${length}\r\n\r\nhello`),
      );
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`${method} ${path} with Content-Length ${length}: no answer within 8 s (waited for the body)`));
      }, 8000);
      let got = '';
      socket.on('data', (b: Buffer) => {
        got += b.toString('latin1');
        const [head, json] = got.split('\r\n\r\n');
        const length = /content-length: (\d+)/i.exec(head ?? '');
        if (json !== undefined && length && json.length >= Number(length[1])) {
          clearTimeout(timer);
          socket.destroy();
          resolve({ head: head!, code: (JSON.parse(json) as { errors: Array<{ code: string }> }).errors[0]!.code });
        }
      });
      socket.on('error', reject);
    });
  const cases: Array<[string, string, string, string, string, boolean?]> = [
    ['PUT', `${session}?digest=${digest}`, String(2 ** 53), '400', 'BAD_REQUEST'],
    ['PUT', '/api/v1/volumes/team/big/tags/t', '9223372036854775808', '400', 'BAD_REQUEST'],
    ['POST', `/v2/team/big/blobs/uploads/?digest=${digest}`, String(2 ** 53 - 1), '507', 'STORAGE_FULL'],
    ['PUT', '/v2/team/big/manifests/t', String(2 ** 31), '413', 'MANIFEST_INVALID'],
    ['DELETE', `/v2/team/big/blobs/${digest}`, String(2 ** 32), '404', 'BLOB_UNKNOWN'],
    ['PUT', '/api/v1/volumes/Bad..Name/tags/t', String(2 ** 32), '400', 'NAME_INVALID'],
    ['PUT', '/api/v1/volumes/team/big/tags/t', String(2 ** 40), '401', 'UNAUTHORIZED', false],
  ];
  const replies = await Promise.all(cases.map(([method, path, length, , , withAuth]) => exchange(method, path, length, withAuth)));
  for (const [i, [method, path, length, status, code]] of cases.entries()) {
    const what = `${method} ${path} Content-Length: ${length}`;
    t.regex(replies[i]!.head, new RegExp(`^HTTP/1\\.1 ${status} `), what);
    t.is(replies[i]!.code, code, what);
    t.regex(replies[i]!.head, /\r\nConnection: close\r\n/i, `${what}: the unread body ends the connection`);
  }
  // the session is as it was: nothing of the refused bodies was kept
  const status = await fetch(`${server.url}${session}`, { headers: { Authorization: auth } });
  t.is(status.status, 204);
  t.is(status.headers.get('range'), '0-0');
});
