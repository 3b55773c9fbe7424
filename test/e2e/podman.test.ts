import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ACCEPT_ALL, request } from '../helpers/oci-client.ts';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The real `podman` (Debian's) against volreg, with images podman makes itself: pushed as OCI
 * with gzip and with zstd layers and as Docker schema 2, then pulled into empty storage with
 * every file byte-identical; a manifest list podman assembles and pushes with `--all`, served by
 * tag, each platform pulled by the client that asks for it; search over the catalog; pull by
 * digest. Each test has storage of its own (vfs driver, no daemon, no registries.conf).
 */

const dirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `volreg-podman-${prefix}-`));
  dirs.push(d);
  return d;
}

let server: TestServer;
let host: string;
test.before(async () => {
  server = await startTestServer({ label: 'e2e_podman' });
  host = new URL(server.url).host;
});
test.after.always(async () => {
  await server?.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

type Podman = (args: string[]) => Promise<string>;

/** podman on storage of its own under a new directory */
async function podmanWithStorage(t: ExecutionContext): Promise<Podman> {
  assertRoot(t, 'podman mounts its image storage (vfs) without user namespaces');
  const home = await tempDir('home');
  const global = ['--root', join(home, 'storage'), '--runroot', join(home, 'run'), '--storage-driver', 'vfs', '--events-backend', 'none', '--cgroup-manager', 'cgroupfs'];
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_CONFIG_HOME: join(home, 'config'), XDG_RUNTIME_DIR: join(home, 'run') };
  return (args) =>
    new Promise((resolve, reject) => {
      execFile('podman', [...global, ...args], { env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`podman ${args.join(' ')} failed: ${stderr || err.message}`));
        else resolve(stdout.trim());
      });
    });
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function tar(dir: string, out: string): Promise<void> {
  return new Promise((resolve, reject) => execFile('tar', ['-C', dir, '-cf', out, '.'], (err) => (err ? reject(err) : resolve())));
}

/** a root file system: a large random file, nested and unicode names, an executable, a symlink */
async function rootfs(): Promise<{ dir: string; tarFile: string }> {
  const base = await tempDir('rootfs');
  const dir = join(base, 'fs');
  await mkdir(join(dir, 'etc', 'app', 'conf.d'), { recursive: true });
  await writeFile(join(dir, 'data.bin'), randomBytes(1_500_000));
  await writeFile(join(dir, 'etc', 'app', 'conf.d', 'ünïcödé.conf'), `id=${randomBytes(8).toString('hex')}\n`);
  await writeFile(join(dir, 'run.sh'), '#!/bin/sh\necho ok\n');
  await chmod(join(dir, 'run.sh'), 0o755);
  await symlink('etc/app', join(dir, 'app'));
  const tarFile = join(base, 'rootfs.tar');
  await tar(dir, tarFile);
  return { dir, tarFile };
}

/** the pulled image's files are the ones imported: bytes, the executable's mode, the symlink */
async function assertSameFiles(t: ExecutionContext, podman: Podman, ref: string, original: string): Promise<void> {
  const mounted = await podman(['image', 'mount', ref]);
  try {
    for (const file of ['data.bin', 'etc/app/conf.d/ünïcödé.conf', 'run.sh']) {
      t.true((await readFile(join(mounted, file))).equals(await readFile(join(original, file))), `${file} byte-identical`);
    }
    t.is((await lstat(join(mounted, 'run.sh'))).mode & 0o777, 0o755);
    t.is(await readlink(join(mounted, 'app')), 'etc/app');
  } finally {
    await podman(['image', 'unmount', ref]);
  }
}

interface Pushed {
  digest: string;
  mediaType: string;
  manifest: { config: { digest: string }; layers: Array<{ mediaType: string; digest: string }> };
}

/** what volreg serves for a tag: the digest header matches the bytes, and every blob matches its digest */
async function served(t: ExecutionContext, repo: string, tag: string, accept: string | string[] = ACCEPT_ALL): Promise<Pushed> {
  const r = await request(server.url, `/v2/${repo}/manifests/${tag}`, { headers: { Accept: Array.isArray(accept) ? accept.join(', ') : accept } });
  t.is(r.status, 200, `${repo}:${tag}`);
  const digest = String(r.headers['docker-content-digest']);
  t.is(sha256(r.body), digest);
  const manifest = JSON.parse(r.body.toString()) as Pushed['manifest'];
  for (const d of [manifest.config?.digest, ...(manifest.layers ?? []).map((l) => l.digest)].filter(Boolean)) {
    const blob = await request(server.url, `/v2/${repo}/blobs/${d}`);
    t.is(blob.status, 200);
    t.is(sha256(blob.body), d, `blob ${d} hashes to its digest`);
  }
  return { digest, mediaType: String(r.headers['content-type']), manifest };
}

