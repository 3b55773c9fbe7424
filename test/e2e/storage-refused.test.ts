import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdtemp, readdir, rm } from 'node:fs/promises';
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
