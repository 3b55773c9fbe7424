import type { Digest } from '../domain/digest.ts';
import { MEDIA_TYPES } from '../domain/media-types.ts';
import type { StoredManifest } from '../domain/manifests/stored-manifest.ts';

/**
 * The OCI 1.1 referrers API: an image index of the descriptors of every manifest and index in
 * the repository whose `subject` is a digest. An artifact's type is its `artifactType`, or for
 * an image manifest without one its config's media type; an index without one has none.
 */

export interface ReferrerStore {
  referrers(repo: string, subject: Digest): Promise<StoredManifest[]>;
}

export interface ReferrerDescriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: typeof MEDIA_TYPES.ociIndex;
  manifests: ReferrerDescriptor[];
}

export interface ReferrersResult {
  index: ReferrersIndex;
  /** filters applied, for the OCI-Filters-Applied header */
  filtersApplied: string[];
}

function descriptorOf(m: StoredManifest): ReferrerDescriptor {
  const artifactType = m.artifactType ?? (m.kind === 'image' ? m.configMediaType : null);
  return {
    mediaType: m.mediaType,
    digest: m.digest,
    size: m.size,
    ...(artifactType ? { artifactType } : {}),
    ...(m.annotations && Object.keys(m.annotations).length > 0 ? { annotations: m.annotations } : {}),
  };
}

export class ReferrersService {
  constructor(private readonly deps: { manifests: ReferrerStore }) {}

  /** Never 404: an unknown repository or subject has an empty list. */
  async list(repo: string, subject: Digest, filter: { artifactType?: string } = {}): Promise<ReferrersResult> {
    let manifests = (await this.deps.manifests.referrers(repo, subject)).map(descriptorOf);
    const filtersApplied: string[] = [];
    if (filter.artifactType !== undefined) {
      manifests = manifests.filter((d) => d.artifactType === filter.artifactType);
      filtersApplied.push('artifactType');
    }
    return { index: { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }, filtersApplied };
  }
}
