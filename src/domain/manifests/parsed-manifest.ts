import type { Digest, DigestAlgorithm } from '../digest.ts';
import type { ManifestMediaType } from '../media-types.ts';

/** `image`: a manifest of blobs; `list`: an OCI image index or Docker manifest list. */
export type ManifestKind = 'image' | 'list';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** An entry of an index or manifest list. */
export interface ManifestEntry {
  digest: Digest;
  mediaType: string;
  size: number;
  platform: Platform | null;
}

/** What volreg needs to know about a validated manifest; the bytes themselves are kept as pushed. */
export interface ParsedManifest {
  mediaType: ManifestMediaType;
  schemaVersion: 1 | 2;
  kind: ManifestKind;
  /**
   * The manifest's digest: of the exact bytes, except for a signed schema 1 manifest, whose
   * digest is over its payload without the signatures (as Docker and distribution 2.x named it).
   */
  digest: Digest;
  /** length of the pushed bytes */
  size: number;
  configDigest: Digest | null;
  configMediaType: string | null;
  /** every blob the registry must hold for this manifest: config and layers, without duplicates */
  blobDigests: Digest[];
  /** layers with `urls` (foreign / non-distributable): referenced but not required to exist */
  externalBlobDigests: Digest[];
  /** entries of an index or list, in order */
  manifests: ManifestEntry[];
  subject: Digest | null;
  artifactType: string | null;
  annotations: Record<string, string> | null;
  /** schema 1: the `id` of the top `v1Compatibility` entry (the v1 image id) */
  v1TopImageId: string | null;
}

/** One handler per manifest media type, all registered in manifest-handlers.ts. */
export interface ManifestHandler {
  readonly mediaType: ManifestMediaType;
  readonly schemaVersion: 1 | 2;
  readonly kind: ManifestKind;
  /**
   * Validates `json` (the parsed `body`) and describes it. Throws MANIFEST_INVALID with a
   * detail naming what is wrong.
   */
  parse(body: Buffer, json: Record<string, unknown>, alg: DigestAlgorithm): ParsedManifest;
}
