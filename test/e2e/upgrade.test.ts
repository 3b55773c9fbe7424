import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MongoClient } from 'mongodb';
import { VALIDATED_COLLECTIONS } from '../../migrations/0008-current-validators.ts';
import { mongoJsonSchema } from '../../src/metadata/schema-validator.ts';
import { runVolreg } from '../helpers/cli-run.ts';
import { REPO_ROOT, spawnServer, type SpawnedServer } from '../helpers/server.ts';
import { standaloneEngine } from '../helpers/standalone-engine.ts';

/**
 * Upgrades: data directories older volregs wrote (test/fixtures/old-data-dirs/, made by its
 * make-fixture.sh: embedded engine formats 1 to 3, migrations up to 0007 as first released, a
 * server stopped by SIGTERM or killed while pushes were being written) are served by this one:
 * every tag, manifest, blob and snapshot with its metadata, byte for byte, through /v2, /api/v1
 * and the CLI; the unfinished upload goes on; new pushes, gc and scrub work and gc keeps what
 * is in use; the migrations leave every validator as schemas/ has it.
 */

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'old-data-dirs');
const exec = promisify(execFile);

interface Snapshot {
  volume: string;
  tag: string;
  digest: string;
  size?: number;
  host?: string;
  labels?: Record<string, string>;
}
interface Expected {
  version: string;
  stop: 'sigterm' | 'kill';
  snapshots: Snapshot[];
  deletedSnapshot: { volume: string; tag: string };
  cliSnapshot: { volume: string; tag: string; host: string; labels: Record<string, string> };
  image: { repo: string; tag: string; digest: string; manifest: string; layers: string[] };
  referrer: { repo: string; subject: string; digest: string; artifactType: string };
  mixed: { repo: string; tag: string; schema1: string; schema2: string };
  index: { repo: string; tag: string; manifest: string };
  upload: { repo: string; location: string; sent: number; blob: string };
  acknowledgedBeforeKill: Snapshot[];
}

const sha256 = (b: Uint8Array | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const dirs: string[] = [];
test.after.always(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function serve(dataDir: string): Promise<SpawnedServer> {
  // the unfinished upload is older than any purge age by now: the purge waits until it went on
  return spawnServer({ dataDir, embeddedEngine: true, env: { VOLREG_UPLOAD_PURGE_INTERVAL: '0', VOLREG_GC_INTERVAL: '0' } });
}

async function stop(t: ExecutionContext, server: SpawnedServer): Promise<void> {
  server.kill('SIGTERM');
  t.deepEqual(await server.waitExit(), { code: 0, signal: null }, server.stderr());
}

async function manifestAs(url: string, repo: string, ref: string, accept: string): Promise<{ status: number; body: string; digest: string | null }> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: accept } });
  return { status: res.status, body: await res.text(), digest: res.headers.get('docker-content-digest') };
}

