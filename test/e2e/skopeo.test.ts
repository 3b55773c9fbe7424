import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { collections } from '../../src/metadata/collections.ts';
import type { Digest } from '../../src/domain/digest.ts';
import type { ScrubReport } from '../../src/maintenance/scrub.ts';
import { blobPath } from '../../src/storage/paths.ts';
import { runVolreg } from '../helpers/cli-run.ts';
import { request } from '../helpers/oci-client.ts';
import { tarOfFiles } from '../helpers/tree.ts';
import { spawnServer, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The real `skopeo` (Debian's) against volreg: copy an OCI layout from disk to volreg and back
 * to `dir:` and `oci:` with byte-identical layers; inspect, list-tags, delete; a v2s1 and a
 * v2s2 copy to one tag, each served by its Accept; data pushed before a restart is there after.
 */

const dirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `volreg-skopeo-${prefix}-`));
  dirs.push(d);
  return d;
}

let server: TestServer;
let host: string;
let skopeoHome: string;
test.before(async () => {
  server = await startTestServer({ label: 'e2e_skopeo' });
  host = new URL(server.url).host;
  skopeoHome = await tempDir('home');
});
test.after.always(async () => {
  await server?.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function skopeo(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'skopeo',
      ['--insecure-policy', ...args],
      // its own HOME, so no user registries.conf or auth file leaks in
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: skopeoHome, XDG_RUNTIME_DIR: skopeoHome }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`skopeo ${args.join(' ')} failed: ${stderr || err.message}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Layout {
  dir: string;
  tag: string;
  manifestDigest: string;
  configDigest: string;
  /** compressed layer digests (hex) -> bytes */
  layers: Map<string, Buffer>;
}

/** Writes an OCI image layout (oci-layout, index.json, blobs/sha256/...) with random gzip layers. */
async function buildLayout(tag: string, layerCount = 2): Promise<Layout> {
  const dir = await tempDir('layout');
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const writeBlob = async (b: Buffer): Promise<string> => {
    const hex = sha256(b);
    await writeFile(join(blobs, hex), b);
    return hex;
  };
  const layers = new Map<string, Buffer>();
  const layerDescs: Array<{ mediaType: string; digest: string; size: number }> = [];
  const diffIds: string[] = [];
  for (let i = 0; i < layerCount; i++) {
    const tar = await tarOfFiles({ [`data-${i}.bin`]: randomBytes(i === 0 ? 300_000 : 20_000), [`note-${i}.txt`]: Buffer.from(`layer ${i}\n`) });
    const gz = gzipSync(tar);
    const hex = await writeBlob(gz);
    layers.set(hex, gz);
    diffIds.push(`sha256:${sha256(tar)}`);
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${hex}`, size: gz.length });
  }
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin'], Cmd: ['/bin/true'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `layer ${i} ${randomBytes(4).toString('hex')}` })),
    }),
  );
  const configHex = await writeBlob(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configHex}`, size: config.length },
      layers: layerDescs,
    }),
  );
  const manifestHex = await writeBlob(manifest);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${manifestHex}`,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return { dir, tag, manifestDigest: `sha256:${manifestHex}`, configDigest: `sha256:${configHex}`, layers };
}

async function assertLayersIn(t: import('ava').ExecutionContext, files: Map<string, Buffer>, layout: Layout): Promise<void> {
  for (const [hex, bytes] of layout.layers) {
    const got = files.get(hex);
    t.truthy(got, `layer ${hex} present`);
    t.true(got!.equals(bytes), `layer ${hex} byte-identical`);
  }
}

async function readDirFiles(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of await readdir(dir)) out.set(name, await readFile(join(dir, name)));
  return out;
}

