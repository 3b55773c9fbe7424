import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { request, type Reply } from './oci-client.ts';
import { byteOrder } from './model-registry.ts';

/**
 * The model-based test of the snapshot API (/api/v1): what README "Volume snapshots" and its
 * curl recipes promise, written as a small model of volumes and their tags, and fast-check
 * commands that send real requests (through /api/v1 and, for the same snapshots, /v2) and
 * compare every answer with the model, then update it. A mismatch throws; fast-check shrinks
 * the sequence.
 */

export type Compression = 'none' | 'gzip' | 'zstd';

/** One of the fixed archives the commands push: a small tree, in one compression. */
export interface Layer {
  name: string;
  bytes: Buffer;
  digest: string;
  compression: Compression;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const LAYER_MEDIA_TYPES: Record<Compression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};
const EXTENSIONS: Record<Compression, string> = { none: '.tar', gzip: '.tar.gz', zstd: '.tar.zst' };

/** Two small trees, each as a plain tar, tar.gz and tar.zst, made the same way every time. */
export function makeLayers(): Layer[] {
  const dir = mkdtempSync(join(tmpdir(), 'volreg-model-volumes-'));
  try {
    const trees: Record<string, Record<string, string>> = { one: { 'hello.txt': 'hello\n' }, two: { 'a/b.txt': 'b'.repeat(700), 'c.txt': '' } };
    const layers: Layer[] = [];
    for (const [tree, files] of Object.entries(trees)) {
      const root = join(dir, tree);
      for (const [path, text] of Object.entries(files)) {
        mkdirSync(join(root, path, '..'), { recursive: true });
        writeFileSync(join(root, path), text);
      }
      const tar = execFileSync('tar', ['-C', root, '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '.']);
      const gz = execFileSync('gzip', ['-n', '-c'], { input: tar });
      const zst = execFileSync('zstd', ['-q', '-c'], { input: tar });
      for (const [compression, bytes] of [['none', tar], ['gzip', gz], ['zstd', zst]] as const) {
        layers.push({ name: `${tree}-${compression}`, bytes, digest: sha256(bytes), compression });
      }
    }
    return layers;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface Snap {
  manifestDigest: string;
  layer: Layer;
  host: string | null;
  labels: Record<string, string>;
  /** epoch ms */
  created: number;
  source: 'api' | 'oci';
}

export interface VolState {
  /** volume suffix -> tag -> snapshot */
  vols: Map<string, Map<string, Snap>>;
  prefix: string;
  layers: Layer[];
  /** volumes of earlier runs on the same server (the volume list's total counts them too) */
  foreignVolumes: number;
}

export interface VolReal {
  url: string;
}

type Cmd = fc.AsyncCommand<VolState, VolReal>;

export const VOLUMES = ['a', 'a/b', 'c-d'] as const;
export const TAGS = ['t1', 'T1', 't1.0', '_x', 'daily-mon'] as const;
export const HOSTS = ['web-01', 'db.example'] as const;
/** created times of snapshots pushed through /v2 (the pushing client says them) */
export const OCI_CREATED = ['2020-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z', '2021-06-30T12:00:00.500Z'] as const;

const volumeName = (s: VolState, v: string): string => `${s.prefix}/${v}`;
const tagsOf = (s: VolState, v: string): Map<string, Snap> => {
  let m = s.vols.get(v);
  if (!m) s.vols.set(v, (m = new Map()));
  return m;
};

function fail(what: string, r: Reply | undefined, detail: unknown = ''): never {
  const body = r ? r.body.toString('utf8').slice(0, 400) : '';
  throw new Error(`${what}${r ? ` (status ${r.status}: ${body})` : ''} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
}

function expectStatus(what: string, r: Reply, status: number): void {
  if (r.status !== status) fail(`${what}: expected ${status}`, r);
}

export function expectError(what: string, r: Reply, status: number, code: string): void {
  expectStatus(what, r, status);
  let errors: Array<{ code?: unknown; message?: unknown }> | undefined;
  try {
    errors = r.json<{ errors?: Array<{ code?: unknown; message?: unknown }> }>().errors;
  } catch {
    fail(`${what}: error body is not JSON`, r);
  }
  if (!Array.isArray(errors) || errors.length === 0 || typeof errors[0]!.message !== 'string') fail(`${what}: not an error envelope`, r);
  if (errors[0]!.code !== code) fail(`${what}: expected error ${code}`, r);
}

function header(r: Reply, name: string): string | undefined {
  const v = r.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

function same(what: string, actual: unknown, expected: unknown, r?: Reply): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) fail(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`, r);
}

/** Newest first; snapshots of the same millisecond by tag (README "curl recipes"). */
export function snapshotOrder(a: { created: number; tag: string }, b: { created: number; tag: string }): number {
  return b.created - a.created || byteOrder(a.tag, b.tag);
}

interface Listed {
  tag: string;
  created: number;
  snap: Snap;
}

function listedOf(tags: Map<string, Snap>): Listed[] {
  return [...tags].map(([tag, snap]) => ({ tag, created: snap.created, snap })).sort(snapshotOrder);
}

export function fileName(volume: string, tag: string, c: Compression): string {
  return `${volume.replaceAll('/', '-')}-${tag}${EXTENSIONS[c]}`;
}

/** What the metadata JSON of a snapshot must say. */
function checkSnapshotJson(what: string, body: Record<string, unknown>, volume: string, tag: string, snap: Snap): void {
  same(`${what}: volume`, body.volume, volume);
  same(`${what}: tag`, body.tag, tag);
  same(`${what}: manifestDigest`, body.manifestDigest, snap.manifestDigest);
  same(`${what}: digest`, body.digest, snap.manifestDigest);
  same(`${what}: layer`, body.layer, { digest: snap.layer.digest, size: snap.layer.bytes.length, mediaType: LAYER_MEDIA_TYPES[snap.layer.compression] });
  same(`${what}: size`, body.size, snap.layer.bytes.length);
  same(`${what}: compression`, body.compression, snap.layer.compression);
  same(`${what}: host`, body.host, snap.host);
  same(`${what}: labels`, body.labels, snap.labels);
  same(`${what}: created`, Date.parse(String(body.created)), snap.created);
  same(`${what}: source`, body.source, snap.source);
  same(`${what}: fileName`, body.fileName, fileName(volume, tag, snap.layer.compression));
}

// ---- pushes --------------------------------------------------------------------------------

export type HostVia = 'none' | 'header' | 'query';
export type DigestVia = 'none' | 'query' | 'header' | 'wrong';
export type PutCondition = 'none' | 'if-none-match-star' | 'if-match-current' | 'if-match-stale' | 'if-none-match-current';

export interface ApiPushOptions {
  layer: number;
  hostVia: HostVia;
  host: number;
  label: 'none' | 'query' | 'header';
  digest: DigestVia;
  condition: PutCondition;
}

/** PUT /api/v1/volumes/<v>/tags/<tag>, checked against the model and applied to it. */
export async function apiPush(s: VolState, real: VolReal, v: string, tag: string, o: ApiPushOptions): Promise<void> {
  const volume = volumeName(s, v);
  const layer = s.layers[o.layer % s.layers.length]!;
  const host = HOSTS[o.host % HOSTS.length]!;
  const current = tagsOf(s, v).get(tag);
  const headers: Record<string, string> = {};
  const query = new URLSearchParams();
  if (o.hostVia === 'header') headers['X-Volreg-Host'] = host;
  if (o.hostVia === 'query') query.set('host', host);
  if (o.label === 'header') headers['X-Volreg-Label'] = 'env=prod, tier=db';
  if (o.label === 'query') query.append('label', 'env=test');
  if (o.digest === 'query') query.set('digest', layer.digest);
  if (o.digest === 'header') headers.Digest = `sha-256=${Buffer.from(layer.digest.slice('sha256:'.length), 'hex').toString('base64')}`;
  if (o.digest === 'wrong') query.set('digest', sha256(Buffer.concat([layer.bytes, Buffer.from('x')])));
  const stale = 'sha256:' + '0'.repeat(64);
  if (o.condition === 'if-none-match-star') headers['If-None-Match'] = '*';
  if (o.condition === 'if-match-current') headers['If-Match'] = `"${current?.manifestDigest ?? stale}"`;
  if (o.condition === 'if-match-stale') headers['If-Match'] = `"${stale}"`;
  if (o.condition === 'if-none-match-current') headers['If-None-Match'] = `"${current?.manifestDigest ?? stale}"`;
  const qs = query.toString();
  const what = `PUT ${volume}:${tag} ${layer.name} ${JSON.stringify(o)}`;
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}${qs ? `?${qs}` : ''}`, { method: 'PUT', headers, body: layer.bytes });

  const preconditionHolds =
    o.condition === 'none' ||
    (o.condition === 'if-none-match-star' && current === undefined) ||
    (o.condition === 'if-match-current' && current !== undefined) ||
    (o.condition === 'if-none-match-current' && current === undefined);
  if (!preconditionHolds) {
    expectError(what, r, 412, 'PRECONDITION_FAILED');
    return;
  }
  if (o.digest === 'wrong') {
    expectError(what, r, 400, 'DIGEST_INVALID');
    return;
  }
  expectStatus(what, r, 201);
  const body = r.json<Record<string, unknown>>();
  const created = Date.parse(String(body.created));
  if (Number.isNaN(created)) fail(`${what}: created`, r);
  const snap: Snap = {
    manifestDigest: String(body.manifestDigest),
    layer,
    host: o.hostVia === 'none' ? null : host,
    labels: o.label === 'header' ? { env: 'prod', tier: 'db' } : o.label === 'query' ? { env: 'test' } : {},
    created,
    source: 'api',
  };
  checkSnapshotJson(what, body, volume, tag, snap);
  same(`${what}: Location`, header(r, 'location'), `/api/v1/volumes/${volume}/tags/${tag}`, r);
  same(`${what}: Docker-Content-Digest`, header(r, 'docker-content-digest'), snap.manifestDigest, r);
  tagsOf(s, v).set(tag, snap);
}

/** The manifest an OCI client pushes for `layer`, created at `created`: the same bytes each time. */
function ociManifest(layer: Layer, config: Buffer, created: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.volreg.volume.v1',
      config: { mediaType: 'application/vnd.volreg.volume.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: LAYER_MEDIA_TYPES[layer.compression], digest: layer.digest, size: layer.bytes.length }],
      annotations: { 'org.opencontainers.image.created': created },
    }),
  );
}

/** The same snapshot pushed as an OCI artifact through /v2 (blobs, then the manifest by tag). */
export async function ociPush(s: VolState, real: VolReal, v: string, tag: string, layerIndex: number, createdIndex: number): Promise<void> {
  const volume = volumeName(s, v);
  const layer = s.layers[layerIndex % s.layers.length]!;
  const created = OCI_CREATED[createdIndex % OCI_CREATED.length]!;
  const config = Buffer.from('{}');
  const what = `/v2 push ${volume}:${tag} ${layer.name} created ${created}`;
  for (const blob of [config, layer.bytes]) {
    const r = await request(real.url, `/v2/${volume}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: blob });
    expectStatus(`${what}: blob`, r, 201);
  }
  const manifest = ociManifest(layer, config, created);
  const r = await request(real.url, `/v2/${volume}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest });
  expectStatus(what, r, 201);
  same(`${what}: Docker-Content-Digest`, header(r, 'docker-content-digest'), sha256(manifest), r);
  tagsOf(s, v).set(tag, { manifestDigest: sha256(manifest), layer, host: null, labels: {}, created: Date.parse(created), source: 'oci' });
}

/**
 * A snapshot copied through /v2 as an OCI client copies it (skopeo copy): the manifest a tag
 * holds, read by tag and pushed as it is to another tag, of the same volume or another (its blobs
 * mounted there first). The copy is the same snapshot, described from its manifest and config.
 */
export async function ociCopy(s: VolState, real: VolReal, v: string, tag: string, toV: string, toTag: string): Promise<void> {
  const snap = tagsOf(s, v).get(tag);
  if (!snap) return;
  const from = volumeName(s, v);
  const to = volumeName(s, toV);
  const what = `/v2 copy ${from}:${tag} to ${to}:${toTag}`;
  const got = await request(real.url, `/v2/${from}/manifests/${tag}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  expectStatus(`${what}: read`, got, 200);
  same(`${what}: read digest`, header(got, 'docker-content-digest'), snap.manifestDigest, got);
  const manifest = got.json<{ config: { digest: string }; layers: Array<{ digest: string }> }>();
  if (from !== to) {
    for (const d of [manifest.config.digest, manifest.layers[0]!.digest]) {
      const r = await request(real.url, `/v2/${to}/blobs/uploads/?mount=${d}&from=${from}`, { method: 'POST' });
      expectStatus(`${what}: mount ${d}`, r, 201);
    }
  }
  const r = await request(real.url, `/v2/${to}/manifests/${toTag}`, { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: got.body });
  expectStatus(what, r, 201);
  // the same manifest is the same archive: what its push through /api/v1 found still holds
  tagsOf(s, toV).set(toTag, { ...snap });
}

// ---- deletes -------------------------------------------------------------------------------

export type DeleteCondition = 'none' | 'if-match-current' | 'if-match-stale';

export async function apiDelete(s: VolState, real: VolReal, v: string, tag: string, condition: DeleteCondition): Promise<void> {
  const volume = volumeName(s, v);
  const current = tagsOf(s, v).get(tag);
  const headers: Record<string, string> = {};
  if (condition === 'if-match-current') headers['If-Match'] = `"${current?.manifestDigest ?? 'sha256:' + '1'.repeat(64)}"`;
  if (condition === 'if-match-stale') headers['If-Match'] = `"sha256:${'2'.repeat(64)}"`;
  const what = `DELETE ${volume}:${tag} (${condition})`;
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'DELETE', headers });
  if (current === undefined) {
    // README: an If-Match on a tag holding nothing fails its precondition; without one, 404
    if (condition === 'none') expectError(what, r, 404, 'SNAPSHOT_UNKNOWN');
    else if (r.status !== 404 && r.status !== 412) fail(`${what}: expected 404 or 412`, r);
    return;
  }
  if (condition === 'if-match-stale') {
    expectError(what, r, 412, 'PRECONDITION_FAILED');
    return;
  }
  expectStatus(what, r, 200);
  same(`${what}: reply`, r.json(), { deleted: { volume, tag, manifestDigest: current.manifestDigest } }, r);
  tagsOf(s, v).delete(tag);
}

