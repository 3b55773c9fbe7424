import test from 'ava';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { runVolreg } from '../helpers/cli-run.ts';
import { sameBytes } from '../helpers/same-bytes.ts';
import { REPO_ROOT, spawnServer, type SpawnedServer } from '../helpers/server.ts';

/**
 * volreg behind nginx (Debian's nginx-light) with the configuration the README gives, read from
 * the README itself: TLS at nginx, real clients (curl, skopeo, the volreg CLI) only ever talking
 * to nginx, authentication on, X-Forwarded-For believed from nginx alone. A second nginx server
 * keeps nginx's default body limit (1 MiB), to see what volreg makes of a request nginx cuts off.
 */

const ENV_PATH = `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let dir = '';
let cert = '';
let volreg: SpawnedServer;
let nginx: ChildProcess;
let proxy = ''; // https://127.0.0.1:PORT, the README's configuration
let limited = ''; // the same, with nginx's default client_max_body_size
const AUTH = 'alice:wonder land';

/** The README's nginx configuration (the first ```nginx block under "Behind a reverse proxy"). */
async function readmeNginxConfig(): Promise<string> {
  const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Behind a reverse proxy'));
  const m = /```nginx\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('the README has no nginx configuration under "Behind a reverse proxy"');
  return m[1]!;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => (c.destroy(), resolve(true)));
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nginx did not listen on ${port}`);
}

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'volreg-nginx-'));
  cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  const htpasswd = join(dir, 'htpasswd');
  execFileSync('htpasswd', ['-B', '-C', '5', '-b', '-c', htpasswd, 'alice', 'wonder land'], { stdio: 'ignore' });
  const dataDir = join(dir, 'data');
  await mkdir(dataDir);
  volreg = await spawnServer({ dataDir, env: { VOLREG_AUTH_FILE: htpasswd, VOLREG_TRUSTED_PROXIES: '127.0.0.1' } });
  const upstream = new URL(volreg.url).host;

  const [port, limitedPort] = [await freePort(), await freePort()];
  const readme = await readmeNginxConfig();
  const site = (listen: number): string =>
    readme
      .replace('server 127.0.0.1:5000;', `server ${upstream};`)
      .replace('listen 443 ssl;', `listen 127.0.0.1:${listen} ssl;`)
      .replace('/etc/ssl/volreg/cert.pem', cert)
      .replace('/etc/ssl/volreg/key.pem', key);
  // the second server shares the first's upstream and keeps nginx's default body limit
  const limitedSite = site(limitedPort)
    .replace(/upstream volreg \{[^}]*\}/, '')
    .replace('client_max_body_size 0;', '');
  const temp = (name: string): string => `${name}_temp_path ${join(dir, `nginx-${name}`)};`;
  await writeFile(
    join(dir, 'nginx.conf'),
    [
      // as root, nginx's workers would run as nobody, who can not enter this test's directory
      process.getuid?.() === 0 ? 'user root;' : '',
      'daemon off;',
      'worker_processes 1;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'nginx-error.log')} info;`,
      'events { worker_connections 128; }',
      'http {',
      `access_log ${join(dir, 'nginx-access.log')};`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp),
      site(port),
      limitedSite,
      '}',
    ].join('\n'),
  );
  nginx = spawn('nginx', ['-p', dir, '-e', join(dir, 'nginx-error.log'), '-c', join(dir, 'nginx.conf')], { env: { PATH: ENV_PATH }, stdio: 'ignore' });
  nginx.on('error', () => undefined);
  await Promise.all([waitForPort(port), waitForPort(limitedPort)]);
  proxy = `https://127.0.0.1:${port}`;
  limited = `https://127.0.0.1:${limitedPort}`;
});

test.after.always(async () => {
  if (nginx?.exitCode === null) {
    nginx.kill('SIGTERM');
    await new Promise((r) => nginx.once('exit', r));
  }
  if (volreg) {
    volreg.kill('SIGTERM');
    await volreg.waitExit();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function run(cmd: string, args: string[], input?: Buffer): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, env: { PATH: ENV_PATH, HOME: dir, XDG_RUNTIME_DIR: dir }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr: stderr.toString('utf8') });
    });
    child.stdin!.end(input);
  });
}

