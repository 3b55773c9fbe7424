import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { digestOf } from '../../src/domain/digest.ts';
import { injectFault } from '../helpers/injected-faults.ts';
import { errorCode, request, type Reply } from '../helpers/oci-client.ts';
import { assertRoot } from '../helpers/root.ts';
import { spawnServer, type SpawnedServer } from '../helpers/server.ts';

/**
 * A data filesystem that fails under a running `volreg serve`: strace makes the server's own
 * fsync, fdatasync and read calls on chosen files fail with EIO (test/helpers/injected-faults.ts).
 * Nothing is acknowledged that the disk may not hold, a failed sync is never retried and
 * trusted, and every failure is a 503 saying what failed, never a clean-looking reply.
 */

async function withServer(t: ExecutionContext, body: (srv: SpawnedServer, dataDir: string) => Promise<void>): Promise<void> {
  assertRoot(t, 'strace attaches to the server');
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-failing-'));
  const srv = await spawnServer({ dataDir, embeddedEngine: true });
  try {
    await body(srv, dataDir);
  } finally {
    srv.kill('SIGTERM');
    await srv.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** A chunked upload of `bytes` up to its commit: the session's location and id. */
async function uploadedSession(url: string, repo: string, bytes: Buffer): Promise<{ location: string; id: string }> {
  const started = await request(url, `/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const location = started.headers['location'] as string;
  const patched = await request(url, location, { method: 'PATCH', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  if (patched.status !== 202) throw new Error(`PATCH answered ${patched.status}`);
  return { location, id: location.split('?')[0]!.split('/').pop()! };
}

const commit = (url: string, location: string, bytes: Buffer): Promise<Reply> =>
  request(url, `${location}${location.includes('?') ? '&' : '?'}digest=${digestOf(bytes)}`, { method: 'PUT' });

const monolithic = (url: string, repo: string, bytes: Buffer): Promise<Reply> =>
  request(url, `/v2/${repo}/blobs/uploads/?digest=${digestOf(bytes)}`, { method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });

function message(r: Reply): string {
  return r.json<{ errors: Array<{ message: string }> }>().errors[0]?.message ?? '';
}

test("a commit whose fsync of the data fails: 503, the upload is gone rather than kept for a retry whose fsync would succeed over what Linux dropped; /readyz 503 until a commit succeeds", async (t) => {
  await withServer(t, async (srv, dataDir) => {
    const bytes = randomBytes(300_000);
    const { location, id } = await uploadedSession(srv.url, 'failing/app', bytes);
    const fault = await injectFault(srv.child.pid!, { syscall: 'fsync', error: 'EIO', paths: [join(dataDir, 'uploads', id, 'data')] });
    const failed = await commit(srv.url, location, bytes);
    await fault.clear();
    t.is(fault.injected(), 1);
    t.is(failed.status, 503);
    t.is(errorCode(failed), 'UNAVAILABLE');
    t.regex(message(failed), /failed to make this upload durable \(EIO\); the upload is gone, start it again/);

    // the fault has cleared: the same commit again must not succeed
    const again = await commit(srv.url, location, bytes);
    t.is(again.status, 404);
    t.is(errorCode(again), 'BLOB_UPLOAD_UNKNOWN');
    t.deepEqual(await readdir(join(dataDir, 'uploads')), [], 'nothing of the upload is left');
    t.is((await request(srv.url, `/v2/failing/app/blobs/${digestOf(bytes)}`, { method: 'HEAD' })).status, 404);
    const ready = await request(srv.url, '/readyz');
    t.is(ready.status, 503);
    t.regex(ready.json<{ reasons: Record<string, string> }>().reasons['blobstore'] ?? '', /failed to make an upload durable \(EIO\)/);

    // uploading it again stores it
    t.is((await monolithic(srv.url, 'failing/app', bytes)).status, 201);
    t.true((await request(srv.url, `/v2/failing/app/blobs/${digestOf(bytes)}`)).body.equals(bytes));
    t.is((await request(srv.url, '/readyz')).status, 200);
  });
});

test("a commit whose fsync of the blob's directory fails: 503, the upload is gone, the blob unknown until uploaded again", async (t) => {
  await withServer(t, async (srv, dataDir) => {
    const bytes = randomBytes(300_000);
    const { location } = await uploadedSession(srv.url, 'failing/dir', bytes);
    const dir = join(dataDir, 'blobs', 'sha256', digestOf(bytes).slice(7, 9));
    await mkdir(dir, { recursive: true });
    const fault = await injectFault(srv.child.pid!, { syscall: 'fsync', error: 'EIO', paths: [dir] });
    const failed = await commit(srv.url, location, bytes);
    await fault.clear();
    t.is(fault.injected(), 1);
    t.is(failed.status, 503);
    t.regex(message(failed), /failed to make this upload durable \(EIO\); the upload is gone/);
    t.deepEqual(await readdir(join(dataDir, 'uploads')), [], 'the session is removed, not left half committed');
    t.is((await request(srv.url, `/v2/failing/dir/blobs/${digestOf(bytes)}`, { method: 'HEAD' })).status, 404, 'nothing names the blob');

    t.is((await monolithic(srv.url, 'failing/dir', bytes)).status, 201);
    t.true((await request(srv.url, `/v2/failing/dir/blobs/${digestOf(bytes)}`)).body.equals(bytes));
  });
});

test('a chunk the disk fails to write: 503 saying so, the session stays at its offset, the chunk sent again is kept', async (t) => {
  await withServer(t, async (srv, dataDir) => {
    const first = randomBytes(100_000);
    const second = randomBytes(2_000_000);
    const { location, id } = await uploadedSession(srv.url, 'failing/chunk', first);
    const fault = await injectFault(srv.child.pid!, { syscall: 'pwritev', error: 'EIO', paths: [join(dataDir, 'uploads', id, 'data')] });
    const headers = { 'Content-Type': 'application/octet-stream', 'Content-Range': `${first.length}-${first.length + second.length - 1}` };
    const failed = await request(srv.url, location, { method: 'PATCH', body: second, headers });
    await fault.clear();
    t.true(fault.injected() > 0);
    t.is(failed.status, 503);
    t.is(errorCode(failed), 'UNAVAILABLE');
    t.regex(message(failed), /^the data filesystem failed \(EIO\)/);
    t.is((await request(srv.url, location)).headers['range'], `0-${first.length - 1}`, 'the session is where it was');

    t.is((await request(srv.url, location, { method: 'PATCH', body: second, headers })).status, 202);
    const whole = Buffer.concat([first, second]);
    t.is((await commit(srv.url, location, whole)).status, 201);
    t.true((await request(srv.url, `/v2/failing/chunk/blobs/${digestOf(whole)}`)).body.equals(whole));
  });
});

/** A GET read to its end or its cut: what arrived and whether the body was complete. */
function download(url: string): Promise<{ status: number; length: number; received: number; complete: boolean }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let received = 0;
      const done = (): void => resolve({ status: res.statusCode ?? 0, length: Number(res.headers['content-length']), received, complete: res.complete });
      res.on('data', (c: Buffer) => (received += c.length));
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    }).on('error', reject);
  });
}

test('a blob whose reads fail: a download already under way is cut, never a short clean 200; one not yet started is 503; both are logged as errors', async (t) => {
  await withServer(t, async (srv, dataDir) => {
    const bytes = randomBytes(3 * 1024 * 1024);
    t.is((await monolithic(srv.url, 'failing/read', bytes)).status, 201);
    const hex = digestOf(bytes).slice(7);
    const file = join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
    const url = `${srv.url}/v2/failing/read/blobs/${digestOf(bytes)}`;

    // each thread's first two reads pass: the reply has begun when the disk fails
    let fault = await injectFault(srv.child.pid!, { syscall: 'pread64', error: 'EIO', paths: [file], when: '3+' });
    const cut = await download(url);
    await fault.clear();
    t.true(fault.injected() > 0);
    t.is(cut.status, 200);
    t.is(cut.length, bytes.length);
    t.false(cut.complete, 'the connection is cut');
    t.true(cut.received > 0 && cut.received < bytes.length, `${cut.received} bytes arrived`);

    fault = await injectFault(srv.child.pid!, { syscall: 'pread64', error: 'EIO', paths: [file] });
    const refused = await request(srv.url, `/v2/failing/read/blobs/${digestOf(bytes)}`);
    await fault.clear();
    t.is(refused.status, 503);
    t.is(errorCode(refused), 'UNAVAILABLE');
    t.regex(message(refused), /^the data filesystem failed \(EIO\)/);

    const logged = srv.stdout().split('\n').filter((l) => l.includes('"level":50') && l.includes('the data filesystem failed (EIO)'));
    t.is(logged.length, 2, 'the cut download and the refused one');
    t.true((await request(srv.url, `/v2/failing/read/blobs/${digestOf(bytes)}`)).body.equals(bytes), 'read whole once the fault has cleared');
  });
});

test('the engine journal whose fdatasync fails: the write is refused, and so is every later one until a restart, as mongod stops; reads go on; after the restart the retry succeeds', async (t) => {
  assertRoot(t, 'strace attaches to the server');
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-failing-'));
  let srv = await spawnServer({ dataDir, embeddedEngine: true });
  try {
    const kept = randomBytes(1000);
    t.is((await monolithic(srv.url, 'failing/meta', kept)).status, 201);
    const journals = (await readdir(join(dataDir, 'db'))).filter((f) => /^journal-\d+\.log$/.test(f));
    const fault = await injectFault(srv.child.pid!, { syscall: 'fdatasync', error: 'EIO', paths: journals.map((f) => join(dataDir, 'db', f)) });
    const lost = randomBytes(1000);
    const failed = await monolithic(srv.url, 'failing/meta', lost);
    await fault.clear();
    t.true(fault.injected() > 0);
    t.is(failed.status, 503);
    t.regex(message(failed), /^the metadata store accepts no writes until volreg is restarted/);

    // the fault has cleared, but the journal may have lost what memory holds: no more writes
    const later = await monolithic(srv.url, 'failing/meta', randomBytes(1000));
    t.is(later.status, 503);
    const health = await request(srv.url, '/healthz');
    t.is(health.status, 503);
    t.regex(health.json<{ reason: string }>().reason, /accepts no writes: .*EIO.*restart volreg/);
    t.true((await request(srv.url, `/v2/failing/meta/blobs/${digestOf(kept)}`)).body.equals(kept), 'reads go on');

    srv.kill('SIGTERM');
    await srv.waitExit();
    srv = await spawnServer({ dataDir, embeddedEngine: true });
    t.is((await request(srv.url, '/healthz')).status, 200);
    t.true((await request(srv.url, `/v2/failing/meta/blobs/${digestOf(kept)}`)).body.equals(kept), 'what was acknowledged is there');
    t.is((await monolithic(srv.url, 'failing/meta', lost)).status, 201, 'the refused upload, sent again');
    t.true((await request(srv.url, `/v2/failing/meta/blobs/${digestOf(lost)}`)).body.equals(lost));
  } finally {
    srv.kill('SIGTERM');
    await srv.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
});
