import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { chmod, chown, lchown, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { digestOf } from '../../src/domain/digest.ts';
import { NOBODY } from '../helpers/cli-run.ts';
import { request } from '../helpers/oci-client.ts';
import { assertRoot } from '../helpers/root.ts';
import { spawnServer, VOLREG_BIN } from '../helpers/server.ts';

/**
 * A blob directory the filesystem refuses (permissions changed by hand, a read-only mount): the
 * upload's commit says so with 503 and keeps the session, /readyz says so until a commit
 * succeeds again. `volreg serve` runs as nobody (root ignores permissions), the test as root.
 */

test('a blob directory that refuses writes: 503 saying why, the upload kept, /readyz 503 until a commit succeeds again', async (t) => {
  assertRoot(t, 'it runs the server as nobody and changes permissions under it');
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-refused-'));
  await chown(dataDir, NOBODY, NOBODY);
  const srv = await spawnServer({
    dataDir,
    embeddedEngine: true,
    command: ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, VOLREG_BIN, 'serve'],
  });
  try {
    const first = randomBytes(1000);
    t.is((await request(srv.url, `/v2/refused/app/blobs/uploads/?digest=${digestOf(first)}`, { method: 'POST', body: first })).status, 201);
    const sha256Dir = join(dataDir, 'blobs', 'sha256');
    const prefixes = await readdir(sha256Dir);
    // a blob whose prefix directory does not exist yet: its commit must create one
    let next = randomBytes(1000);
    while (prefixes.includes(digestOf(next).slice(7, 9))) next = randomBytes(1000);
    await chmod(sha256Dir, 0o555);

    const started = await request(srv.url, '/v2/refused/app/blobs/uploads/', { method: 'POST' });
    const location = started.headers['location'] as string;
    t.is((await request(srv.url, location, { method: 'PATCH', body: next, headers: { 'Content-Type': 'application/octet-stream' } })).status, 202);
    const refused = await request(srv.url, `${location}${location.includes('?') ? '&' : '?'}digest=${digestOf(next)}`, { method: 'PUT' });
    t.is(refused.status, 503);
    const [error] = refused.json<{ errors: Array<{ code: string; message: string }> }>().errors;
    t.is(error?.code, 'UNAVAILABLE');
    t.regex(error?.message ?? '', /refuses writes in blobs\/sha256\/[0-9a-f]{2} \(EACCES\).*the upload is kept/);
    t.notRegex(error?.message ?? '', new RegExp(dataDir), 'no server path in a reply');
    const ready = await request(srv.url, '/readyz');
    t.is(ready.status, 503);
    t.is(ready.json<{ checks: Record<string, string> }>().checks['blobstore'], 'unavailable');
    t.regex(ready.json<{ reasons: Record<string, string> }>().reasons['blobstore'] ?? '', /^the blob storage refuses writes in blobs\/sha256\/[0-9a-f]{2} \(EACCES\)/);

    await chmod(sha256Dir, 0o755);
    t.is((await request(srv.url, location)).status, 204, 'the session is still there');
    const done = await request(srv.url, `${location}${location.includes('?') ? '&' : '?'}digest=${digestOf(next)}`, { method: 'PUT' });
    t.is(done.status, 201);
    t.is((await request(srv.url, '/readyz')).status, 200, 'ready again once a commit succeeded');
    const pulled = await request(srv.url, `/v2/refused/app/blobs/${digestOf(next)}`);
    t.true(pulled.body.equals(next));
  } finally {
    srv.kill('SIGTERM');
    await srv.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
});

const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];

