import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MongoClient } from 'mongodb';
import { databaseEnv, PACKAGE_BIN, REPO_ROOT, spawnServer, VOLREG_BIN } from '../helpers/server.ts';

/**
 * The real `volreg serve` as a child process: `npm start` on port 0, the listening line,
 * SIGTERM, restarts on the same data directory (after a clean stop and after kill -9), a
 * second process on a locked data directory, and the command's exit codes.
 */

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'volreg-serve-'));
  dirs.push(d);
  return d;
}
test.after.always(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function run(args: string[], env: Record<string, string> = {}, cwd = REPO_ROOT, bin = VOLREG_BIN): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) base[k] = v;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('npm start on port 0: warnings, listening line, GET /v2/, /healthz, /readyz, /metrics, then SIGTERM exits 0', async (t) => {
  const dataDir = await tempDir();
  // a misspelt variable is only a warning
  // npm start compiles first (tsc): allow for a slow, loaded machine
  const server = await spawnServer({ dataDir, command: ['npm', 'start', '--silent'], env: { VOLREG_DATADIR: '/tmp/typo' }, timeoutMs: 180_000 });
  t.teardown(() => server.kill('SIGKILL'));
  t.regex(server.stderr(), /volreg: warning: VOLREG_DATADIR .*did you mean VOLREG_DATA_DIR\?/);
  t.regex(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const lines = server.stdout().split('\n').filter((l) => l.startsWith('volreg listening on'));
  t.deepEqual(lines, [`volreg listening on ${server.url}`]);

  const v2 = await fetch(`${server.url}/v2/`);
  t.is(v2.status, 200);
  t.is(v2.headers.get('docker-distribution-api-version'), 'registry/2.0');
  t.deepEqual(await v2.json(), {});
  t.is((await fetch(`${server.url}/healthz`)).status, 200);
  const ready = await fetch(`${server.url}/readyz`);
  t.deepEqual(await ready.json(), { status: 'ok', checks: { mongodb: 'ok', blobstore: 'ok' } });
  t.is(ready.status, 200);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  t.regex(metrics, /^volreg_http_requests_total\{route="v2Base",method="GET",status="200"\} 1$/m);
  t.regex(metrics, /^volreg_process_cpu_seconds_total /m);
  t.regex(metrics, /^volreg_storage_free_bytes [1-9]\d*$/m);
  t.regex(metrics, /^volreg_storage_min_free_bytes 268435456$/m);
  t.regex(metrics, /^volreg_metadata_writable 1$/m);

  // the access log is JSON lines on stdout
  const logLine = server
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((l) => l.msg === 'request' && l.path === '/v2/');
  t.like(logLine, { method: 'GET', status: 200 });

  server.kill('SIGTERM');
  const exit = await server.waitExit();
  t.deepEqual(exit, { code: 0, signal: null });
  t.regex(server.stdout(), /"msg":"stopped"/);
  // the embedded engine keeps its files in DATA_DIR/db (unless the suite runs on MONGODB_URL)
  if (!process.env.MONGODB_URL) t.true((await readdir(join(dataDir, 'db'))).length > 0);
});

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Pushes a blob (monolithic upload) and a tagged OCI manifest that references it. */
async function pushImage(url: string, repo: string, tag: string, layer: Buffer): Promise<{ manifest: string; digest: string }> {
  const config = Buffer.from('{}');
  for (const blob of [config, layer]) {
    const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: new Uint8Array(blob) });
    if (res.status !== 201) throw new Error(`blob push: ${res.status} ${await res.text()}`);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
  });
  const res = await fetch(`${url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  if (res.status !== 201) throw new Error(`manifest push: ${res.status} ${await res.text()}`);
  return { manifest, digest: sha256(manifest) };
}

async function expectImage(t: ExecutionContext, url: string, repo: string, tag: string, layer: Buffer, manifest: string): Promise<void> {
  const m = await fetch(`${url}/v2/${repo}/manifests/${tag}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(m.status, 200);
  t.is(await m.text(), manifest);
  const b = await fetch(`${url}/v2/${repo}/blobs/${sha256(layer)}`);
  t.is(b.status, 200);
  t.true(Buffer.from(await b.arrayBuffer()).equals(layer));
  const tags = (await (await fetch(`${url}/v2/${repo}/tags/list`)).json()) as { tags: string[] };
  t.true(tags.tags.includes(tag));
}

