import { assertValid } from '../../metadata/schema-validator.ts';
import { VolregError } from '../errors.ts';
import { digestOf, type DigestAlgorithm } from '../digest.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import { descriptorDigest, unique } from './descriptors.ts';
import type { ManifestHandler, ParsedManifest } from './parsed-manifest.ts';
import { signedPayload, verifySignatures, type Schema1SignatureJson } from './schema1-signature.ts';

interface Schema1Json {
  fsLayers: Array<{ blobSum: string }>;
  history: Array<{ v1Compatibility: string }>;
  signatures?: Schema1SignatureJson[];
}

const V1_ID = /^[a-f0-9]{64}$/;

function topImageId(history: Schema1Json['history']): string {
  let v1: unknown;
  try {
    v1 = JSON.parse(history[0]!.v1Compatibility);
  } catch {
    throw new VolregError('MANIFEST_INVALID', '/history/0/v1Compatibility is not JSON');
  }
  const id = (v1 as { id?: unknown } | null)?.id;
  if (typeof id !== 'string' || !V1_ID.test(id)) {
    throw new VolregError('MANIFEST_INVALID', '/history/0/v1Compatibility has no valid id');
  }
  return id;
}

function describe(canonical: Buffer, body: Buffer, m: Schema1Json, alg: DigestAlgorithm, signed: boolean): ParsedManifest {
  // distribution's rule: one history entry per layer, top first
  if (m.fsLayers.length !== m.history.length) {
    throw new VolregError('MANIFEST_INVALID', 'fsLayers and history differ in length');
  }
  return {
    mediaType: signed ? MEDIA_TYPES.dockerSchema1Signed : MEDIA_TYPES.dockerSchema1,
    schemaVersion: 1,
    kind: 'image',
    digest: digestOf(canonical, alg),
    size: body.length,
    configDigest: null,
    configMediaType: null,
    blobDigests: unique(m.fsLayers.map((l, i) => descriptorDigest(l.blobSum, `/fsLayers/${i}/blobSum`))),
    externalBlobDigests: [],
    manifests: [],
    subject: null,
    artifactType: null,
    annotations: null,
    v1TopImageId: topImageId(m.history),
  };
}

/** Docker v2 schema 1 without signatures: its digest is over the bytes as pushed. */
export const dockerSchema1ManifestHandler: ManifestHandler = {
  mediaType: MEDIA_TYPES.dockerSchema1,
  schemaVersion: 1,
  kind: 'image',
  parse(body, json, alg) {
    assertValid<Schema1Json>('docker-manifest-v1', json, 'MANIFEST_INVALID');
    return describe(body, body, json as unknown as Schema1Json, alg, false);
  },
};

/**
 * Signed Docker v2 schema 1: the signatures must verify, the manifest is read from the signed
 * payload, and the digest is over that payload, so re-signing never changes it.
 */
export const dockerSchema1SignedManifestHandler: ManifestHandler = {
  mediaType: MEDIA_TYPES.dockerSchema1Signed,
  schemaVersion: 1,
  kind: 'image',
  parse(body, json, alg) {
    assertValid<Schema1Json>('docker-manifest-v1', json, 'MANIFEST_INVALID');
    const signatures = (json as unknown as Schema1Json).signatures;
    if (!signatures) throw new VolregError('MANIFEST_INVALID', 'signed schema 1 manifest has no signatures');
    const payload = signedPayload(body, signatures);
    let signed: unknown;
    try {
      signed = JSON.parse(payload.toString('utf8'));
    } catch {
      throw new VolregError('MANIFEST_INVALID', 'signed payload is not JSON');
    }
    if (typeof signed !== 'object' || signed === null || Array.isArray(signed) || 'signatures' in signed) {
      throw new VolregError('MANIFEST_INVALID', 'signed payload is not a schema 1 manifest');
    }
    assertValid<Schema1Json>('docker-manifest-v1', signed, 'MANIFEST_INVALID');
    verifySignatures(payload, signatures);
    return describe(payload, body, signed as Schema1Json, alg, true);
  },
};
