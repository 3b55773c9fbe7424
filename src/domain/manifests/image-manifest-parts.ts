import type { Digest } from '../digest.ts';
import { descriptorDigest, entryOf, isExternal, unique, type DescriptorJson } from './descriptors.ts';

/** The parts OCI image manifests and Docker schema 2 manifests share: config and layers. */
export interface ImageManifestJson {
  config: DescriptorJson;
  layers: DescriptorJson[];
}

export function imageManifestParts(m: ImageManifestJson): {
  configDigest: Digest;
  configMediaType: string;
  blobDigests: Digest[];
  externalBlobDigests: Digest[];
} {
  const configDigest = descriptorDigest(m.config.digest, '/config/digest');
  const required: Digest[] = [configDigest];
  const external: Digest[] = [];
  m.layers.forEach((layer, i) => {
    const digest = descriptorDigest(layer.digest, `/layers/${i}/digest`);
    (isExternal(layer, `/layers/${i}`) ? external : required).push(digest);
  });
  return { configDigest, configMediaType: m.config.mediaType, blobDigests: unique(required), externalBlobDigests: unique(external) };
}

/** The parts OCI image indexes and Docker manifest lists share: entries naming manifests, no blobs. */
export function listManifestParts(m: { manifests: DescriptorJson[] }): {
  configDigest: null;
  configMediaType: null;
  blobDigests: Digest[];
  externalBlobDigests: Digest[];
  manifests: ReturnType<typeof entryOf>[];
} {
  return {
    configDigest: null,
    configMediaType: null,
    blobDigests: [],
    externalBlobDigests: [],
    manifests: m.manifests.map((d, i) => entryOf(d, `/manifests/${i}`)),
  };
}