const curl = (args: string[], input?: Buffer): Promise<Run> => run('curl', ['-sS', '--cacert', cert, '-u', AUTH, ...args], input);

/** A tar of one random file of `size` bytes. */
function tarOf(size: number): Buffer {
  const src = execFileSync('mktemp', ['-d', join(dir, 'src-XXXXXX')]).toString().trim();
  execFileSync('sh', ['-c', `head -c ${size} /dev/urandom > "$1/data.bin"`, 'sh', src]);
  return execFileSync('tar', ['-C', src, '-cf', '-', '.'], { maxBuffer: 64 * 1024 * 1024 });
}

async function requestLine(path: string, method: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 50; i++) {
    const line = volreg
      .stdout()
      .split('\n')
      .filter((l) => l.includes('"msg":"request"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.path === path && l.method === method);
    if (line) return line;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`volreg logged no ${method} ${path}`);
}

test('curl through nginx: an upload of unknown length, a download checked by sha256sum -c, a resumed one, a conditional one', async (t) => {
  const tar = tarOf(5 * 1024 * 1024);
  const url = `${proxy}/api/v1/volumes/px/curl/tags/v1`;
  // -T - sends it chunked: no length known in advance
  const put = await curl(['-f', '-T', '-', url], tar);
  t.is(put.code, 0, put.stderr);
  const file = join(dir, 'px-curl-v1.tar');
  const get = await curl(['-f', '-o', file, '-D', '-', `${url}/content`]);
  t.is(get.code, 0, get.stderr);
  sameBytes(t, await readFile(file), tar);
  const recipe = await curl(['-f', `${url}/content.sha256`]);
  const check = await run('sh', ['-c', `cd "$1" && sed 's/  .*/  px-curl-v1.tar/' | sha256sum -c -`, 'sh', dir], recipe.stdout);
  t.is(check.code, 0, check.stderr);
  // half of it, then curl -C - fetches the rest
  const part = join(dir, 'part.tar');
  await writeFile(part, tar.subarray(0, tar.length >> 1));
  const resumed = await curl(['-f', '-C', '-', '-o', part, '-w', '%{http_code}', `${url}/content`]);
  t.is(resumed.stdout.toString(), '206');
  sameBytes(t, await readFile(part), tar);
  const etag = /^etag: (.+)\r$/im.exec(get.stdout.toString())![1]!;
  const unchanged = await curl(['-o', '/dev/null', '-w', '%{http_code}', '-H', `If-None-Match: ${etag}`, `${url}/content`]);
  t.is(unchanged.stdout.toString(), '304');
});

test('/v2 chunked upload through nginx: PATCH with and without Content-Range, and Locations that hold no host', async (t) => {
  const blob = randomBytes(3 * 1024 * 1024);
  const headers = (r: Run): string => r.stdout.toString();
  const location = (r: Run): string => /^location: (.+)\r$/im.exec(headers(r))![1]!;
  const post = await curl(['-f', '-D', '-', '-o', '/dev/null', '-X', 'POST', `${proxy}/v2/px/chunks/blobs/uploads/`]);
  t.is(post.code, 0, post.stderr);
  const session = location(post);
  // a path, resolved against the public URL the client used: nginx's scheme, host and port
  t.regex(session, /^\/v2\/px\/chunks\/blobs\/uploads\/[0-9a-f-]+$/);
  const first = join(dir, 'first');
  const rest = join(dir, 'rest');
  await writeFile(first, blob.subarray(0, 2 * 1024 * 1024));
  await writeFile(rest, blob.subarray(2 * 1024 * 1024));
  const ranged = await curl(['-f', '-D', '-', '-o', '/dev/null', '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', `Content-Range: 0-${2 * 1024 * 1024 - 1}`, '--data-binary', `@${first}`, `${proxy}${session}`]);
  t.is(ranged.code, 0, ranged.stderr);
  t.regex(headers(ranged), new RegExp(`^range: 0-${2 * 1024 * 1024 - 1}\r$`, 'im'));
  // no Content-Range and no length: chunked through nginx
  const streamed = await curl(['-f', '-D', '-', '-o', '/dev/null', '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-T', '-', `${proxy}${location(ranged)}`], await readFile(rest));
  t.is(streamed.code, 0, streamed.stderr);
  t.regex(headers(streamed), new RegExp(`^range: 0-${blob.length - 1}\r$`, 'im'));
  const digest = `sha256:${sha256(blob)}`;
  const done = await curl(['-f', '-D', '-', '-o', '/dev/null', '-X', 'PUT', `${proxy}${location(streamed)}?digest=${digest}`]);
  t.is(done.code, 0, done.stderr);
  t.is(location(done), `/v2/px/chunks/blobs/${digest}`);
  const back = await curl(['-f', `${proxy}${location(done)}`]);
  sameBytes(t, back.stdout, blob);
});

test('skopeo copies an image to volreg through nginx and back byte for byte (a cross-repository mount included); inspect, list-tags, delete', async (t) => {
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const tar = tarOf(3 * 1024 * 1024);
  const layer = gzipSync(tar, { level: 1 });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(tar)}`] }, config: {} }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha256(layer)}`, size: layer.length }],
    }),
  );
  for (const b of [layer, config, manifest]) await writeFile(join(blobs, sha256(b)), b);
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha256(manifest)}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }),
  );
  const certDir = join(dir, 'certs.d');
  await mkdir(certDir, { recursive: true });
  await copyFile(cert, join(certDir, 'ca.crt'));
  const host = new URL(proxy).host;
  const skopeo = (args: string[]): Promise<Run> => run('skopeo', ['--insecure-policy', ...args]);
  const creds = (side: 'src' | 'dest'): string[] => [`--${side}-cert-dir`, certDir, `--${side}-creds`, AUTH];

  const push = await skopeo(['copy', ...creds('dest'), `oci:${layout}:v1`, `docker://${host}/px/image:v1`]);
  t.is(push.code, 0, push.stderr);
  const out = join(dir, 'out');
  const pull = await skopeo(['copy', ...creds('src'), `docker://${host}/px/image:v1`, `dir:${out}`]);
  t.is(pull.code, 0, pull.stderr);
  sameBytes(t, await readFile(join(out, sha256(layer))), layer);
  t.deepEqual(await readFile(join(out, 'manifest.json')), manifest);
  // from the registry to another repository of it: the layer is mounted, not sent again
  const mount = await skopeo(['copy', '--debug', ...creds('src'), ...creds('dest'), `docker://${host}/px/image:v1`, `docker://${host}/px/mounted:v1`]);
  t.is(mount.code, 0, mount.stderr);
  t.regex(mount.stderr, /mount OK/);
  const raw = await skopeo(['inspect', '--raw', '--cert-dir', certDir, '--creds', AUTH, `docker://${host}/px/mounted:v1`]);
  t.deepEqual(raw.stdout, manifest);
  const tags = await skopeo(['list-tags', '--cert-dir', certDir, '--creds', AUTH, `docker://${host}/px/image`]);
  t.deepEqual((JSON.parse(tags.stdout.toString()) as { Tags: string[] }).Tags, ['v1']);
  const del = await skopeo(['delete', '--cert-dir', certDir, '--creds', AUTH, `docker://${host}/px/mounted:v1`]);
  t.is(del.code, 0, del.stderr);
  const gone = await skopeo(['inspect', '--raw', '--cert-dir', certDir, '--creds', AUTH, `docker://${host}/px/mounted:v1`]);
  t.not(gone.code, 0);
  t.regex(gone.stderr, /manifest unknown/);
});

