import { assertValid } from '../../metadata/schema-validator.ts';
import { digestOf } from '../digest.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import { imageManifestParts, type ImageManifestJson } from './image-manifest-parts.ts';
import type { ManifestHandler } from './parsed-manifest.ts';

/** Docker image manifest v2, schema 2: config and layers; no subject, no annotations. */
export const dockerSchema2ManifestHandler: ManifestHandler = {
  mediaType: MEDIA_TYPES.dockerManifest,
  schemaVersion: 2,
  kind: 'image',
  parse(body, json, alg) {
    assertValid<ImageManifestJson>('docker-manifest-v2', json, 'MANIFEST_INVALID');
    return {
      mediaType: MEDIA_TYPES.dockerManifest,
      schemaVersion: 2,
      kind: 'image',
      digest: digestOf(body, alg),
      size: body.length,
      ...imageManifestParts(json as unknown as ImageManifestJson),
      manifests: [],
      subject: null,
      artifactType: null,
      annotations: null,
      v1TopImageId: null,
    };
  },
};
