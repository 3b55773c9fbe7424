import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { spawnServer, VOLREG_BIN, type SpawnedServer } from '../helpers/server.ts';
import { bytesOf, raw, sha256, startSession, type ErrorEnvelope, type RawResponse } from '../http/blobs-client.ts';
import { Body, MIB, streamRequest } from './upload-faults-client.ts';

/**
 * A full disk, for real: `volreg serve` runs in a private user and mount namespace
 * (`unshare -rm`, no privileges needed beyond user namespaces) with its data directory on a
 * small tmpfs, so writes end in ENOSPC exactly as on a full volume. Everything goes through
 * HTTP (and curl for the snapshot); what was freed is proven by what fits afterwards.
 */

const execFileP = promisify(execFile);

async function onSmallDisk(sizeMiB: number, env: Record<string, string>, fn: (srv: SpawnedServer) => Promise<void>): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-full-'));
  const mountAndRun = `mount -t tmpfs -o size=${sizeMiB}m tmpfs "$VOLREG_DATA_DIR" && exec "$@"`;
  let srv: SpawnedServer | undefined;
  try {
    srv = await spawnServer({
      dataDir,
      // the embedded engine, whatever the suite uses otherwise: its journal shares the small disk
      env: { VOLREG_MONGODB_URL: '', ...env },
      command: ['unshare', '-rm', 'sh', '-c', mountAndRun, 'sh', process.execPath, VOLREG_BIN, 'serve'],
    });
    await fn(srv);
  } finally {
    srv?.kill('SIGTERM');
    await srv?.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** The value of an unlabelled gauge on /metrics. */
async function gauge(srv: SpawnedServer, name: string): Promise<number> {
  const text = (await raw(srv.url, 'GET', '/metrics')).body.toString();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`${name} not on /metrics`);
  return Number(m[1]);
}

function envelope(res: { body: Buffer | string }): ErrorEnvelope['errors'][number] {
  return (JSON.parse(res.body.toString()) as ErrorEnvelope).errors[0]!;
}

function storageFull(t: import('ava').ExecutionContext, res: { status: number; body: Buffer | string }, message: RegExp): Record<string, unknown> {
  t.is(res.status, 507, res.body.toString().slice(0, 300));
  const e = envelope(res);
  t.is(e.code, 'STORAGE_FULL');
  t.regex(e.message, message);
  return (e.detail ?? {}) as Record<string, unknown>;
}