test('a restart on the same data directory finds what the first run wrote', async (t) => {
  const dataDir = await tempDir();
  const first = await spawnServer({ dataDir });
  t.teardown(() => first.kill('SIGKILL'));
  t.regex(first.stdout(), /"msg":"applying migration"/);
  const layer = randomBytes(300_000);
  const { manifest } = await pushImage(first.url, 'e2e/restart', 'v1', layer);
  await expectImage(t, first.url, 'e2e/restart', 'v1', layer, manifest);
  first.kill('SIGTERM');
  t.is((await first.waitExit()).code, 0);

  const status = await run(['migrate', 'status'], { VOLREG_DATA_DIR: dataDir, ...databaseEnv(dataDir) });
  t.is(status.code, 0, status.stderr);
  const applied = status.stdout.trim().split('\n');
  t.true(applied.length >= 1);
  for (const line of applied) t.regex(line, /\tapplied \d{4}-/);

  const second = await spawnServer({ dataDir });
  t.teardown(() => second.kill('SIGKILL'));
  // migrations were recorded durably: nothing to apply the second time
  t.notRegex(second.stdout(), /"msg":"applying migration"/);
  t.is((await fetch(`${second.url}/readyz`)).status, 200);
  await expectImage(t, second.url, 'e2e/restart', 'v1', layer, manifest);
  second.kill('SIGTERM');
  t.is((await second.waitExit()).code, 0);
});

test('pulls repeated between pushes see each push at once (the engine thread moves the marks the service reads)', async (t) => {
  const dataDir = await tempDir();
  const server = await spawnServer({ dataDir, embeddedEngine: true });
  t.teardown(() => server.kill('SIGKILL'));
  // the engine's own count of finds, read over its socket: the pulls repeated must not add any
  const engine = new MongoClient(`mongodb://${encodeURIComponent(join(dataDir, 'db', 'engine.sock'))}`);
  await engine.connect();
  t.teardown(() => engine.close());
  const finds = async (): Promise<number> => Number(((await engine.db('admin').command({ serverStatus: 1 }))['opcounters'] as Record<string, number>)['query'] ?? 0);
  const repo = 'e2e/marks';
  const accept = { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } };
  const digestOf = async (tag: string): Promise<string | null> => {
    const r = await fetch(`${server.url}/v2/${repo}/manifests/${tag}`, accept);
    await r.arrayBuffer();
    return r.status === 200 ? r.headers.get('docker-content-digest') : null;
  };
  for (let round = 0; round < 3; round++) {
    const layer = randomBytes(1000);
    const { digest } = await pushImage(server.url, repo, 'current', layer);
    t.is(await digestOf('current'), digest, `round ${round}`);
    const before = await finds();
    t.is(await digestOf('current'), digest, `round ${round}, again`);
    t.is(await finds(), before, `round ${round}: the repeated pull was answered from what the service kept`);
    const blob = `${server.url}/v2/${repo}/blobs/${sha256(layer)}`;
    t.is((await fetch(blob, { method: 'HEAD' })).status, 200);
    t.is((await fetch(blob, { method: 'DELETE' })).status, 202);
    t.is((await fetch(blob, { method: 'HEAD' })).status, 404, `round ${round}: the deleted blob`);
  }
  t.is((await fetch(`${server.url}/v2/${repo}/manifests/current`, { method: 'DELETE' })).status, 202);
  t.is(await digestOf('current'), null);
  server.kill('SIGTERM');
  t.is((await server.waitExit()).code, 0);
});

test('after kill -9 the data directory is usable again at once', async (t) => {
  const dataDir = await tempDir();
  const first = await spawnServer({ dataDir });
  t.teardown(() => first.kill('SIGKILL'));
  // what was acknowledged before the kill survives it
  const layer = randomBytes(100_000);
  const { manifest } = await pushImage(first.url, 'e2e/killed', 'latest', layer);
  first.kill('SIGKILL');
  t.is((await first.waitExit()).signal, 'SIGKILL');
  const second = await spawnServer({ dataDir });
  t.teardown(() => second.kill('SIGKILL'));
  t.notRegex(second.stdout(), /"msg":"applying migration"/);
  t.is((await fetch(`${second.url}/readyz`)).status, 200);
  await expectImage(t, second.url, 'e2e/killed', 'latest', layer, manifest);
  second.kill('SIGTERM');
  t.is((await second.waitExit()).code, 0);
});

