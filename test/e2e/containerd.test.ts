import test, { type ExecutionContext } from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { capturedLog } from '../helpers/captured-log.ts';
import { blobOf, MT, schema1Signed } from '../helpers/manifest-fixtures.ts';
import { pushBlob, putManifest, request } from '../helpers/oci-client.ts';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { tarOfFiles } from '../helpers/tree.ts';

/**
 * containerd's `ctr` (Debian's containerd 1.6) against volreg: its registry client
 * (`remotes/docker`) is not containers/image, so its flows are checked here for themselves.
 * Images this file builds as OCI layout tarballs are imported, pushed (an image and a
 * two-platform index), pulled back into an empty namespace by tag and by digest; pushed again to
 * a second repository (ctr mounts the blobs) and re-pushed (nothing sent); a volume snapshot
 * pushed with curl is fetched by ctr; a tag holding schema 1 and schema 2 manifests resolves to
 * schema 2; Basic authentication with and without the right credentials.
 *
 * One containerd daemon for the file, as root, with its root, state and socket in a temporary
 * directory, killed at the end. Each test works in containerd namespaces of its own, and content
 * is not shared between namespaces (`isolated`), so a pull into a new namespace really reads
 * every byte from volreg. Tests run one after the other: they read the server's request log.
 */

const dirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `volreg-ctrd-${prefix}-`));
  dirs.push(d);
  return d;
}

let server: TestServer;
let host: string;
let requests: Array<Record<string, unknown>>;
let daemon: ChildProcess | undefined;
let daemonLog = '';
let socket: string;

const CONTAINERD_CONFIG = (dir: string): string => `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "${dir}/containerd.sock"
[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
`;

test.before(async () => {
  const log = capturedLog('info');
  requests = log.lines;
  server = await startTestServer({ label: 'e2e_ctrd', logger: log.logger });
  host = new URL(server.url).host;
});

test.after.always(async () => {
  if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
    const exited = new Promise((resolve) => daemon!.once('exit', resolve));
    daemon.kill('SIGTERM');
    const forced = setTimeout(() => daemon!.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(forced);
  }
  await server?.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Starts the file's containerd once (as root), and waits until ctr reaches it. */
let started: Promise<void> | undefined;
function containerd(t: ExecutionContext): Promise<void> {
  assertRoot(t, 'containerd runs as root');
  return (started ??= (async () => {
    const dir = await tempDir('daemon');
    const config = join(dir, 'config.toml');
    await writeFile(config, CONTAINERD_CONFIG(dir));
    socket = join(dir, 'containerd.sock');
    daemon = spawn('containerd', ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stdout!.on('data', (c: Buffer) => (daemonLog += c.toString()));
    daemon.stderr!.on('data', (c: Buffer) => (daemonLog += c.toString()));
    const failed = new Promise<never>((_, reject) => {
      daemon!.once('error', (err) => reject(new Error(`cannot start containerd (apt-get install containerd): ${err.message}`)));
      daemon!.once('exit', (code) => reject(new Error(`containerd exited (${code}): ${daemonLog.slice(-2000)}`)));
    });
    failed.catch(() => {});
    for (let i = 0; ; i++) {
      const ready = ctr('default', ['version']).then(
        () => true,
        () => false,
      );
      if (await Promise.race([ready, failed])) return;
      if (i === 100) throw new Error(`containerd did not answer within 20 s: ${daemonLog.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  })());
}

interface Run {
  stdout: string;
  stderr: string;
}

/** `ctr` on the file's daemon, in namespace `ns`; rejects with its stderr when it fails. */
function ctr(ns: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile('ctr', ['--address', socket, '--namespace', ns, ...args], { timeout: 60_000, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`ctr ${args.join(' ')} failed: ${stderr || err.message}`), { stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

/** The digest `ctr images ls` shows for a reference. */
async function imageDigest(ns: string, ref: string): Promise<string> {
  const { stdout } = await ctr(ns, ['images', 'ls']);
  const row = stdout.split('\n').find((l) => l.split(/\s+/)[0] === ref);
  if (!row) throw new Error(`${ref} not in namespace ${ns}:\n${stdout}`);
  return row.split(/\s+/)[2]!;
}

/** A blob of containerd's content store in namespace `ns`. */
async function contentOf(ns: string, digest: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile('ctr', ['--address', socket, '--namespace', ns, 'content', 'get', digest], { encoding: 'buffer', maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ctr content get ${digest} failed: ${stderr.toString() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** The server's request log lines (method, path, status) for one repository, since `from`. */
function requestsOf(repository: string, from: number): Array<{ method: string; path: string; status: number }> {
  return requests
    .slice(from)
    .filter((l) => l.msg === 'request' && l.repository === repository)
    .map((l) => ({ method: String(l.method), path: String(l.path), status: Number(l.status) }));
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')} failed: ${stderr || err.message}`)) : resolve(stdout))),
  );
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
}

interface Image {
  manifest: Descriptor;
  config: Descriptor;
  layer: Descriptor;
  layerBytes: Buffer;
}

/** An OCI image layout on disk: blobs are written as they are made. */
class Layout {
  private constructor(readonly dir: string) {}

  static async create(): Promise<Layout> {
    const dir = await tempDir('layout');
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    return new Layout(dir);
  }

  async blob(bytes: Buffer, mediaType: string, extra: Partial<Descriptor> = {}): Promise<Descriptor> {
    const digest = sha256(bytes);
    await writeFile(join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), bytes);
    return { mediaType, digest, size: bytes.length, ...extra };
  }

  /** an image of one gzip layer (random files, so no two images share a blob) for `architecture` */
  async image(architecture: string): Promise<Image> {
    const tar = await tarOfFiles({ 'hello.txt': Buffer.from(`hello from ${architecture}\n`), 'data.bin': randomBytes(64 * 1024) });
    const layerBytes = gzipSync(tar);
    const layer = await this.blob(layerBytes, MT.ociLayer);
    const config = await this.blob(
      Buffer.from(JSON.stringify({ architecture, os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })),
      MT.ociConfig,
    );
    const manifest = await this.blob(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config, layers: [layer] })), MT.ociManifest, {
      platform: { architecture, os: 'linux' },
    });
    return { manifest, config, layer, layerBytes };
  }

  async index(images: Image[]): Promise<Descriptor> {
    return this.blob(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: images.map((i) => i.manifest) })), MT.ociIndex);
  }

  /** the layout as a tarball for `ctr images import`, `top` named `name` */
  async tarball(top: Descriptor, name: string): Promise<string> {
    const named = { ...top, annotations: { 'io.containerd.image.name': name } };
    delete named.platform;
    await writeFile(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [named] }));
    const file = join(await tempDir('import'), 'image.tar');
    await run('tar', ['-C', this.dir, '-cf', file, '.']);
    return file;
  }
}

