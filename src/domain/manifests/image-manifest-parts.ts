import type { Digest } from '../digest.ts';
import { descriptorDigest, isExternal, unique, type DescriptorJson } from './descriptors.ts';

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