test('copy an OCI layout to volreg and back to dir: and oci: with byte-identical layers; inspect; list-tags; delete', async (t) => {
  const layout = await buildLayout('v1');
  const ref = `docker://${host}/e2e/app:v1`;
  await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout.dir}:v1`, ref]);
  await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout.dir}:v1`, `docker://${host}/e2e/app:v1-again`]);

  // the manifest went through unchanged
  const head = await request(server.url, '/v2/e2e/app/manifests/v1', { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(head.status, 200);
  t.is(head.headers['docker-content-digest'], layout.manifestDigest);

  const inspect = JSON.parse((await skopeo(['inspect', '--tls-verify=false', ref])).stdout) as { Digest: string; Layers: string[]; Architecture: string; Os: string };
  t.is(inspect.Digest, layout.manifestDigest);
  t.deepEqual(
    inspect.Layers,
    [...layout.layers.keys()].map((h) => `sha256:${h}`),
  );
  t.is(inspect.Architecture, 'amd64');
  const raw = (await skopeo(['inspect', '--raw', '--tls-verify=false', ref])).stdout;
  t.is(`sha256:${sha256(Buffer.from(raw))}`, layout.manifestDigest);
  const config = JSON.parse((await skopeo(['inspect', '--config', '--raw', '--tls-verify=false', ref])).stdout) as { rootfs: { diff_ids: string[] } };
  t.is(config.rootfs.diff_ids.length, layout.layers.size);

  const dirOut = join(await tempDir('dir'), 'img');
  await skopeo(['copy', '--src-tls-verify=false', ref, `dir:${dirOut}`]);
  const dirFiles = await readDirFiles(dirOut);
  await assertLayersIn(t, dirFiles, layout);
  t.is(`sha256:${sha256(dirFiles.get('manifest.json')!)}`, layout.manifestDigest);

  const ociOut = await tempDir('oci');
  await skopeo(['copy', '--src-tls-verify=false', ref, `oci:${ociOut}:back`]);
  await assertLayersIn(t, await readDirFiles(join(ociOut, 'blobs', 'sha256')), layout);

  const tags = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', `docker://${host}/e2e/app`])).stdout) as { Repository: string; Tags: string[] };
  t.deepEqual(tags.Tags, ['v1', 'v1-again']);

  // skopeo delete resolves the tag and deletes the manifest by digest: every tag on it goes
  await skopeo(['delete', '--tls-verify=false', ref]);
  await t.throwsAsync(skopeo(['inspect', '--tls-verify=false', ref]), { message: /manifest unknown|not found/i });
  const after = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', `docker://${host}/e2e/app`])).stdout) as { Tags: string[] };
  t.deepEqual(after.Tags, []);
});

