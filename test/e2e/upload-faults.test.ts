import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { spawnServer, type SpawnedServer } from '../helpers/server.ts';
import { blobFiles, errorCode, hexOf, raw, uploadFiles } from '../http/blobs-client.ts';
import { Body, MIB, streamRequest, waitFor } from './upload-faults-client.ts';

/**
 * Fault injection against the real `volreg serve` child: kill -9 in the middle of uploads,
 * restarts, SIGTERM with uploads in flight, and the abandoned-upload purge timer.
 */

async function withDataDir(fn: (dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-faults-'));
  try {
    await fn(dataDir);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function stop(srv: SpawnedServer): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  srv.kill('SIGTERM');
  return srv.waitExit();
}

/** Bytes of the largest upload data file, to know the server has started writing. */
async function largestUploadData(dataDir: string): Promise<number> {
  let max = 0;
  for (const f of (await uploadFiles(dataDir)).filter((x) => x.endsWith('/data'))) {
    const s = await stat(join(dataDir, 'uploads', f)).catch(() => null);
    if (s && s.size > max) max = s.size;
  }
  return max;
}

test('kill -9 during a large monolithic upload: after restart HEAD is 404, no blob file, and the upload then succeeds', async (t) => {
  await withDataDir(async (dataDir) => {
    const body = new Body(200); // 200 MiB
    const digest = body.digest();
    const path = `/v2/faults/mono/blobs/uploads/?digest=${digest}`;
    const first = await spawnServer({ dataDir });
    try {
      const upload = streamRequest(first.url, 'POST', path, body, { delayMs: 5 });
      await upload.written(60);
      await waitFor('bytes on disk', async () => (await largestUploadData(dataDir)) >= 20 * MIB);
      first.kill('SIGKILL');
      t.is((await first.waitExit()).signal, 'SIGKILL');
      await t.throwsAsync(upload.response);
    } finally {
      first.kill('SIGKILL');
    }
    t.false((await blobFiles(dataDir)).includes(hexOf(digest)), 'no blob file of that digest after the crash');

    const second = await spawnServer({ dataDir });
    try {
      const head = await raw(second.url, 'HEAD', `/v2/faults/mono/blobs/${digest}`);
      t.is(head.status, 404);
      t.false((await blobFiles(dataDir)).includes(hexOf(digest)));

      const again = streamRequest(second.url, 'POST', path, body);
      const res = await again.response;
      t.is(res.status, 201, res.body);
      t.is(res.headers['docker-content-digest'], digest);
      const ok = await raw(second.url, 'HEAD', `/v2/faults/mono/blobs/${digest}`);
      t.is(ok.status, 200);
      t.is(ok.headers['content-length'], String(body.size));
      const hex = hexOf(digest);
      t.is((await stat(join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex))).size, body.size);
    } finally {
      t.is((await stop(second)).code, 0);
    }
  });
});

test('restart during a chunked upload: finish from the reported offset, byte-identical', async (t) => {
  await withDataDir(async (dataDir) => {
    const body = new Body(12); // three 4 MiB chunks
    const digest = body.digest();
    const first = await spawnServer({ dataDir });
    let loc: string;
    try {
      const post = await raw(first.url, 'POST', '/v2/faults/chunked/blobs/uploads/');
      t.is(post.status, 202);
      loc = String(post.headers.location);
      const a = await streamRequest(first.url, 'PATCH', loc, body, { from: 0, to: 4, headers: { 'Content-Range': `0-${4 * MIB - 1}` } }).response;
      t.is(a.status, 202);
      t.is(a.headers.range, `0-${4 * MIB - 1}`);
      // The second chunk is cut off halfway by the crash.
      const b = streamRequest(first.url, 'PATCH', loc, body, {
        from: 4,
        to: 6,
        contentLength: 4 * MIB,
        headers: { 'Content-Range': `${4 * MIB}-${8 * MIB - 1}` },
      });
      await b.written(5);
      await waitFor('half a chunk on disk', async () => (await largestUploadData(dataDir)) > 5 * MIB);
      first.kill('SIGKILL');
      await first.waitExit();
      await t.throwsAsync(b.response);
    } finally {
      first.kill('SIGKILL');
    }

    const second = await spawnServer({ dataDir });
    try {
      const status = await raw(second.url, 'GET', loc);
      t.is(status.status, 204);
      const reported = /^0-(\d+)$/.exec(String(status.headers.range));
      t.truthy(reported);
      const offset = Number(reported![1]) + 1;
      t.is(offset, 4 * MIB, 'the interrupted chunk is not counted');
      const next = offset / MIB;
      const patch = await streamRequest(second.url, 'PATCH', String(status.headers.location), body, {
        from: next,
        to: 8,
        headers: { 'Content-Range': `${offset}-${8 * MIB - 1}` },
      }).response;
      t.is(patch.status, 202);
      const put = await streamRequest(second.url, 'PUT', `${String(patch.headers.location)}?digest=${digest}`, body, {
        from: 8,
        to: 12,
        headers: { 'Content-Range': `${8 * MIB}-${12 * MIB - 1}` },
      }).response;
      t.is(put.status, 201, put.body);

      const got = await fetch(`${second.url}/v2/faults/chunked/blobs/${digest}`);
      t.is(got.status, 200);
      const { createHash } = await import('node:crypto');
      const h = createHash('sha256');
      let size = 0;
      for await (const c of got.body!) {
        h.update(c);
        size += c.length;
      }
      t.is(size, body.size);
      t.is(`sha256:${h.digest('hex')}`, digest);
    } finally {
      t.is((await stop(second)).code, 0);
    }
  });
});

test('after a restart, a session larger than can be re-hashed within the client idle timeout takes its next chunk', async (t) => {
  // volreg re-reads the session's bytes for their hash before the chunk (1 GiB: about 2.5 s here);
  // that is its own work, not the client idling, so the 1 s timeout must not cut the chunk off
  const env = { VOLREG_CLIENT_IDLE_TIMEOUT: '1' };
  const held = 1024;
  await withDataDir(async (dataDir) => {
    const body = new Body(held + 1);
    const first = await spawnServer({ dataDir, env });
    let loc: string;
    try {
      const post = await raw(first.url, 'POST', '/v2/faults/rehash/blobs/uploads/');
      t.is(post.status, 202);
      const patch = await streamRequest(first.url, 'PATCH', String(post.headers.location), body, { from: 0, to: held }).response;
      t.is(patch.status, 202);
      loc = String(patch.headers.location);
    } finally {
      t.is((await stop(first)).code, 0);
    }
    const second = await spawnServer({ dataDir, env });
    try {
      const next = await streamRequest(second.url, 'PATCH', loc, body, { from: held, to: held + 1, headers: { 'Content-Range': `${held * MIB}-${(held + 1) * MIB - 1}` } }).response;
      t.is(next.status, 202, next.body);
      t.is(next.headers.range, `0-${(held + 1) * MIB - 1}`);
      const put = await raw(second.url, 'PUT', `${String(next.headers.location)}?digest=${body.digest()}`);
      t.is(put.status, 201, put.body.toString());
    } finally {
      t.is((await stop(second)).code, 0);
    }
  });
});

test('SIGTERM with uploads in flight: they complete with 201, then the process exits 0', async (t) => {
  await withDataDir(async (dataDir) => {
    const bodies = [new Body(12), new Body(12), new Body(12)];
    const srv = await spawnServer({ dataDir });
    let exit: { code: number | null; signal: NodeJS.Signals | null };
    try {
      const uploads = bodies.map((b, i) =>
        i === 2
          ? // a chunked one: session first, then a slow final PUT
            raw(srv.url, 'POST', '/v2/faults/drain/blobs/uploads/').then((post) =>
              streamRequest(srv.url, 'PUT', `${String(post.headers.location)}?digest=${b.digest()}`, b, { delayMs: 60 }),
            )
          : Promise.resolve(streamRequest(srv.url, 'POST', `/v2/faults/drain/blobs/uploads/?digest=${b.digest()}`, b, { delayMs: 60 })),
      );
      const started = await Promise.all(uploads);
      await Promise.all(started.map((s) => s.written(2)));
      srv.kill('SIGTERM');
      const results = await Promise.all(started.map((s) => s.response));
      t.deepEqual(
        results.map((r) => r.status),
        [201, 201, 201],
      );
      exit = await srv.waitExit();
    } finally {
      srv.kill('SIGKILL');
    }
    t.is(exit.code, 0);

    const again = await spawnServer({ dataDir });
    try {
      for (const b of bodies) {
        const head = await raw(again.url, 'HEAD', `/v2/faults/drain/blobs/${b.digest()}`);
        t.is(head.status, 200);
        t.is(head.headers['content-length'], String(b.size));
      }
    } finally {
      t.is((await stop(again)).code, 0);
    }
  });
});

test('abandoned uploads are purged by the timer: session files and document go', async (t) => {
  await withDataDir(async (dataDir) => {
    const srv = await spawnServer({ dataDir, env: { VOLREG_UPLOAD_PURGE_AFTER: '1', VOLREG_UPLOAD_PURGE_INTERVAL: '1' } });
    try {
      const post = await raw(srv.url, 'POST', '/v2/faults/purge/blobs/uploads/');
      const loc = String(post.headers.location);
      const id = String(post.headers['docker-upload-uuid']);
      t.is((await raw(srv.url, 'PATCH', loc, { body: Buffer.alloc(100_000, 7) })).status, 202);
      t.true((await uploadFiles(dataDir)).some((f) => f.startsWith(`${id}/`)));
      await waitFor('the purge', async () => !(await uploadFiles(dataDir)).some((f) => f.startsWith(`${id}/`)), 15_000);
      const status = await raw(srv.url, 'GET', loc);
      t.is(status.status, 404);
      t.is(errorCode(status.body), 'BLOB_UPLOAD_UNKNOWN');
      t.regex(srv.stdout(), /abandoned uploads purged/);
    } finally {
      t.is((await stop(srv)).code, 0);
    }
  });
});
