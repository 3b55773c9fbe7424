import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { configBlob, ociManifest, randomBlob } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL, getManifest, pushBlobs, putManifest, request } from '../helpers/oci-client.ts';
import { spawnServer, VOLREG_BIN, REPO_ROOT } from '../helpers/server.ts';
import { stalledChunk } from '../helpers/stalled-chunk.ts';
import { standaloneEngine } from '../helpers/standalone-engine.ts';

/**
 * Several `volreg serve` processes share one data directory and one standalone engine
 * (`volreg db`), as an operator scales the store out. Their blobs are recorded in that one
 * database; a process (or the `volreg gc` cron job) started on the same data directory with
 * another database (VOLREG_MONGODB_URL forgotten: the embedded engine, or a mistyped
 * VOLREG_MONGODB_DATABASE) sees every blob as bytes without a record, and its garbage collection
 * deleted them all. It is refused instead, before it touches anything.
 */

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function volreg(args: string[], env: Record<string, string>): Promise<Run> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) clean[k] = v;
  return new Promise((resolve) => {
    execFile(process.execPath, [VOLREG_BIN, ...args], { env: { ...clean, ...env }, cwd: REPO_ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false);

test('a process on the shared data directory with another database is refused; its gc never deletes the store', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-shared-'));
  const dataDir = join(root, 'data');
  const engine = await standaloneEngine(join(root, 'engine'));
  const shared = { VOLREG_DATA_DIR: dataDir, VOLREG_MONGODB_URL: engine.url };
  try {
    const config = configBlob();
    const layer = randomBlob(4000);
    const manifest = ociManifest({ config, layers: [layer] });
    const layerFile = join(dataDir, 'blobs', 'sha256', layer.digest.slice(7, 9), layer.digest.slice(7));
    // two servers behind a balancer: the blobs through one, the manifest through the other
    const a = await spawnServer({ dataDir, env: shared });
    const b = await spawnServer({ dataDir, env: shared });
    try {
      await pushBlobs(a.url, 'team/app', [config, layer]);
      t.is((await putManifest(b.url, 'team/app', 'v1', manifest)).status, 201);
    } finally {
      a.kill('SIGTERM');
      b.kill('SIGTERM');
      await Promise.all([a.waitExit(), b.waitExit()]);
    }
    t.true(await exists(layerFile));
    await new Promise((r) => setTimeout(r, 1100)); // unit and file times are whole seconds

    // A third server started without VOLREG_MONGODB_URL (the embedded engine, an empty
    // database), or with a mistyped database name, does not serve (nor collect) beside the others.
    const strays: Array<[string, Record<string, string>]> = [
      ['embedded engine', {}],
      ['mistyped database', { VOLREG_MONGODB_URL: engine.url, VOLREG_MONGODB_DATABASE: 'volerg' }],
    ];
    for (const [what, env] of strays) {
      const refused = await spawnServer({ dataDir, embeddedEngine: true, env: { ...env, VOLREG_GC_INTERVAL: '1', VOLREG_GC_GRACE: '0' } }).then(
        async (s) => {
          await new Promise((r) => setTimeout(r, 3000)); // its collection runs every second
          s.kill('SIGKILL');
          await s.waitExit();
          return null;
        },
        (err: Error) => err.message,
      );
      t.regex(refused ?? 'it started', /another metadata database/, what);
      t.true(await exists(layerFile), `the blob is still stored (${what})`);
    }

    // the gc cron job without VOLREG_MONGODB_URL (the embedded engine's directory exists now)
    const forgotUrl = await volreg(['gc', '--grace', '0', '--json'], { VOLREG_DATA_DIR: dataDir });
    t.is(forgotUrl.code, 1, forgotUrl.stdout);
    t.regex(forgotUrl.stderr, /another metadata database/);
    t.regex(forgotUrl.stderr, /VOLREG_MONGODB_URL/);
    t.true(await exists(layerFile), 'the blob is still stored (gc)');

    // the right configuration goes on as before: gc keeps the tagged content, the tag pulls whole
    const right = await volreg(['gc', '--grace', '0', '--json'], shared);
    t.is(right.code, 0, right.stderr);
    const c = await spawnServer({ dataDir, env: shared });
    try {
      const got = await getManifest(c.url, 'team/app', 'v1', ACCEPT_ALL);
      t.is(got.status, 200);
      const blob = await request(c.url, `/v2/team/app/blobs/${layer.digest}`);
      t.is(blob.status, 200);
      t.deepEqual(blob.body, layer.bytes);
    } finally {
      c.kill('SIGTERM');
      await c.waitExit();
    }
  } finally {
    await engine.stop();
    await rm(root, { recursive: true, force: true });
  }
});

test('a chunk whose client stalled on one process gives way to the retry the balancer sends to another', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'volreg-shared-stall-'));
  const dataDir = join(root, 'data');
  const engine = await standaloneEngine(join(root, 'engine'));
  const shared = { VOLREG_DATA_DIR: dataDir, VOLREG_MONGODB_URL: engine.url };
  const [a, b] = await Promise.all([spawnServer({ dataDir, env: shared }), spawnServer({ dataDir, env: shared })]);
  try {
    const bytes = randomBlob(20_000).bytes;
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const opened = await request(a.url, '/v2/team/stalled/blobs/uploads/', { method: 'POST' });
    t.is(opened.status, 202);
    const loc = String(opened.headers.location);
    // through A: a PATCH that announces 10,000 bytes, sends 10 and then nothing (its connection died unnoticed)
    const stalled = stalledChunk(a.url, loc, bytes);
    await new Promise((r) => setTimeout(r, 500)); // it holds the session now

    // the client's retry, which the balancer sends to B
    const started = Date.now();
    const retry = await request(b.url, loc, { method: 'PATCH', body: bytes.subarray(0, 10_000), headers: { 'Content-Range': '0-9999' } });
    t.is(retry.status, 202, retry.body.toString());
    t.is(retry.headers.range, '0-9999');
    t.true(Date.now() - started < 6000, `the retry waited ${Date.now() - started} ms (a session is busy for 10 s)`);
    await stalled.closed; // A closed the stalled request's connection and dropped its 10 bytes

    const rest = await request(a.url, `${loc}?digest=${digest}`, { method: 'PUT', body: bytes.subarray(10_000) });
    t.is(rest.status, 201, rest.body.toString());
    for (const s of [a, b]) t.deepEqual((await request(s.url, `/v2/team/stalled/blobs/${digest}`)).body, bytes);
  } finally {
    a.kill('SIGTERM');
    b.kill('SIGTERM');
    await Promise.all([a.waitExit(), b.waitExit()]);
    await engine.stop();
    await rm(root, { recursive: true, force: true });
  }
});
