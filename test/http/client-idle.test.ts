import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import test from 'ava';
import { digestOf } from '../../src/domain/digest.ts';
import { capturedLog } from '../helpers/captured-log.ts';
import { request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * VOLREG_CLIENT_IDLE_TIMEOUT (1 s here): a connection on which nothing moves while volreg
 * waits on the client is closed, so a stalled body no longer holds its upload session and a
 * client that stops reading a download no longer holds its buffers. Work the server does by
 * itself is not cut.
 */

let server: TestServer;
const log = capturedLog('info');
// larger than what the kernel's socket buffers on both sides can hold (up to 32 + 4 MiB here)
const big = randomBytes(64 * 1024 * 1024);

test.before(async () => {
  server = await startTestServer({ label: 'client_idle', env: { VOLREG_CLIENT_IDLE_TIMEOUT: '1' }, logger: log.logger });
  const pushed = await request(server.url, `/v2/idle/blobs/uploads/?digest=${digestOf(big)}`, { method: 'POST', body: big });
  if (pushed.status !== 201) throw new Error(`push: ${pushed.status}`);
});

test.after.always(async () => {
  await server?.close();
});

function open(): Promise<Socket> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), hostname, () => resolve(s));
    s.once('error', reject);
  });
}

/** the request line `which` picks, once there is one */
async function logged(which: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (let i = 0; i < 250; i++) {
    const line = log.lines.find((l) => l.msg === 'request' && which(l));
    if (line) return line;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('no such request line');
}

async function cutOffCount(route: string, reason: string): Promise<number> {
  const text = (await request(server.url, '/metrics')).body.toString('utf8');
  const m = new RegExp(`^volreg_http_requests_cut_off_total\\{route="${route}",reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Resolves with the milliseconds until the server closed the connection (rejects after `limitMs`). */
function closedWithin(s: Socket, limitMs: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
    s.on('error', () => undefined);
  });
}

test('a body that stops arriving is cut off, and its upload session is free again with nothing of the chunk kept', async (t) => {
  const started = await request(server.url, '/v2/idle/blobs/uploads/', { method: 'POST' });
  t.is(started.status, 202);
  const location = started.headers['location'] as string;
  const s = await open();
  s.write(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Range: 0-9\r\nContent-Length: 10\r\n\r\nhello`);
  const ms = await closedWithin(s, 10_000);
  t.true(ms < 5000, `closed after ${ms} ms`);
  // its log line and the metrics say volreg gave up on it, and how far it got
  const line = await logged((l) => l.method === 'PATCH' && l.path === location);
  t.like(line, { status: 499, cutOff: 'idle', bytesIn: 5 });
  t.is(await cutOffCount('upload', 'idle'), 1);

  const status = await request(server.url, location);
  t.is(status.status, 204);
  t.is(status.headers['range'], '0-0', 'the half chunk was not kept');
  const chunk = await request(server.url, location, { method: 'PATCH', body: Buffer.from('0123456789'), headers: { 'Content-Range': '0-9' } });
  t.is(chunk.status, 202, 'the session is not held by the stalled request');
  t.is(chunk.headers['range'], '0-9');
});

test('a download the client stops reading is cut off; one it reads completes', async (t) => {
  const s = await open();
  s.pause(); // not reading: the server's writes stop making progress once the buffers are full
  s.write(`GET /v2/idle/blobs/${digestOf(big)} HTTP/1.1\r\nHost: x\r\nX-Request-Id: reader-stops\r\n\r\n`);
  await new Promise((r) => setTimeout(r, 4000));
  // now read what there is: a connection the server cut ends short of the whole reply
  let received = 0;
  s.on('data', (d: Buffer) => (received += d.length));
  s.resume();
  const ms = await closedWithin(s, 15_000);
  t.true(ms < 5000, `the reply ended ${ms} ms after reading resumed`);
  t.true(received < big.length, `received ${received} bytes of ${big.length}`);
  const line = await logged((l) => l.requestId === 'reader-stops');
  t.like(line, { status: 200, cutOff: 'idle' });
  t.true((line.bytesOut as number) < big.length, `logged ${String(line.bytesOut)} bytes out`);

  const whole = await request(server.url, `/v2/idle/blobs/${digestOf(big)}`);
  t.is(whole.status, 200);
  t.true(whole.body.equals(big));
});

test('a request whose body arrives slowly but steadily is served', async (t) => {
  const started = await request(server.url, '/v2/idle/blobs/uploads/', { method: 'POST' });
  const location = started.headers['location'] as string;
  const s = await open();
  const body = Buffer.from('abcdefghij');
  s.write(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-9\r\nContent-Length: 10\r\nConnection: close\r\n\r\n`);
  let reply = '';
  s.on('data', (d: Buffer) => (reply += d.toString('latin1')));
  // a byte every 400 ms: 4 s in all, each pause well under the 1 s limit
  for (const byte of body) {
    await new Promise((r) => setTimeout(r, 400));
    s.write(Buffer.from([byte]));
  }
  await new Promise((r) => s.once('close', r));
  t.regex(reply, /^HTTP\/1\.1 202/);
  t.regex(reply, /\r\nRange: 0-9\r\n/i);
  const line = await logged((l) => l.method === 'PATCH' && l.path === location);
  t.like(line, { status: 202, bytesIn: 10 });
  t.false('cutOff' in line);
});

test('a download the client closes itself is logged and counted as lost, not as closed for idleness', async (t) => {
  const before = await cutOffCount('blob', 'lost');
  const s = await open();
  const id = 'client-closes-download';
  s.write(`GET /v2/idle/blobs/${digestOf(big)} HTTP/1.1\r\nHost: x\r\nX-Request-Id: ${id}\r\n\r\n`);
  await new Promise((r) => s.once('data', r));
  s.destroy();
  t.like(await logged((l) => l.requestId === id), { status: 200, cutOff: 'lost' });
  t.is(await cutOffCount('blob', 'lost'), before + 1);
});

/** Sends one GET /v2/ on `s` and resolves with the reply's head once it has arrived. */
function replyHead(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) {
        s.off('data', onData);
        resolve(got.slice(0, got.indexOf('\r\n\r\n')));
      }
    };
    s.on('data', onData);
    s.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n');
  });
}

test('a keep-alive connection idle between requests is closed after the same timeout, which the replies announce', async (t) => {
  const s = await open();
  const head = await replyHead(s);
  t.regex(head, /^HTTP\/1\.1 200/);
  t.regex(head, /\r\nKeep-Alive: timeout=1(\r\n|$)/i);
  const ms = await closedWithin(s, 10_000);
  t.true(ms >= 900 && ms < 5000, `closed after ${ms} ms`);
});

test('by default a keep-alive connection outlives idle gaps clients keep theirs for (Go: 90 s): one idle 7 s still serves', async (t) => {
  const plain = await startTestServer({ label: 'client_idle_default' });
  try {
    const { hostname, port } = new URL(plain.url);
    const s = await new Promise<Socket>((resolve, reject) => {
      const c = connect(Number(port), hostname, () => resolve(c));
      c.once('error', reject);
    });
    let closed = false;
    s.on('close', () => (closed = true));
    t.regex(await replyHead(s), /\r\nKeep-Alive: timeout=120(\r\n|$)/i);
    await new Promise((r) => setTimeout(r, 7000));
    t.false(closed, 'still open after 7 s idle (Node closes at 5 s unless told otherwise)');
    t.regex(await replyHead(s), /^HTTP\/1\.1 200/);
    s.destroy();
  } finally {
    await plain.close();
  }
});