/** DELETE /v2/<v>/manifests/<tag>: the tag goes, its manifest stays. */
export async function ociDeleteTag(s: VolState, real: VolReal, v: string, tag: string): Promise<void> {
  const volume = volumeName(s, v);
  const r = await request(real.url, `/v2/${volume}/manifests/${tag}`, { method: 'DELETE' });
  const what = `/v2 DELETE ${volume}:${tag}`;
  if (!tagsOf(s, v).has(tag)) {
    if (r.status !== 404) fail(`${what}: expected 404`, r);
    return;
  }
  expectStatus(what, r, 202);
  tagsOf(s, v).delete(tag);
}

/** DELETE /v2/<v>/manifests/<digest> of the snapshot a tag holds: every tag on that manifest goes. */
export async function ociDeleteDigest(s: VolState, real: VolReal, v: string, tag: string): Promise<void> {
  const volume = volumeName(s, v);
  const snap = tagsOf(s, v).get(tag);
  if (!snap) return;
  const r = await request(real.url, `/v2/${volume}/manifests/${snap.manifestDigest}`, { method: 'DELETE' });
  expectStatus(`/v2 DELETE ${volume}@${snap.manifestDigest} (held by ${tag})`, r, 202);
  for (const [t, other] of tagsOf(s, v)) if (other.manifestDigest === snap.manifestDigest) tagsOf(s, v).delete(t);
}