async function bytesOf(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

/** Everything the old version stored, through /v2 and /api/v1. */
async function checkContent(t: ExecutionContext, url: string, e: Expected): Promise<void> {
  const catalog = (await (await fetch(`${url}/v2/_catalog`)).json()) as { repositories: string[] };
  for (const repo of ['team/app-data', 'team/cli-vol', 'team/img', 'team/mixed', 'team/multi']) t.true(catalog.repositories.includes(repo), `catalog lists ${repo}`);
  // (leaving out the tags this test pushes after the upgrade)
  const tagsOf = async (repo: string): Promise<string[]> =>
    ((await (await fetch(`${url}/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags.filter((tag) => tag !== 'after-upgrade');
  t.deepEqual(await tagsOf(e.image.repo), [e.image.tag]);
  t.deepEqual(await tagsOf(e.mixed.repo), [e.mixed.tag]);
  t.deepEqual(await tagsOf(e.index.repo), [e.index.tag]);
  t.deepEqual(await tagsOf('team/app-data'), ['v1', 'v2']);

  // the image skopeo copied in, its layers, and its referrer
  const image = await manifestAs(url, e.image.repo, e.image.tag, OCI_MANIFEST);
  t.is(image.status, 200);
  t.is(image.body, e.image.manifest);
  t.is(image.digest, e.image.digest);
  for (const layer of e.image.layers) {
    const blob = await bytesOf(`${url}/v2/${e.image.repo}/blobs/${layer}`);
    t.is(blob.status, 200, layer);
    t.is(sha256(blob.body), layer);
  }
  const referrers = (await (await fetch(`${url}/v2/${e.referrer.repo}/referrers/${e.referrer.subject}`)).json()) as { manifests: Array<{ digest: string; artifactType?: string }> };
  t.deepEqual(referrers.manifests.map((m) => [m.digest, m.artifactType]), [[e.referrer.digest, e.referrer.artifactType]]);

  // schema 1 and schema 2 under one tag, each by Accept; the index
  const s1 = await manifestAs(url, e.mixed.repo, e.mixed.tag, 'application/vnd.docker.distribution.manifest.v1+json');
  t.is(s1.body, e.mixed.schema1);
  const s2 = await manifestAs(url, e.mixed.repo, e.mixed.tag, 'application/vnd.docker.distribution.manifest.v2+json');
  t.is(s2.body, e.mixed.schema2);
  const index = await manifestAs(url, e.index.repo, e.index.tag, 'application/vnd.oci.image.index.v1+json');
  t.is(index.body, e.index.manifest);

  // snapshots through /api/v1: metadata, content, listings; the deleted tag stays deleted
  for (const s of [...e.snapshots, ...e.acknowledgedBeforeKill]) {
    const base = `${url}/api/v1/volumes/${s.volume}/tags/${s.tag}`;
    const meta = (await (await fetch(base)).json()) as { layer: { digest: string; size: number }; host: string | null; labels: Record<string, string> };
    t.is(meta.layer?.digest, s.digest, `${s.volume}:${s.tag}`);
    if (s.size !== undefined) t.is(meta.layer.size, s.size);
    if (s.host !== undefined) t.is(meta.host, s.host);
    if (s.labels !== undefined) t.deepEqual(meta.labels, s.labels);
    const content = await bytesOf(`${base}/content`);
    t.is(content.status, 200);
    t.is(sha256(content.body), s.digest);
  }
  const cli = (await (await fetch(`${url}/api/v1/volumes/${e.cliSnapshot.volume}/tags/${e.cliSnapshot.tag}`)).json()) as { host: string; labels: Record<string, string> };
  t.is(cli.host, e.cliSnapshot.host);
  t.deepEqual(cli.labels, e.cliSnapshot.labels);
  t.is((await fetch(`${url}/api/v1/volumes/${e.deletedSnapshot.volume}/tags/${e.deletedSnapshot.tag}`)).status, 404);
  const listed = (await (await fetch(`${url}/api/v1/volumes/team/app-data/tags?host=host-a`)).json()) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(listed.snapshots.map((s) => s.tag), ['v1']);
  const volumes = (await (await fetch(`${url}/api/v1/volumes`)).json()) as { volumes: Array<{ volume: string }> };
  const expectedVolumes = ['team/app-data', 'team/cli-vol', ...(e.acknowledgedBeforeKill.length > 0 ? ['team/burst'] : [])];
  for (const v of expectedVolumes) t.true(volumes.volumes.some((x) => x.volume === v), `volume list holds ${v}`);
}

/** The chunked upload the old version left half done: its offset, the rest, and the commit. */
async function finishUpload(t: ExecutionContext, url: string, e: Expected): Promise<void> {
  const blob = Buffer.from(e.upload.blob, 'base64');
  const status = await fetch(`${url}${e.upload.location}`);
  t.is(status.status, 204);
  t.is(status.headers.get('range'), `0-${e.upload.sent - 1}`);
  const rest = await fetch(`${url}${e.upload.location}`, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${e.upload.sent}-${blob.length - 1}` },
    body: new Uint8Array(blob.subarray(e.upload.sent)),
  });
  t.is(rest.status, 202, await rest.text());
  const next = new URL(rest.headers.get('location')!, url);
  next.searchParams.set('digest', sha256(blob));
  const commit = await fetch(next, { method: 'PUT' });
  t.is(commit.status, 201, await commit.text());
  const stored = await bytesOf(`${url}/v2/${e.upload.repo}/blobs/${sha256(blob)}`);
  t.true(stored.body.equals(blob));
}

/** The migrations leave each collection's validator exactly as schemas/ has it. */
async function checkValidators(t: ExecutionContext, dbPath: string): Promise<void> {
  const engine = await standaloneEngine(dbPath);
  const client = await MongoClient.connect(engine.url);
  try {
    const db = client.db('volreg');
    for (const [name, schema] of VALIDATED_COLLECTIONS) {
      const [found] = await db.listCollections({ name }).toArray();
      t.deepEqual((found as { options?: { validator?: unknown } } | undefined)?.options?.validator, { $jsonSchema: mongoJsonSchema(schema) }, `validator of ${name}`);
    }
  } finally {
    await client.close();
    await engine.stop();
  }
}

const upgrade = test.macro({
  async exec(t, name: string) {
    const e = JSON.parse(readFileSync(join(FIXTURES, name, 'expected.json'), 'utf8')) as Expected;
    const tmp = await mkdtemp(join(tmpdir(), 'volreg-upgrade-'));
    dirs.push(tmp);
    const dataDir = join(tmp, 'data');
    await mkdir(dataDir);
    await exec('tar', ['-xzf', join(FIXTURES, name, 'data.tar.gz'), '-C', dataDir]);

    const first = await serve(dataDir);
    t.teardown(() => first.kill('SIGKILL'));
    await checkContent(t, first.url, e);
    await finishUpload(t, first.url, e);

    // the CLI pulls the old snapshot (checking its digest) and pushes a new one beside it
    const pulled = await runVolreg(['pull', 'team/app-data:v1', join(tmp, 'pulled')], { url: first.url, cwd: tmp });
    t.is(pulled.code, 0, pulled.stderr);
    t.true(pulled.stdout.includes(e.snapshots[0]!.digest), pulled.stdout);
    t.is(await readFile(join(tmp, 'pulled', 'sub', 'hello.txt'), 'utf8'), 'hello\n');
    await mkdir(join(tmp, 'new'));
    await writeFile(join(tmp, 'new', 'after.txt'), `pushed after the upgrade from ${e.version}\n`);
    const pushed = await runVolreg(['push', join(tmp, 'new'), 'team/app-data:after-upgrade'], { url: first.url, cwd: tmp });
    t.is(pushed.code, 0, pushed.stderr);
    const again = await runVolreg(['pull', 'team/app-data:after-upgrade', join(tmp, 'pulled-new')], { url: first.url, cwd: tmp });
    t.is(again.code, 0, again.stderr);
    // a manifest pushed to an old repository, under a new tag
    const put = await fetch(`${first.url}/v2/${e.image.repo}/manifests/after-upgrade`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: e.image.manifest });
    t.is(put.status, 201, await put.text());
    await stop(t, first);

    const status = await runVolreg(['migrate', 'status'], { url: first.url, cwd: tmp, env: { VOLREG_DATA_DIR: dataDir } });
    t.is(status.code, 0, status.stderr);
    t.false(/pending/.test(status.stdout), status.stdout);
    await checkValidators(t, join(dataDir, 'db'));

    // gc (also of untagged manifests, with no grace) and scrub keep what is in use
    const gc = await runVolreg(['gc', '--delete-untagged', '--grace', '0', '--json'], { url: first.url, cwd: tmp, env: { VOLREG_DATA_DIR: dataDir } });
    t.is(gc.code, 0, gc.stderr);
    const report = JSON.parse(gc.stdout) as { errors: number; missingBlobs: { count: number }; untaggedManifests: { count: number } };
    t.is(report.errors, 0);
    t.is(report.missingBlobs.count, 0);
    t.is(report.untaggedManifests.count, 1, 'the snapshot of the deleted tag');
    const scrub = await runVolreg(['scrub'], { url: first.url, cwd: tmp, env: { VOLREG_DATA_DIR: dataDir } });
    t.is(scrub.code, 0, scrub.stdout + scrub.stderr);

    const second = await serve(dataDir);
    t.teardown(() => second.kill('SIGKILL'));
    await checkContent(t, second.url, e);
    const verify = await runVolreg(['verify', '--all'], { url: second.url, cwd: tmp });
    t.is(verify.code, 0, verify.stdout + verify.stderr);
    await stop(t, second);
  },
  title: (_, name: string) => {
    const e = JSON.parse(readFileSync(join(FIXTURES, name, 'expected.json'), 'utf8')) as Expected;
    return `a data directory volreg ${e.version} wrote (${e.stop === 'kill' ? 'killed while pushes were written' : 'stopped by SIGTERM'}) is served whole after the upgrade`;
  },
});

for (const name of readdirSync(FIXTURES, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()) {
  test(upgrade, name);
}