/** `volreg serve` run as nobody on `dataDir` until it exits (it is expected to refuse to start). */
function serveAsNobody(dataDir: string, addr = '127.0.0.1:0'): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) env[k] = v;
    Object.assign(env, { VOLREG_DATA_DIR: dataDir, VOLREG_ADDR: addr, VOLREG_LOG_LEVEL: 'silent' });
    execFile(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, VOLREG_BIN, 'serve'], { env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

test('serve as a user who may not change a data directory root used before: exit 1 at start, naming what and how to give it over', async (t) => {
  assertRoot(t, 'it runs the server as nobody on a data directory root made');
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-taken-over-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  // a run as root leaves blobs/, uploads/ and db/ (and a session) root's
  const asRoot = await spawnServer({ dataDir, embeddedEngine: true });
  const blob = randomBytes(1000);
  t.is((await request(asRoot.url, `/v2/taken/over/blobs/uploads/?digest=${digestOf(blob)}`, { method: 'POST', body: blob })).status, 201);
  t.is((await request(asRoot.url, '/v2/taken/over/blobs/uploads/', { method: 'POST' })).status, 202);
  asRoot.kill('SIGTERM');
  t.is((await asRoot.waitExit()).code, 0);
  await chown(dataDir, NOBODY, NOBODY); // the operator gave the top directory only

  const refused = await serveAsNobody(dataDir);
  t.is(refused.code, 1, refused.stderr);
  t.regex(
    refused.stderr,
    new RegExp(`^volreg: cannot start: the data directory ${dataDir} holds what this user \\(uid ${NOBODY}\\) may not change: blobs/ \\(owned by uid 0\\), .* and \\d+ more; .*chown -R ${NOBODY}:${NOBODY} ${dataDir}$`, 'm'),
  );
  t.notRegex(refused.stdout, /listening/);

  // given over whole, it serves what root stored
  await chownTree(dataDir, NOBODY);
  const srv = await spawnServer({ dataDir, embeddedEngine: true, command: [...AS_NOBODY, process.execPath, VOLREG_BIN, 'serve'] });
  try {
    t.is((await request(srv.url, '/readyz')).status, 200);
    t.true((await request(srv.url, `/v2/taken/over/blobs/${digestOf(blob)}`)).body.equals(blob));
  } finally {
    srv.kill('SIGTERM');
    await srv.waitExit();
  }
});

test('serve as a user who may not create the data directory: exit 1 at start, saying how to make it', async (t) => {
  assertRoot(t, 'it runs the server as nobody under a directory root owns');
  const parent = await mkdtemp(join(tmpdir(), 'volreg-parent-'));
  t.teardown(() => rm(parent, { recursive: true, force: true }));
  await chmod(parent, 0o755);
  const refused = await serveAsNobody(join(parent, 'data'));
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, new RegExp(`^volreg: cannot start: cannot create the data directory ${parent}/data \\(EACCES\\): .*mkdir -p ${parent}/data && chown ${NOBODY}:${NOBODY} ${parent}/data$`, 'm'));
  t.deepEqual(await readdir(parent), []);
});

test('serve as a user who is not root on a privileged port: exit 1 at start, saying what it needs', async (t) => {
  assertRoot(t, 'it runs the server as nobody');
  const firstFree = Number((await readFile('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')).trim());
  if (!(firstFree > 1)) throw new Error('this host lets every user listen on any port (net.ipv4.ip_unprivileged_port_start)');
  const port = firstFree - 1; // refused at bind: nothing listens on it
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-low-port-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  await chown(dataDir, NOBODY, NOBODY);
  const refused = await serveAsNobody(dataDir, `127.0.0.1:${port}`);
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, new RegExp(`^volreg: cannot start: cannot listen on 127\\.0\\.0\\.1:${port}: EACCES: a port below ${port + 1} needs root or CAP_NET_BIND_SERVICE; `, 'm'));
  t.deepEqual(await readdir(dataDir), [], 'found before the data directory is opened');
});

test('a blob the server may not read (left by root with mode 600): 503 saying so, not 500', async (t) => {
  assertRoot(t, 'it runs the server as nobody beside a blob only root may read');
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-unreadable-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  await chown(dataDir, NOBODY, NOBODY);
  const srv = await spawnServer({ dataDir, embeddedEngine: true, command: [...AS_NOBODY, process.execPath, VOLREG_BIN, 'serve'] });
  try {
    const blob = randomBytes(1000);
    const digest = digestOf(blob);
    t.is((await request(srv.url, `/v2/unreadable/app/blobs/uploads/?digest=${digest}`, { method: 'POST', body: blob })).status, 201);
    const path = join(dataDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7));
    await chown(path, 0, 0);
    await chmod(path, 0o600);
    for (const range of [undefined, 'bytes=0-9']) {
      const got = await request(srv.url, `/v2/unreadable/app/blobs/${digest}`, range ? { headers: { Range: range } } : {});
      t.is(got.status, 503, range ?? 'whole');
      const [error] = got.json<{ errors: Array<{ code: string; message: string }> }>().errors;
      t.is(error?.code, 'UNAVAILABLE');
      t.is(error?.message, `the blob storage refuses to read blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)} (EACCES); fix the data directory's permissions`);
    }
    await chmod(path, 0o644);
    t.true((await request(srv.url, `/v2/unreadable/app/blobs/${digest}`)).body.equals(blob), 'readable again, the same bytes');
  } finally {
    srv.kill('SIGTERM');
    await srv.waitExit();
  }
});

async function chownTree(dir: string, id: number): Promise<void> {
  await chown(dir, id, id);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, id);
    else await lchown(p, id, id);
  }
}
