import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import test from 'ava';
import { capturedLog } from '../helpers/captured-log.ts';
import { startTestServer } from '../helpers/server.ts';
import { buildTar } from '../helpers/tree.ts';

/**
 * Hosts on flaky links drop their connection mid-upload, many a night. Each drop leaves nothing
 * (no tag, no upload files) and is the client's doing: it is logged as a request that ended
 * without a reply (499), never as the server's error (an alert at 2 a.m. for nothing).
 */

test('a snapshot upload dropped mid-body leaves nothing and logs no error', async (t) => {
  const log = capturedLog('info');
  const server = await startTestServer({ label: 'volumes-dropped', logger: log.logger });
  try {
    const archive = gzipSync(await buildTar([{ name: 'data.txt', body: randomBytes(3 * 1024 * 1024).toString('hex') }]), { level: 1 });
    const { hostname, port } = new URL(server.url);
    await new Promise<void>((resolve) => {
      const req = request({ hostname, port, method: 'PUT', path: '/api/v1/volumes/flaky/host-1/tags/nightly', headers: { 'Transfer-Encoding': 'chunked' } });
      req.on('error', () => resolve());
      req.on('response', () => resolve());
      // half the archive, as the link carries it, then the link is gone
      req.write(archive.subarray(0, archive.length >> 1));
      setTimeout(() => req.destroy(), 500);
    });
    const deadline = Date.now() + 10_000;
    const ended = () => log.lines.find((l) => l.msg === 'request' && l.method === 'PUT');
    while (!ended() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200));
    t.is(ended()?.status, 499);
    const errors = log.lines.filter((l) => Number(l.level) >= 50);
    t.deepEqual(errors.map((l) => l.msg), [], 'a client that went away is not a server error');
    t.is((await fetch(`${server.url}/api/v1/volumes/flaky/host-1/tags/nightly`)).status, 404);
    t.deepEqual(await readdir(join(server.dataDir, 'uploads')).catch(() => []), []);
  } finally {
    await server.close();
  }
});