/** Imports `top` under `local` into namespace `ns` and pushes it to `remote` on volreg. */
async function importAndPush(ns: string, layout: Layout, top: Descriptor, local: string, remote: string, extra: string[] = []): Promise<void> {
  await ctr(ns, ['images', 'import', '--all-platforms', '--no-unpack', await layout.tarball(top, local)]);
  await ctr(ns, ['images', 'tag', local, remote]);
  await ctr(ns, ['images', 'push', '--plain-http', ...extra, remote]);
}

/** every blob of the images is in namespace `ns`, byte for byte */
async function assertContent(t: ExecutionContext, ns: string, images: Image[]): Promise<void> {
  for (const image of images) {
    t.true((await contentOf(ns, image.layer.digest)).equals(image.layerBytes), `layer ${image.layer.digest} byte-identical`);
    t.is(sha256(await contentOf(ns, image.config.digest)), image.config.digest);
    t.is(sha256(await contentOf(ns, image.manifest.digest)), image.manifest.digest);
  }
}

test.serial('ctr images import and push (an image, a two-platform index), pull back into an empty namespace by tag and by digest: same digests, same layer bytes', async (t) => {
  await containerd(t);
  const layout = await Layout.create();
  const single = await layout.image('amd64');
  const amd64 = await layout.image('amd64');
  const arm64 = await layout.image('arm64');
  const index = await layout.index([amd64, arm64]);

  await importAndPush('rt-push', layout, single.manifest, 'example.test/single:v1', `${host}/ctr/single:v1`);
  await importAndPush('rt-push', layout, index, 'example.test/multi:v1', `${host}/ctr/multi:v1`);

  // what volreg serves is what was pushed
  const served = await request(server.url, '/v2/ctr/multi/manifests/v1', { headers: { Accept: MT.ociIndex } });
  t.is(served.headers['docker-content-digest'], index.digest);
  t.is(sha256(served.body), index.digest);

  // by tag, into a namespace that holds nothing: ctr unpacks it too
  const pullFrom = requests.length;
  await ctr('rt-pull', ['images', 'pull', '--plain-http', '--snapshotter', 'native', `${host}/ctr/single:v1`]);
  await ctr('rt-pull', ['images', 'pull', '--plain-http', '--all-platforms', '--snapshotter', 'native', `${host}/ctr/multi:v1`]);
  t.is(await imageDigest('rt-pull', `${host}/ctr/single:v1`), single.manifest.digest);
  t.is(await imageDigest('rt-pull', `${host}/ctr/multi:v1`), index.digest);
  await assertContent(t, 'rt-pull', [single, amd64, arm64]);
  t.is(sha256(await contentOf('rt-pull', index.digest)), index.digest);
  const layerReads = requestsOf('ctr/multi', pullFrom).filter((r) => r.method === 'GET' && r.status === 200 && r.path.includes('/blobs/'));
  t.deepEqual(layerReads.map((r) => r.path.split('/').pop()).filter((d) => d === amd64.layer.digest || d === arm64.layer.digest).sort(), [amd64.layer.digest, arm64.layer.digest].sort(), 'each layer read from volreg');

  // by digest, into another empty namespace
  await ctr('rt-digest', ['content', 'fetch', '--plain-http', '--all-platforms', `${host}/ctr/multi@${index.digest}`]);
  await ctr('rt-digest', ['content', 'fetch', '--plain-http', `${host}/ctr/single@${single.manifest.digest}`]);
  await assertContent(t, 'rt-digest', [single, amd64, arm64]);
});

