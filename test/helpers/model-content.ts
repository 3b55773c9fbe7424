import { createHash } from 'node:crypto';
import { blobOf, descriptor, MT, rsaSigner, sha256, signSchema1, type Blob, type Built, type Schema1Doc } from './manifest-fixtures.ts';

/**
 * A fixed catalogue of blobs and manifests of every media type for the model-based and fuzz
 * tests of /v2. Everything is built from constants (no random bytes), so a fast-check seed names
 * one exact sequence of requests; only the RSA key of the signed schema 1 manifest is made per
 * process, and its signature is deterministic (PKCS#1 v1.5) and outside the digest anyway.
 */

export const ARTIFACT = {
  sbom: 'application/vnd.example.sbom.v1',
  sig: 'application/vnd.example.sig.v1',
  att: 'application/vnd.example.att.v1+json',
} as const;

export type BlobName = 'cfgOci0' | 'cfgOci1' | 'cfgDocker' | 'empty' | 'zero' | 'l0' | 'l1' | 'l2' | 'l3';

function json(doc: unknown): Blob {
  return blobOf(JSON.stringify(doc));
}

function layer(seed: string, size: number): Blob {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let at = 0; at < size; at += block.length) {
    block.copy(out, at);
    block = createHash('sha256').update(block).digest();
  }
  return blobOf(out);
}