test('SIGTERM mid-upload: new connections are refused, the upload in flight completes, exit 0', async (t) => {
  const dataDir = await tempDir();
  const server = await spawnServer({ dataDir });
  t.teardown(() => server.kill('SIGKILL'));
  const start = await fetch(`${server.url}/v2/e2e/drain/blobs/uploads/`, { method: 'POST' });
  t.is(start.status, 202);
  const location = new URL(start.headers.get('location')!, server.url);
  const blob = randomBytes(2 * 1024 * 1024);
  location.searchParams.set('digest', sha256(blob));

  const agent = new Agent({ keepAlive: false });
  const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(location, { method: 'PUT', agent, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': blob.length } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    // first half now, the rest after SIGTERM
    req.write(blob.subarray(0, blob.length / 2));
    setTimeout(() => {
      server.kill('SIGTERM');
      setTimeout(() => {
        void fetch(`${server.url}/healthz`).then(
          () => reject(new Error('a new connection was accepted during shutdown')),
          () => req.end(blob.subarray(blob.length / 2)),
        );
      }, 300);
    }, 200);
  });
  const res = await reply;
  t.is(res.status, 201, res.body);
  t.deepEqual(await server.waitExit(), { code: 0, signal: null });

  const again = await spawnServer({ dataDir });
  t.teardown(() => again.kill('SIGKILL'));
  const got = await fetch(`${again.url}/v2/e2e/drain/blobs/${sha256(blob)}`);
  t.is(got.status, 200);
  t.true(Buffer.from(await got.arrayBuffer()).equals(blob));
  again.kill('SIGTERM');
  t.is((await again.waitExit()).code, 0);
});

test('a second volreg on a data directory in use is refused with exit code 1', async (t) => {
  if (process.env.MONGODB_URL) {
    // with an external MongoDB the embedded engine's lock is not involved; two processes may share
    const dataDir = await tempDir();
    const a = await spawnServer({ dataDir });
    const b = await spawnServer({ dataDir });
    t.not(a.url, b.url);
    a.kill('SIGTERM');
    b.kill('SIGTERM');
    t.is((await a.waitExit()).code, 0);
    t.is((await b.waitExit()).code, 0);
    return;
  }
  const dataDir = await tempDir();
  const first = await spawnServer({ dataDir });
  t.teardown(() => first.kill('SIGKILL'));
  const second = await run(['serve'], { VOLREG_ADDR: '127.0.0.1:0', VOLREG_DATA_DIR: dataDir });
  t.is(second.code, 1);
  t.regex(second.stderr, /^volreg: cannot start: .*already in use/m);
  t.notRegex(second.stdout, /volreg listening on/);
  // the first one is unharmed
  t.is((await fetch(`${first.url}/readyz`)).status, 200);
  first.kill('SIGTERM');
  t.is((await first.waitExit()).code, 0);
});

test('a port in use is refused with exit code 1 before the data directory is opened', async (t) => {
  const taken = createNetServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as AddressInfo).port;
  const dataDir = await tempDir();
  const run1 = await run(['serve'], { VOLREG_ADDR: `127.0.0.1:${port}`, VOLREG_DATA_DIR: dataDir });
  t.is(run1.code, 1);
  t.regex(run1.stderr, new RegExp(`^volreg: cannot start: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE$`, 'm'));
  t.notRegex(run1.stdout, /volreg listening on/);
  // no metadata store opened or migrated there
  t.deepEqual(await readdir(dataDir), []);
});

