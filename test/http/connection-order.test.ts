import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { blobOf } from '../helpers/manifest-fixtures.ts';
import { pushBlob, repoName, request } from '../helpers/oci-client.ts';
import { capturedLog } from '../helpers/captured-log.ts';
import { startTestServer } from '../helpers/server.ts';
import { answeredOrGone } from '../../src/http/connection-order.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** descriptors of this process (the server runs in it) open on files under `dir` */
function openUnder(dir: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(join('/proc/self/fd', fd)).startsWith(dir)) n++;
    } catch {
      // closed while listed
    }
  }
  return n;
}

test('requests pipelined behind a reply on a connection that dies are let go: no blob file stays open, and the stop does not wait for them', async (t) => {
  const { logger, lines: logLines } = capturedLog('warn');
  const server = await startTestServer({ label: 'connorder', logger });
  let closed = false;
  t.teardown(async () => {
    if (!closed) await server.close();
  });
  const repo = repoName('pipelined-gone');
  // large enough that the first download is still being sent when the client goes
  const blob = blobOf(randomBytes(16 * 1024 * 1024));
  await pushBlob(server.url, repo, blob);
  const blobsDir = join(server.dataDir, 'blobs');
  const { hostname, port } = new URL(server.url);
  const get = `GET /v2/${repo}/blobs/${blob.digest} HTTP/1.1\r\nHost: x\r\n\r\n`;

  const connections = 8;
  await Promise.all(
    Array.from(
      { length: connections },
      () =>
        new Promise<void>((resolve) => {
          // two downloads back to back; nothing read; the client goes while the first is sent
          const socket = connect(Number(port), hostname, () => socket.write(get + get));
          socket.on('error', () => undefined);
          setTimeout(() => {
            socket.destroy();
            resolve();
          }, 300);
        }),
    ),
  );
  let open = openUnder(blobsDir);
  for (let i = 0; i < 50 && open > 0; i++) {
    await sleep(100);
    open = openUnder(blobsDir);
  }
  t.is(open, 0, 'blob files still open after every client went');

  // the service still answers, on a fresh connection
  const head = await request(server.url, `/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' });
  t.is(head.status, 200);

  closed = true;
  await server.close();
  t.false(
    logLines.some((l) => String(l.msg).includes('grace period over')),
    'the stop waited for replies whose connections were gone',
  );
});

test('answeredOrGone settles for a reply queued behind another when the connection dies (Node gives that reply no close of its own)', async (t) => {
  const replies: ServerResponse[] = [];
  const server = createServer((_req, res) => {
    replies.push(res); // never answered: the first keeps the second queued
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const { port } = server.address() as AddressInfo;
  const socket = connect(port, '127.0.0.1', () => socket.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n'));
  socket.on('error', () => undefined);
  for (let i = 0; i < 100 && replies.length < 2; i++) await sleep(20);
  t.is(replies.length, 2);
  const [first, queued] = replies as [ServerResponse, ServerResponse];
  const settled = Promise.all([answeredOrGone(first, first.req.socket), answeredOrGone(queued, queued.req.socket)]);
  let queuedClosed = false;
  queued.once('close', () => (queuedClosed = true));
  socket.destroy();
  await t.notThrowsAsync(Promise.race([settled, sleep(3000).then(() => Promise.reject(new Error('not settled')))]));
  t.false(queuedClosed, 'Node did give the queued reply a close (then this rule is not needed)');
});