test('the volreg CLI through nginx: the Basic challenge comes through, and push, pull, ls, verify work with credentials', async (t) => {
  const challenge = await run('curl', ['-sS', '--cacert', cert, '-D', '-', '-o', '/dev/null', `${proxy}/v2/`]);
  t.regex(challenge.stdout.toString(), /^HTTP\/1\.1 401 /);
  t.regex(challenge.stdout.toString(), /^www-authenticate: Basic realm="volreg"\r$/im);
  const src = join(dir, 'cli-src');
  await mkdir(src);
  const content = randomBytes(2 * 1024 * 1024);
  await writeFile(join(src, 'file.bin'), content);
  const env = { NODE_EXTRA_CA_CERTS: cert };
  const anonymous = await runVolreg(['push', '-q', src, 'px/cli:v1'], { url: proxy, cwd: dir, env });
  t.is(anonymous.code, 1);
  t.regex(anonymous.stderr, /authentication required \(UNAUTHORIZED, HTTP 401\)/);
  const withCreds = { ...env, VOLREG_USER: 'alice', VOLREG_PASSWORD: 'wonder land' };
  const push = await runVolreg(['push', '-q', src, 'px/cli:v1'], { url: proxy, cwd: dir, env: withCreds });
  t.is(push.code, 0, push.stderr);
  const target = join(dir, 'cli-target');
  const pull = await runVolreg(['pull', '-q', 'px/cli:v1', target], { url: proxy, cwd: dir, env: withCreds });
  t.is(pull.code, 0, pull.stderr);
  sameBytes(t, await readFile(join(target, 'file.bin')), content);
  const ls = await runVolreg(['ls', 'px/cli'], { url: proxy, cwd: dir, env: withCreds });
  t.regex(ls.stdout, /^v1 /m);
  const verify = await runVolreg(['verify', 'px/cli:v1'], { url: proxy, cwd: dir, env: withCreds });
  t.is(verify.code, 0, verify.stderr);
  t.regex(verify.stdout, /^px\/cli:v1: ok /);
});