test('bad configuration: one line per bad variable on stderr, exit code 2, nothing started', async (t) => {
  const dataDir = await tempDir();
  const res = await run(['serve'], {
    VOLREG_DATA_DIR: dataDir,
    VOLREG_ADDR: 'localhost',
    VOLREG_STORAGE: 'gridfs',
    VOLREG_LOG_LEVEL: 'chatty',
    VOLREG_MANIFEST_MAX_BYTES: 'lots',
    VOLREG_MONGODB_URL: 'postgres://user:pw@db',
  });
  t.is(res.code, 2);
  const lines = res.stderr.trim().split('\n');
  t.deepEqual(
    lines.map((l) => /^volreg: config: (VOLREG_[A-Z_]+): /.exec(l)?.[1]),
    ['VOLREG_ADDR', 'VOLREG_MONGODB_URL', 'VOLREG_STORAGE', 'VOLREG_LOG_LEVEL', 'VOLREG_MANIFEST_MAX_BYTES'],
  );
  t.regex(res.stderr, /VOLREG_STORAGE: the gridfs blob store is not implemented yet; use fs/);
  t.false(res.stderr.includes('pw@db'));
  t.is(res.stdout, '');
});

test('an htpasswd file with non-bcrypt entries is a configuration error (exit 2)', async (t) => {
  const dataDir = await tempDir();
  const file = join(dataDir, 'htpasswd');
  await writeFile(file, 'carol:$apr1$abc$defghijklmnopqrstuvwx.\n');
  const res = await run(['serve'], { VOLREG_ADDR: '127.0.0.1:0', VOLREG_DATA_DIR: dataDir, VOLREG_AUTH_FILE: file });
  t.is(res.code, 2);
  t.regex(res.stderr, /^volreg: config: VOLREG_AUTH_FILE: line 1 \(user "carol"\): only bcrypt entries/m);
});

test('--version, --help and usage errors', async (t) => {
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const elsewhere = await tempDir();
  // the package's own bin/volreg.js (what `npx volreg` runs, through tsx), from another directory
  const version = await run(['--version'], {}, elsewhere, PACKAGE_BIN);
  t.is(version.code, 0);
  t.is(version.stdout.trim(), pkg.version);
  const help = await run(['--help'], {}, elsewhere, PACKAGE_BIN);
  t.is(help.code, 0);
  for (const cmd of ['serve', 'migrate', 'db']) t.regex(help.stdout, new RegExp(`^  ${cmd}\\b`, 'm'));
  const unknown = await run(['frobnicate'], {}, elsewhere, PACKAGE_BIN);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command 'frobnicate'/);
  const badPort = await run(['db', '--dbpath', elsewhere, '--port', 'http'], {}, elsewhere, PACKAGE_BIN);
  t.is(badPort.code, 2);
  t.regex(badPort.stderr, /not a port number/);
});

test('serve against an external MongoDB (volreg db): /readyz turns 503 quickly when it goes away', async (t) => {
  const dbDir = await tempDir();
  const db = spawn(process.execPath, [VOLREG_BIN, 'db', '--dbpath', dbDir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => db.kill('SIGKILL'));
  const dbExit = new Promise<number | null>((resolve) => db.once('exit', (code) => resolve(code)));
  const uri = await new Promise<string>((resolve, reject) => {
    let out = '';
    db.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /^volreg db listening on (mongodb:\/\/\S+)$/m.exec(out);
      if (m) resolve(m[1]!);
    });
    void dbExit.then((code) => reject(new Error(`volreg db exited with ${code}`)));
  });

  const dataDir = await tempDir();
  const server = await spawnServer({ dataDir, env: { VOLREG_MONGODB_URL: `${uri}/?directConnection=true`, VOLREG_MONGODB_DATABASE: 'external_test' } });
  t.teardown(() => server.kill('SIGKILL'));
  // the embedded engine was not started
  t.false((await readdir(dataDir)).includes('db'));
  t.is((await fetch(`${server.url}/readyz`)).status, 200);

  db.kill('SIGTERM');
  t.is(await dbExit, 0);
  const started = Date.now();
  const res = await fetch(`${server.url}/readyz`);
  t.is(res.status, 503);
  t.like(await res.json(), { status: 'unavailable', checks: { mongodb: 'unavailable' } });
  t.true(Date.now() - started < 5000);
  // still alive, and still stops cleanly without its database
  t.is((await fetch(`${server.url}/healthz`)).status, 200);
  server.kill('SIGTERM');
  t.is((await server.waitExit()).code, 0);
});