// ---- races ---------------------------------------------------------------------------------

/** A push the model has not seen yet: the snapshot its 201 describes. */
async function rawPush(s: VolState, real: VolReal, v: string, tag: string, layer: Layer, host: string): Promise<Snap> {
  const volume = volumeName(s, v);
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'PUT', headers: { 'X-Volreg-Host': host }, body: layer.bytes });
  expectStatus(`racing PUT ${volume}:${tag}`, r, 201);
  const body = r.json<Record<string, unknown>>();
  return { manifestDigest: String(body.manifestDigest), layer, host, labels: {}, created: Date.parse(String(body.created)), source: 'api' };
}

/** Whichever snapshot the tag holds after the race, read back, and the model set to it. */
async function settle(s: VolState, real: VolReal, v: string, tag: string, candidates: Array<Snap | undefined>, what: string): Promise<void> {
  const volume = volumeName(s, v);
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}`);
  const held = r.status === 404 ? undefined : candidates.find((c) => c !== undefined && c.manifestDigest === r.json<{ manifestDigest: string }>().manifestDigest);
  if (r.status === 404 ? !candidates.includes(undefined) : held === undefined) fail(`${what}: the tag holds what no order of the requests leaves`, r, candidates.map((c) => c?.manifestDigest ?? null));
  if (held) tagsOf(s, v).set(tag, held);
  else tagsOf(s, v).delete(tag);
}

/**
 * A push and a delete of the same tag at once (README: the push racing the delete keeps its own
 * snapshot, the delete took effect before it; or the delete came after and removed it).
 */
export async function racePushDelete(s: VolState, real: VolReal, v: string, tag: string, layerIndex: number): Promise<void> {
  const volume = volumeName(s, v);
  const before = tagsOf(s, v).get(tag);
  const layer = s.layers[layerIndex % s.layers.length]!;
  const what = `race PUT and DELETE ${volume}:${tag}`;
  const [pushed, deleted] = await Promise.all([rawPush(s, real, v, tag, layer, 'race-01'), request(real.url, `/api/v1/volumes/${volume}/tags/${tag}`, { method: 'DELETE' })]);
  if (deleted.status === 404) {
    if (before !== undefined) fail(`${what}: the delete found nothing where ${before.manifestDigest} was`, deleted);
    expectError(what, deleted, 404, 'SNAPSHOT_UNKNOWN');
    return settle(s, real, v, tag, [pushed], what);
  }
  expectStatus(what, deleted, 200);
  const gone = deleted.json<{ deleted: { manifestDigest: string } }>().deleted.manifestDigest;
  if (gone === pushed.manifestDigest) return settle(s, real, v, tag, [undefined], `${what} (the delete after the push)`);
  if (gone !== before?.manifestDigest) fail(`${what}: the delete names ${gone}, neither the snapshot before nor the one pushed`, deleted);
  return settle(s, real, v, tag, [pushed], `${what} (the delete before the push)`);
}

/**
 * Two pushes to the same tag at once: the tag holds one of them, and its metadata is that
 * push's whole (host, source), whatever order their index writes landed in.
 */
export async function racePushPush(s: VolState, real: VolReal, v: string, tag: string, layerIndexes: [number, number]): Promise<void> {
  const volume = volumeName(s, v);
  const [a, b] = layerIndexes.map((i) => s.layers[i % s.layers.length]!) as [Layer, Layer];
  const pushed = await Promise.all([rawPush(s, real, v, tag, a, 'race-01'), rawPush(s, real, v, tag, b, 'race-02')]);
  await settle(s, real, v, tag, pushed, `race PUT and PUT ${volume}:${tag}`);
}

// ---- reads ---------------------------------------------------------------------------------

export async function getMeta(s: VolState, real: VolReal, v: string, tag: string): Promise<void> {
  const volume = volumeName(s, v);
  const snap = tagsOf(s, v).get(tag);
  const what = `GET ${volume}:${tag}`;
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}`);
  if (!snap) return expectError(what, r, 404, 'SNAPSHOT_UNKNOWN');
  expectStatus(what, r, 200);
  checkSnapshotJson(what, r.json(), volume, tag, snap);
}