test('an upload nginx cuts off with its 413 leaves nothing behind, the CLI says what answered, and the same push through a proxy that allows it works', async (t) => {
  const src = join(dir, 'big-src');
  await mkdir(src);
  await writeFile(join(src, 'file.bin'), randomBytes(3 * 1024 * 1024));
  const env = { NODE_EXTRA_CA_CERTS: cert, VOLREG_USER: 'alice', VOLREG_PASSWORD: 'wonder land' };
  const cut = await runVolreg(['push', '-q', '--compression', 'none', src, 'px/cut:v1'], { url: limited, cwd: dir, env });
  t.is(cut.code, 1);
  t.regex(cut.stderr, /^volreg push: HTTP 413 .*an HTML page \("413 Request Entity Too Large"\) rather than volreg's error reply/);
  // volreg saw the connection go mid-body: logged as such, nothing stored, nothing left over
  t.is((await requestLine('/api/v1/volumes/px/cut/tags/v1', 'PUT')).status, 499);
  const missing = await curl(['-o', '/dev/null', '-w', '%{http_code}', `${proxy}/api/v1/volumes/px/cut/tags/v1`]);
  t.is(missing.stdout.toString(), '404');
  // the session of the cut upload is removed as its request ends, which may come after the log line
  let left: string[] = [];
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
    left = await readdir(join(dir, 'data', 'uploads')).catch(() => []);
    if (left.length === 0) break;
  }
  t.deepEqual(left, []);
  const again = await runVolreg(['push', '-q', '--compression', 'none', src, 'px/cut:v1'], { url: proxy, cwd: dir, env });
  t.is(again.code, 0, again.stderr);
});

test("volreg's request log names the client nginx forwards, and nginx as the proxy", async (t) => {
  const res = await curl(['-f', '--interface', '127.0.0.2', '-o', '/dev/null', `${proxy}/v2/_catalog`]);
  t.is(res.code, 0, res.stderr);
  const line = await requestLine('/v2/_catalog', 'GET');
  t.is(line.client, '127.0.0.2');
  t.is(line.proxy, '127.0.0.1');
});
