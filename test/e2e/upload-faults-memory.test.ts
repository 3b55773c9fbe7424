import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { spawnServer } from '../helpers/server.ts';
import { raw } from '../http/blobs-client.ts';
import { Body, MIB, PeakRss, streamRequest } from './upload-faults-client.ts';

/**
 * Blobs stream: a 1 GiB upload (single POST), a 256 MiB chunked upload (32 MiB PATCHes) and a
 * 1 GiB download through a `volreg serve` child must not grow its resident memory with the size.
 */

const LIMIT = 150 * MIB;

test('1 GiB upload and download keep the server RSS flat', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-memory-'));
  const srv = await spawnServer({ dataDir, env: { VOLREG_LOG_LEVEL: 'warn' } });
  const pid = srv.child.pid!;
  const rss = new PeakRss(pid);
  try {
    // Warm up every path once, so lazily loaded code is not counted as growth.
    const warm = new Body(4);
    t.is((await streamRequest(srv.url, 'POST', `/v2/mem/warm/blobs/uploads/?digest=${warm.digest()}`, warm).response).status, 201);
    await fetch(`${srv.url}/v2/mem/warm/blobs/${warm.digest()}`).then((r) => r.arrayBuffer());
    const baseline = await rss.from();

    const body = new Body(1024);
    const digest = body.digest();
    let started = Date.now();
    const up = await streamRequest(srv.url, 'POST', `/v2/mem/big/blobs/uploads/?digest=${digest}`, body).response;
    const uploadMs = Date.now() - started;
    t.is(up.status, 201, up.body);

    // Chunked: 8 PATCHes of 32 MiB, then an empty PUT.
    const post = await raw(srv.url, 'POST', '/v2/mem/chunked/blobs/uploads/');
    let loc = String(post.headers.location);
    started = Date.now();
    for (let i = 0; i < 256; i += 32) {
      const res = await streamRequest(srv.url, 'PATCH', loc, body, { from: i, to: i + 32, headers: { 'Content-Range': `${i * MIB}-${(i + 32) * MIB - 1}` } })
        .response;
      t.is(res.status, 202);
      loc = String(res.headers.location);
    }
    t.is((await raw(srv.url, 'PUT', `${loc}?digest=${body.digest(0, 256)}`)).status, 201);
    const chunkedMs = Date.now() - started;

    started = Date.now();
    const down = await new Promise<{ digest: string; size: number }>((resolve, reject) => {
      request(new URL(`/v2/mem/big/blobs/${digest}`, srv.url), { agent: false }, (res) => {
        const h = createHash('sha256');
        let size = 0;
        res.on('data', (c: Buffer) => {
          h.update(c);
          size += c.length;
        });
        res.on('end', () => resolve({ digest: `sha256:${h.digest('hex')}`, size }));
        res.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    const downloadMs = Date.now() - started;
    t.deepEqual(down, { digest, size: body.size });

    const peak = rss.peak;
    const growth = peak - baseline;
    const rate = (ms: number, mib = 1024): string => `${Math.round(mib / (ms / 1000))} MiB/s`;
    t.log(
      `baseline RSS ${Math.round(baseline / MIB)} MiB, peak ${Math.round(peak / MIB)} MiB (growth ${Math.round(growth / MIB)} MiB); ` +
        `1 GiB single POST ${uploadMs} ms (${rate(uploadMs)}), 256 MiB chunked ${chunkedMs} ms (${rate(chunkedMs, 256)}), download ${downloadMs} ms (${rate(downloadMs)})`,
    );
    t.true(growth < LIMIT, `server RSS grew by ${Math.round(growth / MIB)} MiB`);
  } finally {
    rss.stop();
    srv.kill('SIGTERM');
    await srv.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
});
