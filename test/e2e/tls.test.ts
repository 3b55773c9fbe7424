import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { REPO_ROOT, spawnServer, VOLREG_BIN, type SpawnedServer } from '../helpers/server.ts';

/**
 * HTTPS with VOLREG_TLS_CERT / VOLREG_TLS_KEY: the real `volreg serve` with a certificate made
 * by openssl for 127.0.0.1, reached by curl, by the volreg host agent and by skopeo, each
 * verifying the certificate against it (nothing runs with verification off).
 */

const run = promisify(execFile);
let dir = '';
let cert = '';
let key = '';

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'volreg-tls-'));
  cert = join(dir, 'cert.pem');
  key = join(dir, 'key.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
  ]);
});

test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function withTlsServer(fn: (srv: SpawnedServer) => Promise<void>, env: Record<string, string> = {}): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-tls-data-'));
  const srv = await spawnServer({ dataDir, env: { VOLREG_TLS_CERT: cert, VOLREG_TLS_KEY: key, ...env } });
  try {
    await fn(srv);
  } finally {
    srv.kill('SIGTERM');
    await srv.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', ...args], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('VOLREG_TLS_CERT and VOLREG_TLS_KEY: HTTPS verified by curl, the volreg agent and skopeo; nothing in clear text', async (t) => {
  await withTlsServer(async (srv) => {
    t.regex(srv.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const port = new URL(srv.url).port;

    const base = await curl(['--cacert', cert, '-o', '/dev/null', '-w', '%{http_code}', `${srv.url}/v2/`]);
    t.is(base.stdout, '200', base.stderr);
    // an untrusted certificate is refused by the client, and the port speaks no plain HTTP
    t.is((await curl(['-o', '/dev/null', `${srv.url}/v2/`])).code, 60);
    // plain HTTP to the HTTPS port is told so, in clear text, and given nothing else
    const plain = await curl(['-w', '\n%{http_code}', '--max-time', '5', `http://127.0.0.1:${port}/v2/`]);
    t.is(plain.stdout.slice(plain.stdout.lastIndexOf('\n') + 1), '400', plain.stderr);
    const refusal = JSON.parse(plain.stdout.slice(0, plain.stdout.lastIndexOf('\n'))) as { errors: Array<{ code: string; message: string }> };
    t.is(refusal.errors[0]?.code, 'BAD_REQUEST');
    t.regex(refusal.errors[0]?.message ?? '', /speaks HTTPS.*https:\/\//);
    const plainAgent = await run(process.execPath, [VOLREG_BIN, 'ls'], { env: { ...process.env, VOLREG_URL: `http://127.0.0.1:${port}` } }).then(
      () => 'accepted',
      (err: { stderr?: string }) => String(err.stderr),
    );
    t.regex(plainAgent, /speaks HTTPS/, 'the host agent with an http:// URL is told why');

    // a snapshot pushed with curl over HTTPS
    const tree = join(dir, 'tree');
    await mkdir(tree, { recursive: true });
    await writeFile(join(tree, 'secret.txt'), 'only over TLS\n'.repeat(100));
    const tarball = join(dir, 'tree.tar.gz');
    await run('tar', ['-C', tree, '-czf', tarball, '.']);
    const put = await curl(['--cacert', cert, '-T', tarball, '-w', '\n%{http_code}', `${srv.url}/api/v1/volumes/tls/vol/tags/v1`]);
    t.is(put.stdout.slice(put.stdout.lastIndexOf('\n') + 1), '201', put.stdout);
    const layer = (JSON.parse(put.stdout.slice(0, put.stdout.lastIndexOf('\n'))) as { layer: { digest: string } }).layer.digest;

    // the host agent, trusting the certificate the standard Node way
    const agentEnv = { ...process.env, VOLREG_URL: srv.url, NODE_EXTRA_CA_CERTS: cert };
    const out = join(dir, 'restored');
    await run(process.execPath, [VOLREG_BIN, 'pull', 'tls/vol:v1', out], { env: agentEnv });
    t.is(await readFile(join(out, 'secret.txt'), 'utf8'), 'only over TLS\n'.repeat(100));
    await run(process.execPath, [VOLREG_BIN, 'push', tree, 'tls/vol:v2'], { env: agentEnv });
    const untrusted = await run(process.execPath, [VOLREG_BIN, 'ls', 'tls/vol'], { env: { ...process.env, VOLREG_URL: srv.url } }).then(
      () => 'accepted',
      (err: { stderr?: string }) => String(err.stderr),
    );
    t.regex(untrusted, /self[- ]signed|certificate/i, 'without the CA the agent refuses the server');

    // skopeo, with the CA in a cert dir (TLS verification on)
    const certDir = join(dir, 'certs.d');
    await mkdir(certDir, { recursive: true });
    await copyFile(cert, join(certDir, 'ca.crt'));
    const home = await mkdtemp(join(dir, 'home-'));
    const dest = join(dir, 'skopeo-out');
    await run('skopeo', ['copy', '--src-cert-dir', certDir, `docker://127.0.0.1:${port}/tls/vol:v1`, `dir:${dest}`], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_RUNTIME_DIR: home },
      timeout: 120_000,
    });
    const hex = layer.slice('sha256:'.length);
    t.true((await readdir(dest)).includes(hex), 'skopeo fetched the layer');
    const fetched = await run('sha256sum', [join(dest, hex)]);
    t.is(fetched.stdout.split(' ')[0], hex, 'byte-identical');
  });
});