test('--format v2s1 and --format v2s2 to one tag: two Tag units, each served by its Accept', async (t) => {
  const layout = await buildLayout('src', 2);
  const ref = `docker://${host}/e2e/dual:latest`;
  await skopeo(['copy', '--dest-tls-verify=false', '--format', 'v2s1', `oci:${layout.dir}:src`, ref]);
  await skopeo(['copy', '--dest-tls-verify=false', '--format', 'v2s2', `oci:${layout.dir}:src`, ref]);

  const units = await collections(server.db).tags.find({ repo_id: 'e2e/dual', name: 'latest' }).toArray();
  t.deepEqual(units.map((u) => u.schema_version).sort(), [1, 2]);

  const v2 = await request(server.url, '/v2/e2e/dual/manifests/latest', { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  t.is(v2.status, 200);
  t.is(v2.headers['content-type'], 'application/vnd.docker.distribution.manifest.v2+json');
  t.is(v2.headers['docker-content-digest'], `sha256:${sha256(v2.body)}`);
  t.is(v2.json<{ layers: unknown[] }>().layers.length, 2);
  t.is(v2.headers['docker-content-digest'], units.find((u) => u.schema_version === 2)!.manifest_digest);

  const v1 = await request(server.url, '/v2/e2e/dual/manifests/latest', { headers: { Accept: 'application/vnd.docker.distribution.manifest.v1+prettyjws' } });
  t.is(v1.status, 200);
  t.is(v1.headers['content-type'], 'application/vnd.docker.distribution.manifest.v1+prettyjws');
  const s1 = v1.json<{ schemaVersion: number; fsLayers: unknown[]; history: Array<{ v1Compatibility: string }>; signatures: unknown[] }>();
  t.is(s1.schemaVersion, 1);
  t.true(s1.signatures.length > 0);
  t.is(v1.headers['docker-content-digest'], units.find((u) => u.schema_version === 1)!.manifest_digest);

  // the v1 tag records the top image id
  const repoDoc = await collections(server.db).repos.findOne({ _id: 'e2e/dual' });
  const topId = (JSON.parse(s1.history[0]!.v1Compatibility) as { id: string }).id;
  t.deepEqual(repoDoc!.scratchpad.tags, [{ tag: 'latest', image_id: topId }]);

  // a client of both (skopeo) gets schema 2; pulling by the schema 1 digest still works
  const inspect = JSON.parse((await skopeo(['inspect', '--tls-verify=false', ref])).stdout) as { Digest: string };
  t.is(inspect.Digest, String(v2.headers['docker-content-digest']));
  const s1Out = join(await tempDir('s1'), 'img');
  await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/e2e/dual@${String(v1.headers['docker-content-digest'])}`, `dir:${s1Out}`]);
  await assertLayersIn(t, await readDirFiles(s1Out), layout);

  const tags = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', `docker://${host}/e2e/dual`])).stdout) as { Tags: string[] };
  t.deepEqual(tags.Tags, ['latest']);
});

test('data pushed before a restart is there after it', async (t) => {
  const dataDir = await tempDir('data');
  const layout = await buildLayout('keep', 1);
  let proc = await spawnServer({ dataDir });
  try {
    const h = new URL(proc.url).host;
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout.dir}:keep`, `docker://${h}/persist/app:keep`]);
    proc.kill('SIGTERM');
    t.is((await proc.waitExit()).code, 0);

    proc = await spawnServer({ dataDir });
    const h2 = new URL(proc.url).host;
    const inspect = JSON.parse((await skopeo(['inspect', '--tls-verify=false', `docker://${h2}/persist/app:keep`])).stdout) as { Digest: string };
    t.is(inspect.Digest, layout.manifestDigest);
    const out = join(await tempDir('after'), 'img');
    await skopeo(['copy', '--src-tls-verify=false', `docker://${h2}/persist/app:keep`, `dir:${out}`]);
    await assertLayersIn(t, await readDirFiles(out), layout);
    const tags = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', `docker://${h2}/persist/app`])).stdout) as { Tags: string[] };
    t.deepEqual(tags.Tags, ['keep']);
  } finally {
    proc.kill('SIGTERM');
    await proc.waitExit();
  }
});

test('a layer damaged at rest: volreg scrub sets it aside beside the running server, and copying the image again mends it', async (t) => {
  const layout = await buildLayout('v1');
  const ref = `docker://${host}/e2e/scrubbed:v1`;
  await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout.dir}:v1`, ref]);
  const scrub = (...args: string[]) => runVolreg(['scrub', ...args], { url: server.url, cwd: tmpdir(), env: { VOLREG_DATA_DIR: server.dataDir } });

  const clean = await scrub();
  t.is(clean.code, 0, clean.stderr + clean.stdout);
  t.regex(clean.stdout, /scrub: \d+ blobs, .* read in \d+ ms: \d+ intact, 0 damaged/);

  const [hex, original] = [...layout.layers][0]!;
  const digest = `sha256:${hex}` as Digest;
  const file = blobPath(server.dataDir, digest);
  const damaged = Buffer.from(original);
  damaged[damaged.length >> 1]! ^= 0x10;
  await writeFile(file, damaged);

  const dry = await scrub('--dry-run');
  t.is(dry.code, 4);
  t.regex(dry.stdout, new RegExp(`damaged: ${digest} .* left in place \\(dry run\\)`));
  t.true((await readFile(file)).equals(damaged), 'a dry run moves nothing');

  const found = JSON.parse((await scrub('--json')).stdout) as ScrubReport;
  t.deepEqual(found.damaged.map((d) => d.digest), [digest]);
  const place = found.damaged[0]!.setAsideAs!;
  t.regex(place, new RegExp(`^quarantine/sha256/${hex}\\.`));
  t.true((await readFile(join(server.dataDir, place))).equals(damaged), 'kept for the operator, as it was');
  t.is((await request(server.url, `/v2/e2e/scrubbed/blobs/${digest}`, { method: 'HEAD' })).status, 404);
  await t.throwsAsync(skopeo(['copy', '--src-tls-verify=false', ref, `dir:${await tempDir('broken')}`]), undefined, 'the image cannot be pulled while its layer is missing');

  // the image's source still exists: copying it again uploads the layer (HEAD said 404), which mends the tag
  await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout.dir}:v1`, ref]);
  const out = await tempDir('mended');
  await skopeo(['copy', '--src-tls-verify=false', ref, `dir:${out}`]);
  await assertLayersIn(t, await readDirFiles(out), layout);
  const after = await scrub();
  t.is(after.code, 0, after.stdout);
  await rm(join(server.dataDir, 'quarantine'), { recursive: true });
});
