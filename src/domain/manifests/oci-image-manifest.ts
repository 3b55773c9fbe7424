import { assertValid } from '../../metadata/schema-validator.ts';
import { digestOf } from '../digest.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import { descriptorDigest, type DescriptorJson } from './descriptors.ts';
import { imageManifestParts, type ImageManifestJson } from './image-manifest-parts.ts';
import type { ManifestHandler } from './parsed-manifest.ts';

interface OciManifestJson extends ImageManifestJson {
  artifactType?: string;
  subject?: DescriptorJson;
  annotations?: Record<string, string>;
}

/** OCI image manifest (image-spec 1.1): config, layers, and optionally subject and artifactType. */
export const ociImageManifestHandler: ManifestHandler = {
  mediaType: MEDIA_TYPES.ociManifest,
  schemaVersion: 2,
  kind: 'image',
  parse(body, json, alg) {
    assertValid<OciManifestJson>('oci-image-manifest', json, 'MANIFEST_INVALID');
    const m = json as unknown as OciManifestJson;
    return {
      mediaType: MEDIA_TYPES.ociManifest,
      schemaVersion: 2,
      kind: 'image',
      digest: digestOf(body, alg),
      size: body.length,
      ...imageManifestParts(m),
      manifests: [],
      subject: m.subject ? descriptorDigest(m.subject.digest, '/subject/digest') : null,
      artifactType: m.artifactType ?? null,
      annotations: m.annotations ?? null,
      v1TopImageId: null,
    };
  },
};