export const BLOBS: Readonly<Record<BlobName, Blob>> = {
  cfgOci0: json({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, model: 0 }),
  cfgOci1: json({ architecture: 'arm64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, model: 1 }),
  cfgDocker: json({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, docker: true }),
  empty: blobOf('{}'),
  zero: blobOf(Buffer.alloc(0)),
  l0: layer('l0', 100),
  l1: layer('l1', 1),
  l2: layer('l2', 3000),
  l3: layer('l3', 257),
};
export const BLOB_NAMES = Object.keys(BLOBS) as BlobName[];

export type ManifestName =
  | 'ociA'
  | 'ociB'
  | 'dockA'
  | 'dockB'
  | 'ociIdx'
  | 'ociIdxArm'
  | 'dockList'
  | 'mixedIdx'
  | 's1u'
  | 's1s'
  | 'sbomA'
  | 'sigA'
  | 'attIdx'
  | 'refDock'
  | 'refGone';

/** What the model must know of a manifest: its bytes as pushed, and what it references. */
export interface ModelManifest extends Built {
  name: ManifestName;
  schemaVersion: 1 | 2;
  kind: 'image' | 'list';
  blobs: BlobName[];
  children: ManifestName[];
  /** the linux/amd64 entry of a list */
  amd64?: ManifestName;
  subject?: string;
  /** what the referrers API reports: artifactType, or an image's config media type */
  artifactType?: string;
}

function build(mediaType: string, doc: unknown, indent = 0): Built {
  const bytes = Buffer.from(JSON.stringify(doc, null, indent));
  return { bytes, digest: sha256(bytes), mediaType, size: bytes.length };
}

function v1Id(seed: string): string {
  return createHash('sha256').update(`v1:${seed}`).digest('hex');
}

function schema1Doc(name: string, layers: BlobName[]): Schema1Doc {
  const ids = layers.map((l) => v1Id(`${name}:${l}`));
  return {
    schemaVersion: 1,
    name: 'model/any',
    tag: 'any',
    architecture: 'amd64',
    fsLayers: layers.map((l) => ({ blobSum: BLOBS[l].digest })),
    history: ids.map((id, i) => ({ v1Compatibility: JSON.stringify({ id, ...(ids[i + 1] ? { parent: ids[i + 1] } : {}), created: '2024-01-01T00:00:00Z' }) })),
  };
}

const AMD64 = { os: 'linux', architecture: 'amd64' };
const ARM64 = { os: 'linux', architecture: 'arm64' };

function catalogue(): Record<ManifestName, ModelManifest> {
  const out = {} as Record<ManifestName, ModelManifest>;
  const add = (m: Omit<ModelManifest, 'children'> & { children?: ManifestName[] }): ModelManifest => (out[m.name] = { children: [], ...m });
  const image = (name: ManifestName, cfg: BlobName, layers: BlobName[], extra: { artifactType?: string; subject?: ModelManifest; cfgType?: string } = {}) => {
    const cfgType = extra.cfgType ?? MT.ociConfig;
    const b = build(MT.ociManifest, {
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      ...(extra.artifactType ? { artifactType: extra.artifactType } : {}),
      config: descriptor(cfgType, BLOBS[cfg]),
      layers: layers.map((l) => descriptor(MT.ociLayer, BLOBS[l])),
      ...(extra.subject ? { subject: descriptor(extra.subject.mediaType, extra.subject) } : {}),
    });
    return add({ ...b, name, schemaVersion: 2, kind: 'image', blobs: [cfg, ...layers], ...(extra.subject ? { subject: extra.subject.digest } : {}), artifactType: extra.artifactType ?? cfgType });
  };
  const docker = (name: ManifestName, layers: BlobName[]) => {
    const b = build(
      MT.dockerManifest,
      { schemaVersion: 2, mediaType: MT.dockerManifest, config: descriptor(MT.dockerConfig, BLOBS.cfgDocker), layers: layers.map((l) => descriptor(MT.dockerLayer, BLOBS[l])) },
      3,
    );
    return add({ ...b, name, schemaVersion: 2, kind: 'image', blobs: ['cfgDocker', ...layers], artifactType: MT.dockerConfig });
  };
  const list = (name: ManifestName, mediaType: string, entries: Array<[ManifestModelRef, typeof AMD64]>, extra: { artifactType?: string; subject?: ModelManifest } = {}) => {
    const b = build(mediaType, {
      schemaVersion: 2,
      mediaType,
      ...(extra.artifactType ? { artifactType: extra.artifactType } : {}),
      manifests: entries.map(([m, platform]) => descriptor(m.mediaType, m, { platform })),
      ...(extra.subject ? { subject: descriptor(extra.subject.mediaType, extra.subject) } : {}),
    });
    const amd64 = entries.find(([, p]) => p === AMD64)?.[0].name;
    return add({
      ...b,
      name,
      schemaVersion: 2,
      kind: 'list',
      blobs: [],
      children: entries.map(([m]) => m.name),
      ...(amd64 ? { amd64 } : {}),
      ...(extra.subject ? { subject: extra.subject.digest } : {}),
      ...(extra.artifactType ? { artifactType: extra.artifactType } : {}),
    });
  };
  type ManifestModelRef = ModelManifest;

  const ociA = image('ociA', 'cfgOci0', ['l0']);
  const ociB = image('ociB', 'cfgOci1', ['l1', 'l2']);
  const dockA = docker('dockA', ['l0']);
  const dockB = docker('dockB', ['l3', 'zero']);
  list('ociIdx', MT.ociIndex, [
    [ociA, AMD64],
    [ociB, ARM64],
  ]);
  list('ociIdxArm', MT.ociIndex, [[ociB, ARM64]]);
  list('dockList', MT.dockerList, [
    [dockA, AMD64],
    [dockB, ARM64],
  ]);
  list('mixedIdx', MT.ociIndex, [[dockA, AMD64]]);
  const s1u = build(MT.schema1, schema1Doc('s1u', ['l0', 'l1']), 3);
  add({ ...s1u, name: 's1u', schemaVersion: 1, kind: 'image', blobs: ['l0', 'l1'] });
  const s1s = signSchema1(schema1Doc('s1s', ['l2']), [rsaSigner()]);
  add({ bytes: s1s.bytes, digest: s1s.payloadDigest, mediaType: MT.schema1Signed, size: s1s.bytes.length, name: 's1s', schemaVersion: 1, kind: 'image', blobs: ['l2'] });
  image('sbomA', 'empty', ['l3'], { artifactType: ARTIFACT.sbom, subject: ociA, cfgType: MT.ociEmpty });
  image('sigA', 'empty', ['empty'], { artifactType: ARTIFACT.sig, subject: ociA, cfgType: MT.ociEmpty });
  list('attIdx', MT.ociIndex, [], { artifactType: ARTIFACT.att, subject: ociB });
  image('refDock', 'cfgOci1', ['l1'], { subject: dockA });
  // a referrer whose subject was never pushed anywhere (OCI 1.1 allows that)
  const ghost = build(MT.ociManifest, { schemaVersion: 2, mediaType: MT.ociManifest, config: descriptor(MT.ociEmpty, BLOBS.empty), layers: [] });
  image('refGone', 'empty', ['l1'], { artifactType: ARTIFACT.sbom, subject: { ...ghost, name: 'ociA', schemaVersion: 2, kind: 'image', blobs: [], children: [] }, cfgType: MT.ociEmpty });
  return out;
}

export const MANIFESTS: Readonly<Record<ManifestName, ModelManifest>> = catalogue();
export const MANIFEST_NAMES = Object.keys(MANIFESTS) as ManifestName[];

export function manifestByDigest(digest: string): ModelManifest | undefined {
  return MANIFEST_NAMES.map((n) => MANIFESTS[n]).find((m) => m.digest === digest);
}
