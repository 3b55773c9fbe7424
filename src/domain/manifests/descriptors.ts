import { VolregError } from '../errors.ts';
import { isSupportedAlgorithm, parseDigest, type Digest } from '../digest.ts';
import type { ManifestEntry, Platform } from './parsed-manifest.ts';

/** A descriptor as the JSON Schema let it through (content-descriptor.schema.json). */
export interface DescriptorJson {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: { os: string; architecture: string; variant?: string };
}

/**
 * The digest of a descriptor inside a manifest. A bad or unsupported digest there makes the
 * manifest invalid (400), whatever parseDigest would say about it in a URL.
 */
export function descriptorDigest(value: string, path: string): Digest {
  try {
    return parseDigest(value);
  } catch {
    const alg = value.slice(0, Math.max(0, value.indexOf(':')));
    const why = alg && !isSupportedAlgorithm(alg) ? 'unsupported digest algorithm' : 'invalid digest';
    throw new VolregError('MANIFEST_INVALID', `${path}: ${why}`, { path, digest: value.slice(0, 200) });
  }
}

/**
 * A layer with `urls` lives outside the registry (Docker foreign layers, OCI non-distributable
 * layers): the registry does not require it, as distribution did not. The URLs must be plain
 * http(s) without a fragment.
 */
export function isExternal(d: DescriptorJson, path: string): boolean {
  if (!d.urls || d.urls.length === 0) return false;
  for (const u of d.urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new VolregError('MANIFEST_INVALID', `${path}: invalid url`, { path });
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hash !== '') {
      throw new VolregError('MANIFEST_INVALID', `${path}: urls must be http or https without a fragment`, { path });
    }
  }
  return true;
}

export function entryOf(d: DescriptorJson, path: string): ManifestEntry {
  const platform: Platform | null = d.platform
    ? { os: d.platform.os, architecture: d.platform.architecture, ...(d.platform.variant !== undefined ? { variant: d.platform.variant } : {}) }
    : null;
  return { digest: descriptorDigest(d.digest, `${path}/digest`), mediaType: d.mediaType, size: d.size, platform };
}

export function unique<T>(items: Iterable<T>): T[] {
  return [...new Set(items)];
}
