import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

/**
 * Builders for manifests of every media type volreg handles, made from real bytes, for the
 * manifest, tag and HTTP tests. Signed schema 1 manifests are signed the way libtrust (and so
 * Docker and skopeo) sign them: a pretty JWS whose protected header carries formatLength and
 * formatTail.
 */

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  schema1: 'application/vnd.docker.distribution.manifest.v1+json',
  schema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

export function sha256(bytes: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export interface Blob {
  bytes: Buffer;
  digest: string;
  size: number;
}

export function blobOf(bytes: Buffer | string): Blob {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  return { bytes: b, digest: sha256(b), size: b.length };
}

export function randomBlob(size = 64): Blob {
  return blobOf(randomBytes(size));
}

export function configBlob(extra: Record<string, unknown> = {}): Blob {
  return blobOf(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex'), ...extra }));
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
  artifactType?: string;
  urls?: string[];
}

export function descriptor(mediaType: string, blob: { digest: string; size: number }, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType, digest: blob.digest, size: blob.size, ...extra };
}

export interface Built {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  size: number;
}

function built(mediaType: string, doc: unknown, indent = 0): Built {
  const bytes = Buffer.from(JSON.stringify(doc, null, indent));
  return { bytes, digest: sha256(bytes), mediaType, size: bytes.length };
}

export function ociManifest(opts: {
  config: Blob;
  layers: Blob[];
  configMediaType?: string;
  subject?: Built;
  artifactType?: string;
  annotations?: Record<string, string>;
  withMediaType?: boolean;
  layerExtra?: Partial<Descriptor>;
}): Built {
  return built(MT.ociManifest, {
    schemaVersion: 2,
    ...(opts.withMediaType === false ? {} : { mediaType: MT.ociManifest }),
    ...(opts.artifactType ? { artifactType: opts.artifactType } : {}),
    config: descriptor(opts.configMediaType ?? MT.ociConfig, opts.config),
    layers: opts.layers.map((l) => descriptor(MT.ociLayer, l, opts.layerExtra)),
    ...(opts.subject ? { subject: descriptor(opts.subject.mediaType, opts.subject) } : {}),
    ...(opts.annotations ? { annotations: opts.annotations } : {}),
  });
}

export function dockerManifest(opts: { config: Blob; layers: Blob[] }): Built {
  return built(
    MT.dockerManifest,
    {
      schemaVersion: 2,
      mediaType: MT.dockerManifest,
      config: descriptor(MT.dockerConfig, opts.config),
      layers: opts.layers.map((l) => descriptor(MT.dockerLayer, l)),
    },
    3,
  );
}

export interface Entry {
  manifest: Built;
  platform?: { os: string; architecture: string; variant?: string };
}

export function ociIndex(entries: Entry[], extra: { subject?: Built; artifactType?: string; annotations?: Record<string, string> } = {}): Built {
  return built(MT.ociIndex, {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    ...(extra.artifactType ? { artifactType: extra.artifactType } : {}),
    manifests: entries.map((e) => descriptor(e.manifest.mediaType, e.manifest, e.platform ? { platform: e.platform } : {})),
    ...(extra.subject ? { subject: descriptor(extra.subject.mediaType, extra.subject) } : {}),
    ...(extra.annotations ? { annotations: extra.annotations } : {}),
  });
}

export function dockerList(entries: Array<Required<Entry>>): Built {
  return built(MT.dockerList, {
    schemaVersion: 2,
    mediaType: MT.dockerList,
    manifests: entries.map((e) => descriptor(e.manifest.mediaType, e.manifest, { platform: e.platform })),
  });
}

export interface Schema1Doc {
  schemaVersion: 1;
  name: string;
  tag: string;
  architecture: string;
  fsLayers: Array<{ blobSum: string }>;
  history: Array<{ v1Compatibility: string }>;
}

/** A schema 1 manifest body (top layer first, as Docker wrote them) and its top v1 id. */
export function schema1Doc(opts: { name: string; tag: string; layers: Blob[] }): { doc: Schema1Doc; topId: string } {
  const ids = opts.layers.map(() => randomBytes(32).toString('hex'));
  const doc: Schema1Doc = {
    schemaVersion: 1,
    name: opts.name,
    tag: opts.tag,
    architecture: 'amd64',
    fsLayers: opts.layers.map((l) => ({ blobSum: l.digest })),
    history: ids.map((id, i) => ({ v1Compatibility: JSON.stringify({ id, ...(ids[i + 1] ? { parent: ids[i + 1] } : {}), created: '2024-01-01T00:00:00Z' }) })),
  };
  return { doc, topId: ids[0]! };
}

export function schema1Unsigned(opts: { name: string; tag: string; layers: Blob[] }): Built & { topId: string } {
  const { doc, topId } = schema1Doc(opts);
  return { ...built(MT.schema1, doc, 3), topId };
}

export interface Signer {
  privateKey: KeyObject;
  jwk: Record<string, unknown>;
  alg: 'ES256' | 'RS256';
}

export function ecSigner(): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid: 'ABCD:EFGH:IJKL' }, alg: 'ES256' };
}

export function rsaSigner(): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid: 'RSA:KEY' }, alg: 'RS256' };
}

/**
 * Signs a schema 1 payload as libtrust does: the payload is the pretty-printed manifest; the
 * signed document is the payload up to its closing brace, then `"signatures": [...]`, then the
 * tail. Returns the signed bytes and the digest of the payload (the manifest's digest).
 */
export function signSchema1(payloadDoc: unknown, signers: Signer[] = [ecSigner()]): Built & { payload: Buffer; payloadDigest: string } {
  const payload = Buffer.from(JSON.stringify(payloadDoc, null, 3));
  const text = payload.toString('utf8');
  const close = text.lastIndexOf('}');
  let formatLength = close;
  while (formatLength > 0 && /\s/.test(text[formatLength - 1]!)) formatLength--;
  const tail = payload.subarray(formatLength);
  const protectedHeader = Buffer.from(
    JSON.stringify({ formatLength, formatTail: tail.toString('base64url'), time: '2024-01-01T00:00:00Z' }),
  ).toString('base64url');
  const input = Buffer.from(`${protectedHeader}.${payload.toString('base64url')}`);
  const signatures = signers.map((s) => ({
    header: { jwk: s.jwk, alg: s.alg },
    signature: (s.alg === 'ES256' ? sign('sha256', input, { key: s.privateKey, dsaEncoding: 'ieee-p1363' }) : sign('sha256', input, s.privateKey)).toString('base64url'),
    protected: protectedHeader,
  }));
  const sigJson = JSON.stringify(signatures, null, 3).replace(/\n/g, '\n   ');
  const bytes = Buffer.concat([payload.subarray(0, formatLength), Buffer.from(`,\n   "signatures": ${sigJson}`), tail]);
  return { bytes, digest: sha256(payload), mediaType: MT.schema1Signed, size: bytes.length, payload, payloadDigest: sha256(payload) };
}

export function schema1Signed(opts: { name: string; tag: string; layers: Blob[] }, signers?: Signer[]): Built & { topId: string; payload: Buffer; payloadDigest: string } {
  const { doc, topId } = schema1Doc(opts);
  return { ...signSchema1(doc, signers), topId };
}