test('the free-space reserve: uploads that would eat into it get 507 STORAGE_FULL, keep nothing, and what fits still goes in', async (t) => {
  await onSmallDisk(64, { VOLREG_MIN_FREE_BYTES: String(16 * MIB) }, async (srv) => {
    // declared length: refused before the body is read
    const big = new Body(56);
    const mono = streamRequest(srv.url, 'POST', `/v2/full/reserve/blobs/uploads/?digest=${big.digest()}`, big);
    // the message names the size that did not fit: free space above the reserve is otherwise no reason
    const detail = storageFull(t, await mono.response, /^nothing of this upload was kept: not enough free space for 58720256 more bytes: \d+ bytes free, 16777216 kept in reserve$/);
    t.is(detail.reserveBytes, 16 * MIB);
    t.is(detail.incomingBytes, 56 * MIB);
    t.true(Number(detail.freeBytes) > 56 * MIB && Number(detail.freeBytes) <= 64 * MIB, String(detail.freeBytes));
    t.is((await raw(srv.url, 'HEAD', `/v2/full/reserve/blobs/${big.digest()}`)).status, 404);
    // a declared length without a Content-Range (a streamed PATCH, a snapshot sent with curl -T file): refused at once too
    // (a petabyte announced, one MiB sent: the answer does not wait for the rest, only for the
    // bounded drain that lets the client read it)
    const announced = { to: 1, contentLength: 1024 ** 5 };
    const atOnce = <T>(p: Promise<T>): Promise<T> =>
      Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error('no answer before the body')), 30_000))]);
    const session = await startSession(srv.url, 'full/reserve');
    const patch = streamRequest(srv.url, 'PATCH', session, new Body(1), announced);
    t.teardown(() => patch.req.destroy());
    const patched = await atOnce(patch.response);
    t.is(patched.status, 507, patched.body);
    t.is((await raw(srv.url, 'GET', session)).headers.range, '0-0');
    const snapshot = streamRequest(srv.url, 'PUT', '/api/v1/volumes/full/tags/declared', new Body(1), announced);
    t.teardown(() => snapshot.req.destroy());
    storageFull(t, await atOnce(snapshot.response), /^nothing of this upload was kept: not enough free space/);
    t.is(await gauge(srv, 'volreg_storage_min_free_bytes'), 16 * MIB);
    const free = await gauge(srv, 'volreg_storage_free_bytes');
    t.true(Math.abs(free - Number(detail.freeBytes)) < MIB, `about the free space the refusal named: ${free} vs ${String(detail.freeBytes)}`);

    // unknown length (curl -T - sends it chunked): stopped on the way, the snapshot is not there
    const tree = await mkdtemp(join(tmpdir(), 'volreg-full-tree-'));
    try {
      // 60 MiB: past the last check that can pass (free space is looked at every 8 MiB)
      const data = new Body(60);
      await writeFile(join(tree, 'data.bin'), Buffer.concat(Array.from({ length: data.chunks }, (_, i) => data.chunk(i))));
      const script = `tar -C "$1" -czf - . | curl -s -w '\\n%{http_code}' -T - "$2"`;
      const { stdout } = await execFileP('sh', ['-c', script, 'sh', tree, `${srv.url}/api/v1/volumes/full/tags/too-big`]);
      const [body, status] = [stdout.slice(0, stdout.lastIndexOf('\n')), Number(stdout.slice(stdout.lastIndexOf('\n') + 1))];
      storageFull(t, { status, body }, /^nothing of this upload was kept: not enough free space/);
    } finally {
      await rm(tree, { recursive: true, force: true });
    }
    t.is((await raw(srv.url, 'GET', '/api/v1/volumes/full/tags/too-big')).status, 404);

    // the space of both refusals came back: 40 MiB still fits above the reserve
    const fits = new Body(40);
    const ok = await streamRequest(srv.url, 'POST', `/v2/full/reserve/blobs/uploads/?digest=${fits.digest()}`, fits).response;
    t.is(ok.status, 201, ok.body);
    const head = await raw(srv.url, 'HEAD', `/v2/full/reserve/blobs/${fits.digest()}`);
    t.is(head.status, 200);
    t.is(head.headers['content-length'], String(40 * MIB));
    // metadata writes need no blob space: they go on
    t.is((await raw(srv.url, 'DELETE', `/v2/full/reserve/blobs/${fits.digest()}`)).status, 202);
  });
});

test('a disk full without a reserve: ENOSPC is 507 STORAGE_FULL, a chunked upload stays at its last offset and finishes once space is freed', async (t) => {
  await onSmallDisk(48, { VOLREG_MIN_FREE_BYTES: '0' }, async (srv) => {
    const chunk = (i: number): Buffer => bytesOf(8 * MIB, i + 1);

    // another session holds 8 MiB, to be given back later
    const other = await startSession(srv.url, 'full/other');
    t.is((await raw(srv.url, 'PATCH', other, { body: chunk(100), headers: { 'Content-Range': `0-${8 * MIB - 1}` } })).status, 202);

    // fill the disk through one session, 8 MiB at a time, until the filesystem refuses
    let location = await startSession(srv.url, 'full/chunked');
    const sent: Buffer[] = [];
    let refused: RawResponse | undefined;
    for (let i = 0; i < 8 && !refused; i++) {
      const offset = sent.length * 8 * MIB;
      const res = await raw(srv.url, 'PATCH', location, { body: chunk(i), headers: { 'Content-Range': `${offset}-${offset + 8 * MIB - 1}` } });
      if (res.status === 202) {
        sent.push(chunk(i));
        location = String(res.headers.location);
      } else refused = res;
    }
    t.truthy(refused, 'the 48 MiB disk refused a chunk');
    const kept = sent.length * 8 * MIB;
    t.true(sent.length >= 3, `${sent.length} chunks fitted`);
    const detail = storageFull(t, refused!, new RegExp(`^this chunk was not kept; the upload stays at offset ${kept}: no space left on the storage`));
    t.is(detail.offset, kept);
    const status = await raw(srv.url, 'GET', location);
    t.is(status.status, 204);
    t.is(status.headers.range, `0-${kept - 1}`);

    // a single-request upload on the full disk: refused, nothing of it kept
    const mono = bytesOf(12 * MIB, 77); // more than the refused chunk left free
    const monoRes = await raw(srv.url, 'POST', `/v2/full/mono/blobs/uploads/?digest=${sha256(mono)}`, { body: mono });
    storageFull(t, monoRes, /^nothing of this upload was kept: no space left on the storage/);
    t.is((await raw(srv.url, 'HEAD', `/v2/full/mono/blobs/${sha256(mono)}`)).status, 404);

    // cancelling the other session frees its 8 MiB; the refused chunk then goes in at the reported offset
    t.is((await raw(srv.url, 'DELETE', other)).status, 204);
    const retry = await raw(srv.url, 'PATCH', location, { body: chunk(sent.length), headers: { 'Content-Range': `${kept}-${kept + 8 * MIB - 1}` } });
    t.is(retry.status, 202, retry.body.toString());
    sent.push(chunk(sent.length));
    const whole = Buffer.concat(sent);
    const last = String(retry.headers.location);
    const done = await raw(srv.url, 'PUT', `${last}${last.includes('?') ? '&' : '?'}digest=${sha256(whole)}`);
    t.is(done.status, 201, done.body.toString());

    const back = await raw(srv.url, 'GET', `/v2/full/chunked/blobs/${sha256(whole)}`);
    t.is(back.status, 200);
    t.is(sha256(back.body), sha256(whole), 'the blob is byte-identical to what was sent');
  });
});