const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const IMAGE_ONLY = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];

// Each format pushes an image of its own: podman remembers which compressed blob it sent for a
// layer and reuses it whatever compression a later push asks for.
const FORMATS = [
  { tag: 'oci-gzip', args: ['--format', 'oci'], mediaType: 'application/vnd.oci.image.manifest.v1+json', layer: 'application/vnd.oci.image.layer.v1.tar+gzip' },
  { tag: 'oci-zstd', args: ['--format', 'oci', '--compression-format', 'zstd'], mediaType: 'application/vnd.oci.image.manifest.v1+json', layer: 'application/vnd.oci.image.layer.v1.tar+zstd' },
  { tag: 'v2s2', args: ['--format', 'v2s2'], mediaType: 'application/vnd.docker.distribution.manifest.v2+json', layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip' },
];

test('podman push as OCI (gzip, zstd) and Docker schema 2, pull into empty storage: files byte-identical', async (t) => {
  const maker = await podmanWithStorage(t);
  const remote = `${host}/e2e/podman`;
  const pushed = [];
  for (const format of FORMATS) {
    const { dir, tarFile } = await rootfs();
    const local = `localhost/e2e/imported:${format.tag}`;
    await maker(['import', '--change', `LABEL volreg.test=${format.tag}`, tarFile, local]);
    await maker(['push', '--tls-verify=false', ...format.args, local, `docker://${remote}:${format.tag}`]);
    const got = await served(t, 'e2e/podman', format.tag);
    t.is(got.mediaType, format.mediaType);
    t.is(got.manifest.layers[0]?.mediaType, format.layer);
    pushed.push({ ...format, dir, digest: got.digest });
  }
  const tags = await request(server.url, '/v2/e2e/podman/tags/list');
  t.deepEqual((JSON.parse(tags.body.toString()) as { tags: string[] }).tags, ['oci-gzip', 'oci-zstd', 'v2s2']);

  for (const { tag, dir, digest } of pushed) {
    const puller = await podmanWithStorage(t);
    await puller(['pull', '--tls-verify=false', `${remote}:${tag}`]);
    t.is(await puller(['image', 'inspect', '--format', '{{.Digest}} {{index .Labels "volreg.test"}}', `${remote}:${tag}`]), `${digest} ${tag}`);
    await assertSameFiles(t, puller, `${remote}:${tag}`, dir);
  }
});

test('podman manifest push --all: the list is served by tag, each platform pulled by the client that asks for it; search; pull by digest', async (t) => {
  const { dir, tarFile } = await rootfs();
  const maker = await podmanWithStorage(t);
  const remote = `${host}/e2e/multi`;
  for (const arch of ['amd64', 'arm64']) {
    await maker(['import', '--os', 'linux', '--arch', arch, '--change', `LABEL arch=${arch}`, tarFile, `localhost/e2e/multi:${arch}`]);
    await maker(['push', '--tls-verify=false', `localhost/e2e/multi:${arch}`, `docker://${remote}:${arch}`]);
  }
  await maker(['manifest', 'create', 'localhost/e2e/multi:list']);
  for (const arch of ['amd64', 'arm64']) await maker(['manifest', 'add', '--tls-verify=false', 'localhost/e2e/multi:list', `docker://${remote}:${arch}`]);
  await maker(['manifest', 'push', '--tls-verify=false', '--all', 'localhost/e2e/multi:list', `docker://${remote}:latest`]);

  const amd64 = await served(t, 'e2e/multi', 'amd64');
  const arm64 = await served(t, 'e2e/multi', 'arm64');
  const listReply = await request(server.url, '/v2/e2e/multi/manifests/latest', { headers: { Accept: [DOCKER_LIST, OCI_INDEX, ...IMAGE_ONLY].join(', ') } });
  t.is(listReply.status, 200);
  t.true([DOCKER_LIST, OCI_INDEX].includes(String(listReply.headers['content-type'])));
  t.is(sha256(listReply.body), String(listReply.headers['docker-content-digest']));
  const list = JSON.parse(listReply.body.toString()) as { manifests: Array<{ digest: string; platform: { architecture: string } }> };
  t.deepEqual(
    list.manifests.map((m) => [m.platform.architecture, m.digest]),
    [
      ['amd64', amd64.digest],
      ['arm64', arm64.digest],
    ],
  );
  // a client that takes no lists gets the linux/amd64 entry
  t.is((await served(t, 'e2e/multi', 'latest', IMAGE_ONLY)).digest, amd64.digest);

  const puller = await podmanWithStorage(t);
  await puller(['pull', '--tls-verify=false', '--arch', 'arm64', `${remote}:latest`]);
  t.is(await puller(['image', 'inspect', '--format', '{{.Architecture}} {{index .Labels "arch"}}', `${remote}:latest`]), 'arm64 arm64');
  await assertSameFiles(t, puller, `${remote}:latest`, dir);

  await puller(['pull', '--tls-verify=false', `${remote}@${amd64.digest}`]);
  t.is(await puller(['image', 'inspect', '--format', '{{.Architecture}} {{.Digest}}', `${remote}@${amd64.digest}`]), `amd64 ${amd64.digest}`);

  const found = (await puller(['search', '--tls-verify=false', '--format', '{{.Name}}', `${host}/e2e/mul`])).split('\n');
  t.deepEqual(found, [remote]);
});

/** Blob GETs answered so far, by status, and the bytes of blob replies sent (the server's /metrics). */
async function blobCounters(): Promise<{ whole: number; partial: number; bytes: number }> {
  const text = (await request(server.url, '/metrics')).body.toString();
  const count = (re: RegExp): number => Number(re.exec(text)?.[1] ?? 0);
  return {
    whole: count(/^volreg_http_requests_total\{route="blob",method="GET",status="200"\} (\d+)$/m),
    partial: count(/^volreg_http_requests_total\{route="blob",method="GET",status="206"\} (\d+)$/m),
    bytes: count(/^volreg_http_response_body_bytes_total\{route="blob"\} (\d+)$/m),
  };
}

// serial: the server's counters must see this test's pulls alone (ava runs serial tests first)
test.serial('a zstd:chunked image pulled after one it shares files with: podman asks for several ranges at once and fetches only the new files', async (t) => {
  const maker = await podmanWithStorage(t);
  const ctx = await tempDir('chunked');
  // one layer each; b's new files lie between the shared ones, so what it lacks is not one range
  const shared = { b_shared: randomBytes(3_000_000), d_shared: randomBytes(2_000_000) };
  const added = { a_new: randomBytes(700_000), c_new: randomBytes(800_000) };
  const contexts = { a: shared, b: { ...shared, ...added } };
  for (const [tag, files] of Object.entries(contexts)) {
    const dir = join(ctx, tag);
    await mkdir(dir);
    for (const [name, bytes] of Object.entries(files)) await writeFile(join(dir, name), bytes);
    await writeFile(join(ctx, `${tag}.containerfile`), 'FROM scratch\nCOPY . /\n');
    await maker(['build', '-q', '-f', join(ctx, `${tag}.containerfile`), '-t', `localhost/e2e/chunked:${tag}`, dir]);
    await maker(['push', '-q', '--tls-verify=false', '--compression-format', 'zstd:chunked', `localhost/e2e/chunked:${tag}`, `docker://${host}/e2e/chunked:${tag}`]);
  }
  const files = contexts.b;
  const addedBytes = added.a_new.length + added.c_new.length;

  // overlay storage that reuses files it already holds (partial pulls)
  const home = await tempDir('overlay');
  const conf = join(home, 'storage.conf');
  await writeFile(
    conf,
    `[storage]\ndriver = "overlay"\nrunroot = "${join(home, 'run')}"\ngraphroot = "${join(home, 'root')}"\n` +
      '[storage.options]\npull_options = {enable_partial_images = "true", use_hard_links = "false", ostree_repos = ""}\n',
  );
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_RUNTIME_DIR: join(home, 'run'), CONTAINERS_STORAGE_CONF: conf };
  const overlay = (args: string[]): Promise<string> =>
    new Promise((resolve, reject) =>
      execFile('podman', ['--events-backend', 'none', '--cgroup-manager', 'cgroupfs', ...args], { env, timeout: 120_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`podman ${args.join(' ')} failed: ${stderr || err.message}`)) : resolve(stdout.trim()),
      ),
    );
  t.teardown(() => overlay(['rmi', '-af']).catch(() => undefined));
  await overlay(['pull', '-q', '--tls-verify=false', `${host}/e2e/chunked:a`]);
  const before = await blobCounters();
  await overlay(['pull', '-q', '--tls-verify=false', `${host}/e2e/chunked:b`]);
  const after = await blobCounters();
  // the image config whole, the layer in ranges (podman fetches a layer whole when a reply
  // ignores its ranges): the new files and the layer's metadata, not the 5 MB it already had
  t.is(after.whole - before.whole, 1, 'only the config fetched whole');
  t.true(after.partial > before.partial);
  const sent = after.bytes - before.bytes;
  t.true(sent > addedBytes && sent < addedBytes + 1_000_000, `sent ${sent} bytes`);
  const mounted = await overlay(['image', 'mount', `${host}/e2e/chunked:b`]);
  try {
    for (const [name, bytes] of Object.entries(files)) t.true((await readFile(join(mounted, name))).equals(bytes), `${name} byte-identical`);
  } finally {
    await overlay(['image', 'unmount', `${host}/e2e/chunked:b`]);
  }
});
