import type { Digest } from '../domain/digest.ts';
import { VolregError } from '../domain/errors.ts';
import { AcceptSet, isListMediaType } from '../domain/media-types.ts';
import type { ManifestEntry, ManifestKind } from '../domain/manifests/parsed-manifest.ts';
import type { StoredManifest, TagRecord } from '../domain/manifests/stored-manifest.ts';
import type { RepositoryName, Tag } from '../domain/names.ts';

/**
 * Tags: which manifest a tag name serves to a client, and the tags/list pages.
 *
 * A tag name has up to two units: schema 1 and schema 2 (the latter a Docker v2s2 manifest, a
 * manifest list, an OCI manifest or an OCI index). Reading a tag picks one by the client's
 * Accept in Crane's order (Pulp 2's server):
 *
 *   1. the schema 2 unit, if it is a list/index of a type the client accepts;
 *   2. for a client that does not accept that list, its linux/amd64 entry, if the client
 *      accepts the entry's type;
 *   3. the schema 2 unit, if it is an image manifest of a type the client accepts;
 *   4. the schema 1 unit, if the client reads schema 1;
 *   nothing fitting: 404 MANIFEST_UNKNOWN.
 *
 * A request without any Accept header accepts every type (RFC 9110 section 12.5.1), so it is
 * resolved as a match-all Accept: the schema 2 unit first, schema 1 only when there is no
 * schema 2 unit (DESIGN.md section 3).
 */

/** What resolution needs to know about the manifest a tag unit points at. */
export interface TagCandidate {
  digest: Digest;
  mediaType: string;
  kind: ManifestKind;
  /** entries, for a list */
  manifests: readonly ManifestEntry[];
}

export type ResolutionReason = 'list' | 'platform' | 'image' | 'schema1';

export interface ResolutionStep {
  digest: Digest;
  /** the media type the client must accept for this step */
  mediaType: string;
  reason: ResolutionReason;
}

const ALL = AcceptSet.from('*/*');
const DEFAULT_PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

function defaultPlatformEntry(list: TagCandidate): ManifestEntry | undefined {
  return list.manifests.find((e) => e.platform?.os === DEFAULT_PLATFORM.os && e.platform.architecture === DEFAULT_PLATFORM.architecture);
}

/**
 * The steps to try, best first (a step whose manifest is gone from the repository is skipped
 * by the caller). Pure: no I/O.
 */
export function planTagResolution(candidates: { schema1: TagCandidate | null; schema2: TagCandidate | null }, accept: AcceptSet): ResolutionStep[] {
  const { schema1, schema2 } = candidates;
  const steps: ResolutionStep[] = [];
  const effective = accept.explicit ? accept : ALL;
  if (schema2?.kind === 'list') {
    if (effective.accepts(schema2.mediaType)) {
      steps.push({ digest: schema2.digest, mediaType: schema2.mediaType, reason: 'list' });
    } else {
      const entry = defaultPlatformEntry(schema2);
      if (entry && effective.accepts(entry.mediaType)) {
        steps.push({ digest: entry.digest, mediaType: entry.mediaType, reason: 'platform' });
      }
    }
  }
  if (schema2?.kind === 'image' && effective.accepts(schema2.mediaType)) {
    steps.push({ digest: schema2.digest, mediaType: schema2.mediaType, reason: 'image' });
  }
  if (schema1 && effective.acceptsSchema1()) {
    steps.push({ digest: schema1.digest, mediaType: schema1.mediaType, reason: 'schema1' });
  }
  return steps;
}

/** Tag storage as the tag service needs it (implemented by metadata/tag-repository.ts). */
export interface TagStore {
  findByName(repo: string, name: string): Promise<readonly TagRecord[]>;
  digestsByName(repos: readonly string[], schemaVersion: 1 | 2): Promise<Map<string, Map<string, Digest>>>;
  listNames(repo: string, page: { n?: number; last?: string }): Promise<{ names: string[]; more: boolean }>;
}

/** Manifest lookup as the tag service needs it (implemented by metadata/manifest-repository.ts). */
export interface ManifestLookup {
  findInRepo(repo: string, digest: Digest, opts?: { content?: boolean; kind?: ManifestKind }): Promise<StoredManifest | null>;
}

export interface RepositoryLookup {
  repoExists(repo: string): Promise<boolean>;
}

export interface TagPage {
  name: string;
  tags: string[];
  /** the `last` of the next page, when there is one */
  next: { n: number; last: string } | null;
}

export class TagService {
  constructor(
    private readonly deps: {
      tags: TagStore;
      manifests: ManifestLookup;
      repos: RepositoryLookup;
    },
  ) {}

  /**
   * The manifest a tag serves to a client with these Accept headers (with its bytes when
   * `content`). 404 MANIFEST_UNKNOWN when the tag does not exist or nothing fits.
   */
  async resolve(repo: RepositoryName, tag: Tag, accept: AcceptSet, opts: { content?: boolean } = {}): Promise<StoredManifest> {
    const units = await this.deps.tags.findByName(repo, tag);
    if (units.length === 0) throw new VolregError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    const loaded = new Map<Digest, StoredManifest>();
    const candidate = async (unit: TagRecord | undefined): Promise<TagCandidate | null> => {
      if (!unit) return null;
      const m = await this.deps.manifests.findInRepo(repo, unit.manifestDigest, { ...opts, kind: unit.manifestType });
      if (!m) return null;
      loaded.set(m.digest, m);
      return m;
    };
    const [schema1, schema2] = await Promise.all([
      candidate(units.find((u) => u.schemaVersion === 1)),
      candidate(units.find((u) => u.schemaVersion === 2)),
    ]);
    for (const step of planTagResolution({ schema1, schema2 }, accept)) {
      const m = loaded.get(step.digest) ?? (await this.deps.manifests.findInRepo(repo, step.digest, { ...opts, kind: isListMediaType(step.mediaType) ? 'list' : 'image' }));
      // the entry's stored type must be what the step promised the client
      if (m && m.mediaType === step.mediaType) return m;
    }
    throw new VolregError('MANIFEST_UNKNOWN', 'no manifest of this tag fits the Accept header', {
      tag,
      available: [schema2, schema1].filter((c): c is TagCandidate => c !== null).map((c) => c.mediaType),
    });
  }

  /**
   * The manifest each tag's schema 2 unit points at, by repository (without checking that the
   * repository still holds it, as resolve does): for comparing an index kept beside the tags with them.
   */
  async schema2Digests(repos: readonly RepositoryName[]): Promise<Map<string, Map<string, Digest>>> {
    return this.deps.tags.digestsByName(repos, 2);
  }

  /** A page of tag names, lexically sorted, each once. 404 NAME_UNKNOWN for an unknown repository. */
  async list(repo: RepositoryName, page: { n?: number; last?: string }): Promise<TagPage> {
    const unknown = (): VolregError => new VolregError('NAME_UNKNOWN', 'repository name not known to registry', { name: repo });
    if (page.n === 0) {
      if (!(await this.deps.repos.repoExists(repo))) throw unknown();
      return { name: repo, tags: [], next: null };
    }
    const { names, more } = await this.deps.tags.listNames(repo, page);
    // Tag units exist only in existing repositories (a push creates the repository first, and
    // repositories are never removed), so only an empty page needs to ask.
    if (names.length === 0 && !(await this.deps.repos.repoExists(repo))) throw unknown();
    const last = names[names.length - 1];
    return { name: repo, tags: names, next: more && page.n !== undefined && last !== undefined ? { n: page.n, last } : null };
  }
}