test('a data directory with a metadata file missing is refused by serve and migrate status, naming the file; put back, it serves all', async (t) => {
  const dataDir = await tempDir();
  const first = await spawnServer({ dataDir, embeddedEngine: true });
  t.teardown(() => first.kill('SIGKILL'));
  const layer = randomBytes(50_000);
  const { manifest } = await pushImage(first.url, 'e2e/files', 'v1', layer);
  first.kill('SIGTERM');
  t.is((await first.waitExit()).code, 0);

  const db = join(dataDir, 'db');
  const journal = (await readdir(db)).find((f) => /^journal-\d+\.log$/.test(f))!;
  const kept = await readFile(join(db, journal));
  await rm(join(db, journal));
  for (const args of [['serve'], ['migrate', 'status']]) {
    const refused = await run(args, { VOLREG_ADDR: '127.0.0.1:0', VOLREG_DATA_DIR: dataDir });
    t.is(refused.code, 1, `${args.join(' ')}: ${refused.stderr}`);
    t.regex(refused.stderr, new RegExp(`is there but not ${journal.replace('.', '\\.')}.*refusing to start`));
    t.notRegex(refused.stdout, /volreg listening on/);
  }
  await writeFile(join(db, journal), kept);

  const again = await spawnServer({ dataDir, embeddedEngine: true });
  t.teardown(() => again.kill('SIGKILL'));
  await expectImage(t, again.url, 'e2e/files', 'v1', layer, manifest);
  again.kill('SIGTERM');
  t.is((await again.waitExit()).code, 0);
});

test('migrate status and gc of a data directory without a database (a mistyped path, a copy whose db/ is missing or empty) fail, naming it, and create nothing', async (t) => {
  const parent = await tempDir();
  const missing = join(parent, 'no-such-dir');
  // a copy whose db/ is there but empty (the copy of db/ failed), beside the blobs copied after it
  const emptyDb = join(parent, 'copy');
  await mkdir(join(emptyDb, 'db'), { recursive: true });
  await mkdir(join(emptyDb, 'blobs', 'sha256'), { recursive: true });
  for (const dataDir of [missing, emptyDb]) {
    const status = await run(['migrate', 'status'], { VOLREG_DATA_DIR: dataDir });
    t.is(status.code, 1, status.stdout);
    t.regex(status.stderr, new RegExp(`no database in ${join(dataDir, 'db')}`));
    t.notRegex(status.stdout, /pending/);
    const gc = await run(['gc'], { VOLREG_DATA_DIR: dataDir });
    t.is(gc.code, 1, gc.stdout);
    t.regex(gc.stderr, /no volreg database in .*nothing to collect/);
    const left = await readdir(join(dataDir, 'db')).catch(() => []);
    t.deepEqual(left, [], `${dataDir}: no database created`);
  }
});

/** TCP ports process `pid` listens on (its socket inodes matched in /proc/net/tcp and tcp6). */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
    if (m) inodes.add(m[1]!);
  }
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of (await readFile(`/proc/${pid}/net/${table}`, 'utf8')).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

test('a data directory too deep for a unix socket: the embedded engine listens in a private directory, never on a TCP port other users could reach', async (t) => {
  if (process.env.MONGODB_URL) return void t.pass('no embedded engine when the suite runs on an external MongoDB');
  const dataDir = join(await tempDir(), 'a-directory-name-long-enough', 'that-the-engine-socket-path', 'passes-the-limit-of-sun-path');
  const server = await spawnServer({ dataDir, embeddedEngine: true, env: { VOLREG_LOG_LEVEL: 'debug' } });
  t.teardown(() => server.kill('SIGKILL'));
  const listening = /"uri":"mongodb:\/\/([^"]+)","dbPath"/.exec(server.stdout());
  t.truthy(listening, 'the engine logs where it listens');
  const socketPath = decodeURIComponent(listening![1]!);
  t.regex(socketPath, /\/volreg-engine-[^/]+\/engine\.sock$/);
  const dir = await stat(dirname(socketPath));
  t.is(dir.mode & 0o777, 0o700, 'only its user may enter the directory of the socket');
  t.is(dir.uid, process.getuid!());
  t.deepEqual(await listeningPorts(server.child.pid!), [Number(new URL(server.url).port)], 'the HTTP port is the only TCP port');
  t.is((await fetch(`${server.url}/readyz`)).status, 200);
  server.kill('SIGTERM');
  t.is((await server.waitExit()).code, 0);
  await t.throwsAsync(stat(dirname(socketPath)), { code: 'ENOENT' }, 'the private directory is removed at shutdown');
});