test('a connection to the HTTPS port that sends nothing is closed after VOLREG_CLIENT_IDLE_TIMEOUT', async (t) => {
  await withTlsServer(
    async (srv) => {
      const port = new URL(srv.url).port;
      // seconds until the server closes a connection that sent nothing (cat ends at its EOF)
      const waited = await run('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}; s=$SECONDS; timeout 30 cat <&3 >/dev/null; echo $((SECONDS - s)) $?`]);
      const [seconds, status] = waited.stdout.trim().split(' ').map(Number);
      t.is(status, 0, 'closed by the server, not by the 30 s bound');
      t.true(seconds! <= 10, `closed after ${seconds} s`);
    },
    { VOLREG_CLIENT_IDLE_TIMEOUT: '1' },
  );
});

/** The `node -e` script of a health check: the Dockerfile's HEALTHCHECK, or the compose file's. */
async function probeScript(file: string, pattern: RegExp): Promise<string> {
  const m = pattern.exec(await readFile(join(REPO_ROOT, file), 'utf8'));
  if (!m) throw new Error(`no node -e health check in ${file}`);
  return m[1]!;
}

test("the image's and the compose file's health checks find the server on VOLREG_ADDR's port, over HTTP and over HTTPS", async (t) => {
  const scripts = {
    Dockerfile: await probeScript('Dockerfile', /^HEALTHCHECK[^\n]*\n\s*CMD \["node", "-e", "(.*)"\]$/m),
    compose: await probeScript('docker-compose.yml', /^\s*test: \["CMD", "node", "-e", "(.*)"\]$/m),
  };
  const probe = (script: string, env: Record<string, string>): Promise<number> =>
    run(process.execPath, ['-e', script], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 10_000 }).then(
      () => 0,
      (err: { code?: number }) => err.code ?? 1,
    );
  await withTlsServer(async (srv) => {
    const addr = `0.0.0.0:${new URL(srv.url).port}`;
    for (const [name, script] of Object.entries(scripts)) {
      t.is(await probe(script, { VOLREG_ADDR: addr, VOLREG_TLS_CERT: cert }), 0, `${name} over HTTPS`);
      t.is(await probe(script, { VOLREG_ADDR: addr }), 1, `${name}: plain HTTP gets no answer from an HTTPS port`);
    }
  });
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-tls-plain-'));
  const plain = await spawnServer({ dataDir });
  try {
    const addr = `0.0.0.0:${new URL(plain.url).port}`;
    for (const [name, script] of Object.entries(scripts)) t.is(await probe(script, { VOLREG_ADDR: addr }), 0, `${name} over HTTP`);
  } finally {
    plain.kill('SIGTERM');
    await plain.waitExit();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('TLS configuration errors: one of the two variables, or a key that is not one', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-tls-bad-'));
  try {
    const onlyCert = await run(process.execPath, [VOLREG_BIN, 'serve'], {
      env: { ...process.env, VOLREG_DATA_DIR: dataDir, VOLREG_ADDR: '127.0.0.1:0', VOLREG_TLS_CERT: cert },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code, stderr: String(err.stderr) }),
    );
    t.is(onlyCert.code, 2);
    t.regex(onlyCert.stderr, /VOLREG_TLS_CERT and VOLREG_TLS_KEY: set both/);

    const notAKey = join(dir, 'not-a-key.pem');
    await writeFile(notAKey, '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n');
    const badKey = await run(process.execPath, [VOLREG_BIN, 'serve'], {
      env: { ...process.env, VOLREG_DATA_DIR: dataDir, VOLREG_ADDR: '127.0.0.1:0', VOLREG_TLS_CERT: cert, VOLREG_TLS_KEY: notAKey },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code, stderr: String(err.stderr) }),
    );
    // configuration (exit 2), found before the database is opened
    t.is(badKey.code, 2);
    t.regex(badKey.stderr, /^volreg: config: VOLREG_TLS_CERT and VOLREG_TLS_KEY: cannot serve HTTPS with them: /m);
    t.notRegex(badKey.stderr, /migration/);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