export type RangeKind = 'none' | 'prefix' | 'suffix' | 'open' | 'past-end' | 'if-range-other' | 'if-range-same' | 'several' | 'if-none-match' | 'if-none-match-weak' | 'head' | 'head-range';

export async function getContent(s: VolState, real: VolReal, v: string, tag: string, range: RangeKind, at: number): Promise<void> {
  const volume = volumeName(s, v);
  const snap = tagsOf(s, v).get(tag);
  const what = `GET ${volume}:${tag}/content (${range} ${at})`;
  const size = snap?.layer.bytes.length ?? 1;
  const a = at % size;
  const headers: Record<string, string> = {};
  if (range === 'prefix') headers.Range = `bytes=0-${a}`;
  if (range === 'suffix') headers.Range = `bytes=-${a + 1}`;
  if (range === 'open') headers.Range = `bytes=${a}-`;
  if (range === 'past-end') headers.Range = `bytes=${size}-`;
  if (range === 'if-range-other') {
    headers.Range = `bytes=${a}-`;
    headers['If-Range'] = `"sha256:${'3'.repeat(64)}"`;
  }
  if (range === 'if-range-same') {
    headers.Range = `bytes=${a}-`;
    headers['If-Range'] = `"${snap?.layer.digest ?? ''}"`;
  }
  if (range === 'several') headers.Range = `bytes=0-0,${a}-`;
  if (range === 'if-none-match') headers['If-None-Match'] = `"${snap?.layer.digest ?? ''}"`;
  if (range === 'if-none-match-weak') headers['If-None-Match'] = `"sha256:${'4'.repeat(64)}", W/"${snap?.layer.digest ?? ''}"`;
  if (range === 'head-range') headers.Range = `bytes=${a}-`;
  const method = range === 'head' || range === 'head-range' ? 'HEAD' : 'GET';
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}/content`, { method, headers });
  if (!snap && method === 'HEAD') return expectStatus(what, r, 404);
  if (!snap) return expectError(what, r, 404, 'SNAPSHOT_UNKNOWN');
  const bytes = snap.layer.bytes;
  same(`${what}: ETag`, header(r, 'etag'), `"${snap.layer.digest}"`, r);
  same(`${what}: Docker-Content-Digest`, header(r, 'docker-content-digest'), snap.layer.digest, r);
  same(`${what}: X-Volreg-Manifest-Digest`, header(r, 'x-volreg-manifest-digest'), snap.manifestDigest, r);
  same(`${what}: Content-Disposition`, header(r, 'content-disposition'), `attachment; filename="${fileName(volume, tag, snap.layer.compression)}"`, r);
  if (range === 'if-none-match' || range === 'if-none-match-weak') {
    expectStatus(what, r, 304);
    if (r.body.length !== 0) fail(`${what}: a 304 with a body`, r);
    return;
  }
  let want: { status: number; start: number; end: number };
  if (range === 'none' || range === 'if-range-other' || range === 'several' || range === 'head') want = { status: 200, start: 0, end: size - 1 };
  else if (range === 'prefix') want = { status: 206, start: 0, end: a };
  else if (range === 'open' || range === 'if-range-same' || range === 'head-range') want = { status: 206, start: a, end: size - 1 };
  else if (range === 'suffix') want = { status: 206, start: size - (a + 1), end: size - 1 };
  else {
    expectStatus(what, r, 416);
    same(`${what}: Content-Range`, header(r, 'content-range'), `bytes */${size}`, r);
    return;
  }
  expectStatus(what, r, want.status);
  same(`${what}: Content-Length`, header(r, 'content-length'), String(want.end - want.start + 1), r);
  if (method === 'HEAD') {
    if (r.body.length !== 0) fail(`${what}: HEAD with a body`, r);
  } else if (!r.body.equals(bytes.subarray(want.start, want.end + 1))) fail(`${what}: body differs from bytes ${want.start}-${want.end} as pushed`, undefined);
  if (want.status === 206) same(`${what}: Content-Range`, header(r, 'content-range'), `bytes ${want.start}-${want.end}/${size}`, r);
}

export async function getSha256(s: VolState, real: VolReal, v: string, tag: string): Promise<void> {
  const volume = volumeName(s, v);
  const snap = tagsOf(s, v).get(tag);
  const what = `GET ${volume}:${tag}/content.sha256`;
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}/content.sha256`);
  if (!snap) return expectError(what, r, 404, 'SNAPSHOT_UNKNOWN');
  expectStatus(what, r, 200);
  same(what, r.body.toString('utf8'), `${snap.layer.digest.slice('sha256:'.length)}  ${fileName(volume, tag, snap.layer.compression)}\n`, r);
}

