import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { spawnServer, type SpawnedServer } from '../helpers/server.ts';

/**
 * SIGTERM with connections in every state, on the real `volreg serve`: a request sent on a
 * connection accepted before the signal is served (no reset for a request the client sent),
 * a keep-alive connection between requests is closed at once, and the process exits 0.
 */

async function started(t: import('ava').ExecutionContext): Promise<{ server: SpawnedServer; port: number }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-shutdown-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const server = await spawnServer({ dataDir });
  t.teardown(() => server.kill('SIGKILL'));
  return { server, port: Number(new URL(server.url).port) };
}

function opened(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Everything the server sends until it closes the connection, and how it closed it. */
function untilClosed(socket: Socket): Promise<{ text: string; reset: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    let reset = false;
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => (text += s));
    socket.on('error', () => (reset = true));
    socket.on('close', () => resolve({ text, reset }));
  });
}

function untilResponse(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (s: Buffer): void => {
      text += s.toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(text);
      if (end >= 0 && length && text.length >= end + 4 + Number(length[1])) {
        socket.off('data', onData);
        resolve(text);
      }
    };
    socket.on('data', onData);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test('a request sent after SIGTERM on a connection accepted before it is served, with Connection: close', async (t) => {
  const { server, port } = await started(t);
  const socket = await opened(port);
  const reply = untilClosed(socket);
  await sleep(200); // accepted by the server (a connection still in the kernel's queue is reset when listening stops)
  server.kill('SIGTERM');
  await sleep(300); // the stop has begun; the client's request is only now on its way
  socket.write('GET /v2/_catalog HTTP/1.1\r\nHost: volreg\r\n\r\n');
  const { text, reset } = await reply;
  t.false(reset, 'no reset');
  t.regex(text, /^HTTP\/1\.1 200 /);
  t.regex(text, /\r\nconnection: close\r\n/i);
  t.regex(text, /"repositories":\[\]/);
  t.is((await server.waitExit()).code, 0);
});

test('a request in progress at SIGTERM is answered with Connection: close, then its connection closes', async (t) => {
  const { server, port } = await started(t);
  const body = Buffer.alloc(256 * 1024, 'v');
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const socket = await opened(port);
  const reply = untilClosed(socket);
  socket.write(`POST /v2/shutdown/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: volreg\r\nContent-Length: ${body.length}\r\n\r\n`);
  socket.write(body.subarray(0, 1000));
  await sleep(300); // the request is in progress: its handler waits for the rest of the body
  server.kill('SIGTERM');
  await sleep(300);
  socket.write(body.subarray(1000));
  const { text, reset } = await reply;
  t.false(reset, 'no reset');
  t.regex(text, /^HTTP\/1\.1 201 /);
  t.regex(text, /\r\nconnection: close\r\n/i);
  t.is((await server.waitExit()).code, 0);
});

test('an upload that waited for 100 Continue, on a connection that served a request before, is finished by a stop, not cut off', async (t) => {
  const { server, port } = await started(t);
  const body = Buffer.alloc(256 * 1024, 'e');
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  const socket = await opened(port);
  socket.write('GET /v2/ HTTP/1.1\r\nHost: volreg\r\n\r\n');
  t.regex(await untilResponse(socket), /^HTTP\/1\.1 200 /);
  const reply = untilClosed(socket);
  socket.write(`POST /v2/shutdown/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: volreg\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`);
  await sleep(300); // the server asked for the body (100 Continue)
  socket.write(body.subarray(0, 1000));
  await sleep(300);
  server.kill('SIGTERM');
  await sleep(300);
  socket.write(body.subarray(1000));
  const { text, reset } = await reply;
  t.false(reset, 'no reset');
  t.regex(text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /);
  t.regex(text, /\r\nconnection: close\r\n/i);
  t.is((await server.waitExit()).code, 0);
});

test('a keep-alive connection between requests is closed by the stop, which then exits 0', async (t) => {
  const { server, port } = await started(t);
  const socket = await opened(port);
  const response = untilResponse(socket);
  socket.write('GET /v2/ HTTP/1.1\r\nHost: volreg\r\nConnection: keep-alive\r\n\r\n');
  t.regex(await response, /^HTTP\/1\.1 200 /);
  const closed = untilClosed(socket);
  server.kill('SIGTERM');
  const { text } = await closed;
  t.is(text, '', 'closed without another response');
  t.is((await server.waitExit()).code, 0);
});
