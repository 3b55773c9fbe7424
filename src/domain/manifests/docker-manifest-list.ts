import { assertValid } from '../../metadata/schema-validator.ts';
import { digestOf } from '../digest.ts';
import { MEDIA_TYPES } from '../media-types.ts';
import type { DescriptorJson } from './descriptors.ts';
import { listManifestParts } from './image-manifest-parts.ts';
import type { ManifestHandler } from './parsed-manifest.ts';

/** Docker manifest list: every entry names its platform. */
export const dockerManifestListHandler: ManifestHandler = {
  mediaType: MEDIA_TYPES.dockerManifestList,
  schemaVersion: 2,
  kind: 'list',
  parse(body, json, alg) {
    assertValid<{ manifests: DescriptorJson[] }>('docker-manifest-list', json, 'MANIFEST_INVALID');
    const m = json as unknown as { manifests: DescriptorJson[] };
    return {
      mediaType: MEDIA_TYPES.dockerManifestList,
      schemaVersion: 2,
      kind: 'list',
      digest: digestOf(body, alg),
      size: body.length,
      ...listManifestParts(m),
      subject: null,
      artifactType: null,
      annotations: null,
      v1TopImageId: null,
    };
  },
};