export async function verify(s: VolState, real: VolReal, v: string, tag: string): Promise<void> {
  const volume = volumeName(s, v);
  const snap = tagsOf(s, v).get(tag);
  const what = `POST ${volume}:${tag}/verify`;
  const r = await request(real.url, `/api/v1/volumes/${volume}/tags/${tag}/verify`, { method: 'POST' });
  if (!snap) return expectError(what, r, 404, 'SNAPSHOT_UNKNOWN');
  expectStatus(what, r, 200);
  const body = r.json<Record<string, unknown>>();
  checkSnapshotJson(what, body, volume, tag, snap);
  same(`${what}: ok`, body.ok, true, r);
}

// ---- listings ------------------------------------------------------------------------------

/** A change made between two pages of a walk. */
export type Between = { kind: 'push'; v: number; tag: number; layer: number } | { kind: 'delete'; v: number; tag: number } | { kind: 'oci-push'; v: number; tag: number; layer: number; created: number };

async function applyBetween(s: VolState, real: VolReal, b: Between): Promise<[string, string]> {
  const v = VOLUMES[b.v % VOLUMES.length]!;
  const tag = TAGS[b.tag % TAGS.length]!;
  if (b.kind === 'push') await apiPush(s, real, v, tag, { layer: b.layer, hostVia: 'header', host: 0, label: 'none', digest: 'none', condition: 'none' });
  else if (b.kind === 'oci-push') await ociPush(s, real, v, tag, b.layer, b.created);
  else await apiDelete(s, real, v, tag, 'none');
  return [v, tag];
}