test('the embedded engine out of disk space: metadata writes get 507, reads go on, /healthz and /readyz say a restart is needed', async (t) => {
  await onSmallDisk(32, { VOLREG_MIN_FREE_BYTES: '0' }, async (srv) => {
    const small = bytesOf(100, 9);
    const digest = sha256(small);
    t.is((await raw(srv.url, 'POST', `/v2/full/meta/blobs/uploads/?digest=${digest}`, { body: small })).status, 201);

    // fill the disk to the last byte with one session, in ever smaller chunks
    let location = await startSession(srv.url, 'full/filler');
    let offset = 0;
    for (const size of [8 * MIB, MIB, 64 * 1024, 4096, 512, 64]) {
      for (;;) {
        const res = await raw(srv.url, 'PATCH', location, { body: bytesOf(size, offset), headers: { 'Content-Range': `${offset}-${offset + size - 1}` } });
        if (res.status !== 202) {
          t.is(res.status, 507, res.body.toString());
          break;
        }
        location = String(res.headers.location);
        offset += size;
      }
    }

    // metadata writes (mounting the blob into new repositories) until the engine's journal has no room
    let refused: RawResponse | undefined;
    for (let i = 0; i < 200 && !refused; i++) {
      const res = await raw(srv.url, 'POST', `/v2/full/mount-${i}/blobs/uploads/?mount=${digest}&from=full/meta`);
      if (res.status !== 201) refused = res;
    }
    t.truthy(refused, 'a metadata write was refused');
    storageFull(t, refused!, /^the metadata store is out of disk space/);
    // a write after the failure is refused before it changes anything, even in memory: the
    // blob this DELETE would remove from the repository stays readable below
    storageFull(t, await raw(srv.url, 'DELETE', `/v2/full/meta/blobs/${digest}`), /^the metadata store is out of disk space/);

    t.true((await gauge(srv, 'volreg_storage_free_bytes')) < 64 * 1024, 'the disk is full');
    t.is(await gauge(srv, 'volreg_metadata_writable'), 0);
    const health = await raw(srv.url, 'GET', '/healthz');
    t.is(health.status, 503);
    t.regex(JSON.parse(health.body.toString()).reason as string, /accepts no writes: .*no space left on device.*restart volreg/);
    const ready = await raw(srv.url, 'GET', '/readyz');
    t.is(ready.status, 503);
    const readyBody = JSON.parse(ready.body.toString()) as { checks: Record<string, string>; reasons: Record<string, string> };
    t.is(readyBody.checks.mongodb, 'unavailable');
    t.regex(readyBody.reasons.mongodb ?? '', /^the embedded MongoDB engine accepts no writes: .*restart volreg$/);

    // not even a cancel can take its lock on a disk with no byte left: 507, and the session stays
    storageFull(t, await raw(srv.url, 'DELETE', location), /even to cancel/);
    t.is((await raw(srv.url, 'GET', location)).status, 204);

    // reads still answer, from what was written before
    const head = await raw(srv.url, 'HEAD', `/v2/full/meta/blobs/${digest}`);
    t.is(head.status, 200);
    const get = await raw(srv.url, 'GET', `/v2/full/meta/blobs/${digest}`);
    t.deepEqual(get.body, small);
  });
});
