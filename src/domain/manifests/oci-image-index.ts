import { assertValid } from '../../metadata/schema-validator.ts';
import { digestOf } from '../digest.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import { descriptorDigest, type DescriptorJson } from './descriptors.ts';
import { listManifestParts } from './image-manifest-parts.ts';
import type { ManifestHandler } from './parsed-manifest.ts';

interface OciIndexJson {
  manifests: DescriptorJson[];
  artifactType?: string;
  subject?: DescriptorJson;
  annotations?: Record<string, string>;
}

/** OCI image index: entries (with optional platforms) that must be manifests in the repository. */
export const ociImageIndexHandler: ManifestHandler = {
  mediaType: MEDIA_TYPES.ociIndex,
  schemaVersion: 2,
  kind: 'list',
  parse(body, json, alg) {
    assertValid<OciIndexJson>('oci-image-index', json, 'MANIFEST_INVALID');
    const m = json as unknown as OciIndexJson;
    return {
      mediaType: MEDIA_TYPES.ociIndex,
      schemaVersion: 2,
      kind: 'list',
      digest: digestOf(body, alg),
      size: body.length,
      ...listManifestParts(m),
      subject: m.subject ? descriptorDigest(m.subject.digest, '/subject/digest') : null,
      artifactType: m.artifactType ?? null,
      annotations: m.annotations ?? null,
      v1TopImageId: null,
    };
  },
};