function nextOf(what: string, r: Reply, body: { next?: unknown }): string | undefined {
  const link = header(r, 'link');
  if (link === undefined) {
    same(`${what}: next without Link`, body.next, null, r);
    return undefined;
  }
  const m = /^<(\/[^>]*)>; rel="next"$/.exec(link);
  if (!m) fail(`${what}: Link ${link}`, r);
  if (typeof body.next !== 'string' || !new URL(m[1]!, 'http://x').searchParams.getAll('after').includes(body.next)) fail(`${what}: next ${JSON.stringify(body.next)} is not the Link's after`, r);
  return m[1];
}

export interface TagFilter {
  host?: number;
  /** index into the candidate bounds (snapshot times, ±1 ms), or undefined */
  since?: number;
  until?: number;
  /** send the bounds as epoch seconds rather than ISO 8601 */
  epochSeconds: boolean;
  /** start this many in (`offset`), on a walk with no changes between its pages */
  offset?: number;
}

function bounds(s: VolState, v: string): number[] {
  const times = [...tagsOf(s, v).values()].flatMap((x) => [x.created - 1, x.created, x.created + 1]);
  return [...new Set([Date.parse('2019-01-01T00:00:00Z'), ...times])].sort((a, b) => a - b);
}

/** A volume's snapshots, walked page by page (changes made between pages), checked against the model. */
export async function walkTags(s: VolState, real: VolReal, v: string, limit: number, f: TagFilter, between: Between[]): Promise<void> {
  const volume = volumeName(s, v);
  const query = new URLSearchParams({ limit: String(limit) });
  const b = bounds(s, v);
  const host = f.host === undefined ? undefined : HOSTS[f.host % HOSTS.length]!;
  let since = f.since === undefined ? undefined : b[f.since % b.length]!;
  let until = f.until === undefined ? undefined : b[f.until % b.length]!;
  const asParam = (ms: number): string => (f.epochSeconds ? String(Math.floor(ms / 1000)) : new Date(ms).toISOString());
  if (f.epochSeconds) {
    // what the server reads of them: whole seconds
    since = since === undefined ? undefined : Math.floor(since / 1000) * 1000;
    until = until === undefined ? undefined : Math.floor(until / 1000) * 1000;
  }
  const offset = between.length === 0 ? f.offset : undefined;
  if (offset !== undefined) query.set('offset', String(offset));
  if (host !== undefined) query.set('host', host);
  if (since !== undefined) query.set('since', asParam(since));
  if (until !== undefined) query.set('until', asParam(until));
  const matches = (x: Listed): boolean => (host === undefined || x.snap.host === host) && (since === undefined || x.created >= since) && (until === undefined || x.created < until);
  const atStart = listedOf(tagsOf(s, v)).filter(matches);
  const touched = new Set<string>();
  const seen: Array<{ tag: string; created: number; body: Record<string, unknown> }> = [];
  let path: string | undefined = `/api/v1/volumes/${volume}/tags?${query.toString()}`;
  const what = `walk ${path}`;
  for (let page = 0; path !== undefined; page++) {
    if (page > 60) fail(`${what}: the pages do not end`, undefined);
    const r = await request(real.url, path);
    expectStatus(`${what} page ${page}`, r, 200);
    const body = r.json<{ total: number; limit: number; snapshots: Array<Record<string, unknown>>; next?: unknown }>();
    if (body.snapshots.length > limit) fail(`${what} page ${page}: more than ${limit}`, r);
    if (page === 0) same(`${what}: total`, body.total, atStart.length, r);
    for (const x of body.snapshots) seen.push({ tag: String(x.tag), created: Date.parse(String(x.created)), body: x });
    path = nextOf(`${what} page ${page}`, r, body);
    if (path !== undefined && between.length > 0 && page < between.length) {
      const [bv, btag] = await applyBetween(s, real, between[page]!);
      if (bv === v) touched.add(btag);
    }
  }
  // one walk is one order: every page starts after the last entry of the one before
  for (let i = 1; i < seen.length; i++) {
    if (snapshotOrder(seen[i - 1]!, seen[i]!) >= 0) fail(`${what}: ${seen[i - 1]!.tag} then ${seen[i]!.tag} is not newest first, each once`, undefined, seen.map((x) => x.tag));
  }
  const seenTags = seen.map((x) => x.tag);
  for (const x of atStart.slice(offset ?? 0)) {
    if (touched.has(x.tag)) continue;
    if (!seenTags.includes(x.tag)) fail(`${what}: ${x.tag}, there throughout, was not listed`, undefined, { seen: seenTags, between });
  }
  const atEnd = new Map(listedOf(tagsOf(s, v)).map((x) => [x.tag, x]));
  for (const x of seen) {
    if (touched.has(x.tag)) continue;
    const expected = atStart.find((y) => y.tag === x.tag);
    if (!expected) fail(`${what}: ${x.tag} listed but not in the model (or not matching the filter)`, undefined, { seen: seenTags, expected: atStart.map((y) => y.tag) });
    checkSnapshotJson(`${what}: ${x.tag}`, x.body, volume, x.tag, atEnd.get(x.tag)!.snap);
  }
  if (between.length === 0) same(`${what}: the whole walk`, seenTags, atStart.slice(offset ?? 0).map((x) => x.tag));
}