test.serial('ctr push to a second repository mounts every blob from the first; pushing again sends nothing', async (t) => {
  await containerd(t);
  const layout = await Layout.create();
  const amd64 = await layout.image('amd64');
  const arm64 = await layout.image('arm64');
  const index = await layout.index([amd64, arm64]);
  await importAndPush('mount-push', layout, index, 'example.test/mount:v1', `${host}/ctr/mount-from:v1`);

  // pulled from volreg, the blobs carry the repository they came from, and ctr offers a mount
  await ctr('mount-pull', ['content', 'fetch', '--plain-http', '--all-platforms', `${host}/ctr/mount-from:v1`]);
  await ctr('mount-pull', ['images', 'tag', `${host}/ctr/mount-from:v1`, `${host}/ctr/mount-to:v1`]);
  let from = requests.length;
  await ctr('mount-pull', ['images', 'push', '--plain-http', `${host}/ctr/mount-to:v1`]);
  const pushed = requestsOf('ctr/mount-to', from);
  const uploads = pushed.filter((r) => r.method === 'POST');
  t.is(uploads.length, 4, 'a mount for each config and layer');
  t.true(uploads.every((r) => r.status === 201), JSON.stringify(uploads));
  t.false(pushed.some((r) => r.method === 'PUT' && r.path.includes('/blobs/')), 'no blob bytes sent');
  t.is((await request(server.url, '/v2/ctr/mount-to/manifests/v1', { method: 'HEAD', headers: { Accept: MT.ociIndex } })).headers['docker-content-digest'], index.digest);
  for (const d of [amd64.layer.digest, arm64.layer.digest]) {
    const blob = await request(server.url, `/v2/ctr/mount-to/blobs/${d}`);
    t.is(sha256(blob.body), d);
  }
  // the log line of a request can come after its reply: wait for this test's own three
  const own = (): number => requestsOf('ctr/mount-to', from).filter((r) => r.status === 200 && ((r.method === 'GET' && r.path.includes('/blobs/')) || (r.method === 'HEAD' && r.path.endsWith('/manifests/v1')))).length;
  for (let waited = 0; own() < 3 && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  t.is(own(), 3);

  // everything is there: only HEADs
  from = requests.length;
  await ctr('mount-pull', ['images', 'push', '--plain-http', `${host}/ctr/mount-to:v1`]);
  const again = requestsOf('ctr/mount-to', from);
  t.true(again.length > 0);
  t.deepEqual([...new Set(again.map((r) => `${r.method} ${r.status}`))], ['HEAD 200']);
});

test.serial('a volume snapshot pushed with curl -T is fetched by ctr content fetch, its layer byte-identical', async (t) => {
  await containerd(t);
  const dir = await tempDir('volume');
  await writeFile(join(dir, 'db.dump'), randomBytes(200 * 1024));
  const archive = join(await tempDir('archive'), 'app-data.tar.gz');
  await run('tar', ['-C', dir, '-czf', archive, '.']);
  const reply = JSON.parse(await run('curl', ['-fsS', '-T', archive, `${server.url}/api/v1/volumes/team/app-data/tags/2024-05-01`])) as {
    manifestDigest: string;
    layer: { digest: string };
  };

  await ctr('volume', ['content', 'fetch', '--plain-http', `${host}/team/app-data:2024-05-01`]);
  t.is(await imageDigest('volume', `${host}/team/app-data:2024-05-01`), reply.manifestDigest);
  t.true((await contentOf('volume', reply.layer.digest)).equals(await readFile(archive)));
});

test.serial('a tag holding a schema 1 and a schema 2 manifest: ctr resolves the schema 2 one; a tag of schema 1 only is converted', async (t) => {
  await containerd(t);
  const tar = await tarOfFiles({ 'old.txt': randomBytes(1024) });
  const layer = blobOf(gzipSync(tar));
  for (const repo of ['ctr/dual', 'ctr/schema1']) {
    await pushBlob(server.url, repo, layer);
    t.is((await putManifest(server.url, repo, 'v1', schema1Signed({ name: repo, tag: 'v1', layers: [layer] }))).status, 201);
  }
  const layout = await Layout.create();
  const image = await layout.image('amd64');
  await importAndPush('dual-push', layout, image.manifest, 'example.test/dual:v1', `${host}/ctr/dual:v1`);

  await ctr('dual-pull', ['content', 'fetch', '--plain-http', `${host}/ctr/dual:v1`]);
  t.is(await imageDigest('dual-pull', `${host}/ctr/dual:v1`), image.manifest.digest);
  await assertContent(t, 'dual-pull', [image]);
  // the push moved only the schema 2 unit: a schema 1 client still gets its manifest
  const v1 = await request(server.url, '/v2/ctr/dual/manifests/v1', { headers: { Accept: MT.schema1Signed } });
  t.is(v1.headers['content-type'], MT.schema1Signed);

  // schema 1 only: ctr converts it to an image of the same layer
  await ctr('dual-pull', ['images', 'pull', '--plain-http', '--snapshotter', 'native', `${host}/ctr/schema1:v1`]);
  t.true((await contentOf('dual-pull', layer.digest)).equals(layer.bytes));
});

test.serial('with VOLREG_AUTH_FILE: ctr without credentials or with a wrong password is refused and stores nothing; --user pushes, another user pulls', async (t) => {
  await containerd(t);
  const dir = await tempDir('auth');
  const htpasswd = join(dir, 'htpasswd');
  await run('htpasswd', ['-B', '-C', '5', '-b', '-c', htpasswd, 'alice', 'wonder land']);
  await run('htpasswd', ['-B', '-C', '5', '-b', htpasswd, 'bob', 'p:ss:word']);
  const secured = await startTestServer({ label: 'e2e_ctrd_auth', env: { VOLREG_AUTH_FILE: htpasswd } });
  try {
    const authHost = new URL(secured.url).host;
    const layout = await Layout.create();
    const image = await layout.image('amd64');
    const remote = `${authHost}/ctr/private:v1`;
    await ctr('auth-push', ['images', 'import', '--no-unpack', await layout.tarball(image.manifest, 'example.test/private:v1')]);
    await ctr('auth-push', ['images', 'tag', 'example.test/private:v1', remote]);

    for (const user of [[], ['--user', 'alice:wrong'], ['--user', 'mallory:wonder land']]) {
      const err = await t.throwsAsync(ctr('auth-push', ['images', 'push', '--plain-http', ...user, remote]));
      t.regex(err!.message, /401 Unauthorized/, user.join(' '));
    }
    const none = await request(secured.url, '/v2/ctr/private/tags/list', { headers: { Authorization: `Basic ${Buffer.from('alice:wonder land').toString('base64')}` } });
    t.is(none.status, 404, 'nothing stored by the refused pushes');

    await ctr('auth-push', ['images', 'push', '--plain-http', '--user', 'alice:wonder land', remote]);
    await t.throwsAsync(ctr('auth-pull', ['content', 'fetch', '--plain-http', remote]), { message: /401 Unauthorized/ });
    await ctr('auth-pull', ['content', 'fetch', '--plain-http', '--user', 'bob:p:ss:word', remote]);
    t.is(await imageDigest('auth-pull', remote), image.manifest.digest);
    await assertContent(t, 'auth-pull', [image]);
  } finally {
    await secured.close();
  }
});
