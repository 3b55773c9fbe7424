/**
 * Small, valid image data for the metadata scenarios. Every manifest references blobs that
 * the scenario uploads first: one real tiny tar.gz layer, one OCI config, and one Docker
 * config per Docker schema-2 manifest. Digests differ per manifest through an OCI
 * annotation (OCI image manifests) or a config label (Docker schema 2, which has no
 * annotations), so each PUT stores a new manifest.
 *
 * Docker schema 1 is left out of the timed set: distribution 2.8 accepts only signed
 * schema-1 manifests, and signing (libtrust JWS) is beside the point of a throughput figure.
 */
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import tar from 'tar-stream';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** What a schema-2-capable client sends. */
export const ACCEPT_SCHEMA2 = [MEDIA.ociManifest, MEDIA.dockerManifest, MEDIA.ociIndex, MEDIA.dockerList].join(', ');

export interface Blob {
  bytes: Buffer;
  digest: string;
}

export interface Manifest {
  mediaType: string;
  bytes: Buffer;
  digest: string;
  /** blobs this manifest references */
  references: string[];
}

export interface ManifestSet {
  /** every blob any manifest references, to upload before the first PUT */
  blobs: Blob[];
  manifests: Manifest[];
}

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function blob(bytes: Buffer): Blob {
  return { bytes, digest: sha256(bytes) };
}

async function tinyTar(): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => {
    if (Buffer.isBuffer(c)) chunks.push(c);
  });
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  pack.entry({ name: 'hello.txt', mtime: new Date('2024-01-01T00:00:00Z'), mode: 0o644 }, 'hello from the volreg benchmark\n');
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/**
 * `count` manifests, alternating OCI image manifest and Docker schema 2, numbered from
 * `offset` (sets with different offsets share no manifest digest).
 */
export async function buildManifestSet(count: number, offset = 0): Promise<ManifestSet> {
  const layerTar = await tinyTar();
  const diffId = sha256(layerTar);
  const layer = blob(zlib.gzipSync(layerTar, { level: 9 }));
  const rootfs = { type: 'layers', diff_ids: [diffId] };
  const ociConfig = blob(json({ architecture: 'amd64', os: 'linux', config: {}, rootfs }));
  const blobs: Blob[] = [layer, ociConfig];
  const manifests: Manifest[] = [];
  for (let i = 0; i < count; i++) {
    const seq = String(offset + i);
    if (i % 2 === 0) {
      const doc = {
        schemaVersion: 2,
        mediaType: MEDIA.ociManifest,
        config: { mediaType: MEDIA.ociConfig, size: ociConfig.bytes.length, digest: ociConfig.digest },
        layers: [{ mediaType: MEDIA.ociLayerGzip, size: layer.bytes.length, digest: layer.digest }],
        annotations: { 'io.volreg.bench.seq': seq },
      };
      const bytes = json(doc);
      manifests.push({ mediaType: MEDIA.ociManifest, bytes, digest: sha256(bytes), references: [ociConfig.digest, layer.digest] });
    } else {
      const config = blob(json({ architecture: 'amd64', os: 'linux', config: { Labels: { 'io.volreg.bench.seq': seq } }, rootfs }));
      blobs.push(config);
      const doc = {
        schemaVersion: 2,
        mediaType: MEDIA.dockerManifest,
        config: { mediaType: MEDIA.dockerConfig, size: config.bytes.length, digest: config.digest },
        layers: [{ mediaType: MEDIA.dockerLayerGzip, size: layer.bytes.length, digest: layer.digest }],
      };
      const bytes = json(doc);
      manifests.push({ mediaType: MEDIA.dockerManifest, bytes, digest: sha256(bytes), references: [config.digest, layer.digest] });
    }
  }
  return { blobs, manifests };
}

/**
 * Checks the set before anything is timed: digests unique, every reference among the blobs
 * to upload, each manifest's descriptors matching those blobs' sizes. Returns problems found.
 */
export function checkManifestSet(set: ManifestSet): string[] {
  const problems: string[] = [];
  const sizes = new Map(set.blobs.map((b) => [b.digest, b.bytes.length]));
  const seen = new Set<string>();
  for (const m of set.manifests) {
    if (seen.has(m.digest)) problems.push(`duplicate manifest digest ${m.digest}`);
    seen.add(m.digest);
    if (sha256(m.bytes) !== m.digest) problems.push(`manifest digest mismatch ${m.digest}`);
    const doc = JSON.parse(m.bytes.toString('utf8')) as {
      schemaVersion: number;
      mediaType: string;
      config: { digest: string; size: number };
      layers: { digest: string; size: number }[];
    };
    if (doc.schemaVersion !== 2 || doc.mediaType !== m.mediaType) problems.push(`manifest ${m.digest}: wrong schemaVersion/mediaType`);
    for (const d of [doc.config, ...doc.layers]) {
      const size = sizes.get(d.digest);
      if (size === undefined) problems.push(`manifest ${m.digest} references ${d.digest}, which is not uploaded`);
      else if (size !== d.size) problems.push(`manifest ${m.digest}: descriptor size ${d.size} != blob size ${size} for ${d.digest}`);
    }
  }
  return problems;
}