/** The volume list, walked page by page, this run's volumes checked against the model. */
export async function walkVolumes(s: VolState, real: VolReal, limit: number, between: Between[]): Promise<void> {
  const summary = (v: string): Record<string, unknown> | null => {
    const listed = listedOf(tagsOf(s, v));
    if (listed.length === 0) return null;
    const layers = new Map(listed.map((x) => [x.snap.layer.digest, x.snap.layer.bytes.length]));
    return {
      volume: volumeName(s, v),
      snapshots: listed.length,
      totalSize: listed.reduce((n, x) => n + x.snap.layer.bytes.length, 0),
      storedSize: [...layers.values()].reduce((n, x) => n + x, 0),
      latest: { tag: listed[0]!.tag, manifestDigest: listed[0]!.snap.manifestDigest },
    };
  };
  const atStart = new Map(VOLUMES.map((v) => [volumeName(s, v), summary(v)]));
  const held = [...atStart.values()].filter((x) => x !== null).length;
  const touched = new Set<string>();
  const seen: string[] = [];
  let path: string | undefined = `/api/v1/volumes?limit=${limit}`;
  const what = `walk ${path}`;
  for (let page = 0; path !== undefined; page++) {
    if (page > 200) fail(`${what}: the pages do not end`, undefined);
    const r = await request(real.url, path);
    expectStatus(`${what} page ${page}`, r, 200);
    const body = r.json<{ total: number; volumes: Array<Record<string, unknown> & { volume: string; latest: Record<string, unknown> }>; next?: unknown }>();
    if (body.volumes.length > limit) fail(`${what} page ${page}: more than ${limit}`, r);
    if (page === 0) same(`${what}: total`, body.total, s.foreignVolumes + held, r);
    for (const x of body.volumes) {
      seen.push(x.volume);
      const expected = atStart.get(x.volume);
      if (expected === undefined || touched.has(x.volume)) continue;
      if (expected === null) fail(`${what}: ${x.volume} holds no snapshot but is listed`, r);
      same(`${what}: ${x.volume}`, { volume: x.volume, snapshots: x.snapshots, totalSize: x.totalSize, storedSize: x.storedSize, latest: { tag: x.latest.tag, manifestDigest: x.latest.manifestDigest } }, expected, r);
    }
    path = nextOf(`${what} page ${page}`, r, body);
    if (path !== undefined && page < between.length) {
      const [bv] = await applyBetween(s, real, between[page]!);
      touched.add(volumeName(s, bv));
    }
  }
  for (let i = 1; i < seen.length; i++) if (byteOrder(seen[i - 1]!, seen[i]!) >= 0) fail(`${what}: ${seen[i - 1]} then ${seen[i]}: not by name, each once`, undefined);
  for (const [name, expected] of atStart) {
    if (expected !== null && !touched.has(name) && !seen.includes(name)) fail(`${what}: ${name}, there throughout, was not listed`, undefined, { between });
  }
}

/** The volume list's volumes now (to count those of other runs). */
export async function allVolumeNames(url: string): Promise<string[]> {
  const names: string[] = [];
  let path: string | undefined = '/api/v1/volumes?limit=1000';
  while (path !== undefined) {
    const r = await request(url, path);
    if (r.status !== 200) throw new Error(`volume list: ${r.status} ${r.body.toString('utf8')}`);
    const body = r.json<{ volumes: Array<{ volume: string }>; next: string | null }>();
    names.push(...body.volumes.map((x) => x.volume));
    path = body.next === null ? undefined : `/api/v1/volumes?limit=1000&after=${encodeURIComponent(body.next)}`;
  }
  return names;
}

// ---- the commands ---------------------------------------------------------------------------

const always = (): boolean => true;

function cmd(label: string, run: (s: VolState, real: VolReal) => Promise<void>): Cmd {
  return { check: always, run, toString: () => label };
}

const vArb = fc.integer({ min: 0, max: VOLUMES.length - 1 });
const tagArb = fc.integer({ min: 0, max: TAGS.length - 1 });
const layerArb = fc.nat(5);
const betweenArb: fc.Arbitrary<Between> = fc.oneof(
  fc.record({ kind: fc.constant('push' as const), v: vArb, tag: tagArb, layer: layerArb }),
  fc.record({ kind: fc.constant('delete' as const), v: vArb, tag: tagArb }),
  fc.record({ kind: fc.constant('oci-push' as const), v: vArb, tag: tagArb, layer: layerArb, created: fc.nat(2) }),
);
const V = (i: number): string => VOLUMES[i]!;
const T = (i: number): string => TAGS[i]!;

