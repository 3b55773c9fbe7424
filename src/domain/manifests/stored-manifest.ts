import type { Digest } from '../digest.ts';
import type { ManifestEntry, ManifestKind } from './parsed-manifest.ts';

/** A manifest the registry holds (without its bytes unless asked for). */
export interface StoredManifest {
  /** the unit id */
  id: string;
  digest: Digest;
  mediaType: string;
  schemaVersion: 1 | 2;
  kind: ManifestKind;
  size: number;
  configMediaType: string | null;
  subject: Digest | null;
  artifactType: string | null;
  annotations: Record<string, string> | null;
  /** entries of an index or list */
  manifests: ManifestEntry[];
  /** the exact bytes as pushed, when requested */
  content?: Buffer;
}

/**
 * A tag unit: a tag name pointing at one manifest per schema version in a repository
 * (schema 1, or schema 2 which covers Docker v2s2, manifest lists and the OCI types).
 */
export interface TagRecord {
  id: string;
  repository: string;
  name: string;
  manifestDigest: Digest;
  schemaVersion: 1 | 2;
  manifestType: ManifestKind;
  /** the write the unit holds (units written before writes were told apart have none) */
  writeId?: string;
}

/** A tag unit as a push wrote it, with what it pointed at before (null: the push created it). */
export interface TagWrite extends TagRecord {
  previous: { manifestDigest: Digest; manifestType: ManifestKind } | null;
  /** schema 1: the v1 image id the name had before the push recorded its own (null: none) */
  previousV1ImageId?: string | null;
}