export function volumeCommandArbs(): Array<fc.Arbitrary<Cmd>> {
  return [
    fc
      .tuple(
        vArb,
        tagArb,
        fc.record({
          layer: layerArb,
          hostVia: fc.constantFrom<HostVia>('none', 'header', 'query'),
          host: fc.nat(1),
          label: fc.constantFrom('none', 'query', 'header' as const),
          digest: fc.constantFrom<DigestVia>('none', 'none', 'query', 'header', 'wrong'),
          condition: fc.constantFrom<PutCondition>('none', 'none', 'none', 'if-none-match-star', 'if-match-current', 'if-match-stale', 'if-none-match-current'),
        }),
      )
      .map(([v, t, o]) => cmd(`Push(${V(v)}:${T(t)} ${JSON.stringify(o)})`, (s, real) => apiPush(s, real, V(v), T(t), o))),
    fc.tuple(vArb, tagArb, layerArb, fc.nat(2)).map(([v, t, l, c]) => cmd(`OciPush(${V(v)}:${T(t)} layer ${l} created ${c})`, (s, real) => ociPush(s, real, V(v), T(t), l, c))),
    fc.tuple(vArb, tagArb, fc.constantFrom<DeleteCondition>('none', 'if-match-current', 'if-match-stale')).map(([v, t, c]) => cmd(`Delete(${V(v)}:${T(t)} ${c})`, (s, real) => apiDelete(s, real, V(v), T(t), c))),
    fc.tuple(vArb, tagArb, vArb, tagArb).map(([v, t, toV, toT]) => cmd(`OciCopy(${V(v)}:${T(t)} to ${V(toV)}:${T(toT)})`, (s, real) => ociCopy(s, real, V(v), T(t), V(toV), T(toT)))),
    fc.tuple(vArb, tagArb, layerArb).map(([v, t, l]) => cmd(`RacePushDelete(${V(v)}:${T(t)} layer ${l})`, (s, real) => racePushDelete(s, real, V(v), T(t), l))),
    fc.tuple(vArb, tagArb, layerArb, layerArb).map(([v, t, l1, l2]) => cmd(`RacePushPush(${V(v)}:${T(t)} layers ${l1} ${l2})`, (s, real) => racePushPush(s, real, V(v), T(t), [l1, l2]))),
    fc.tuple(vArb, tagArb).map(([v, t]) => cmd(`OciDeleteTag(${V(v)}:${T(t)})`, (s, real) => ociDeleteTag(s, real, V(v), T(t)))),
    fc.tuple(vArb, tagArb).map(([v, t]) => cmd(`OciDeleteDigest(${V(v)}:${T(t)})`, (s, real) => ociDeleteDigest(s, real, V(v), T(t)))),
    fc.tuple(vArb, tagArb).map(([v, t]) => cmd(`Get(${V(v)}:${T(t)})`, (s, real) => getMeta(s, real, V(v), T(t)))),
    fc
      .tuple(vArb, tagArb, fc.constantFrom<RangeKind>('none', 'prefix', 'suffix', 'open', 'past-end', 'if-range-other', 'if-range-same', 'several', 'if-none-match', 'if-none-match-weak', 'head', 'head-range'), fc.nat(4000))
      .map(([v, t, k, at]) => cmd(`Content(${V(v)}:${T(t)} ${k} ${at})`, (s, real) => getContent(s, real, V(v), T(t), k, at))),
    fc.tuple(vArb, tagArb).map(([v, t]) => cmd(`Sha256(${V(v)}:${T(t)})`, (s, real) => getSha256(s, real, V(v), T(t)))),
    fc.tuple(vArb, tagArb).map(([v, t]) => cmd(`Verify(${V(v)}:${T(t)})`, (s, real) => verify(s, real, V(v), T(t)))),
    fc
      .tuple(
        vArb,
        fc.integer({ min: 1, max: 4 }),
        fc.record({
          host: fc.option(fc.nat(1), { nil: undefined }),
          since: fc.option(fc.nat(40), { nil: undefined }),
          until: fc.option(fc.nat(40), { nil: undefined }),
          epochSeconds: fc.boolean(),
          offset: fc.option(fc.nat(4), { nil: undefined }),
        }),
        fc.array(betweenArb, { maxLength: 3 }),
      )
      .map(([v, limit, f, between]) => cmd(`WalkTags(${V(v)} limit ${limit} ${JSON.stringify(f)} between ${JSON.stringify(between)})`, (s, real) => walkTags(s, real, V(v), limit, f, between))),
    fc
      .tuple(fc.integer({ min: 1, max: 3 }), fc.array(betweenArb, { maxLength: 3 }))
      .map(([limit, between]) => cmd(`WalkVolumes(limit ${limit} between ${JSON.stringify(between)})`, (s, real) => walkVolumes(s, real, limit, between))),
  ];
}

/** Every read of every volume and tag, then the listings whole: the model and the server agree on all of it. */
export function checkAll(): Cmd {
  return cmd('CheckAll', async (s, real) => {
    for (const v of VOLUMES) {
      for (const t of TAGS) {
        await getMeta(s, real, v, t);
        await getContent(s, real, v, t, 'none', 0);
      }
      await walkTags(s, real, v, 1000, { epochSeconds: false }, []);
    }
    await walkVolumes(s, real, 1000, []);
  });
}
