import { MT } from './manifest-fixtures.ts';
import { BLOBS, MANIFESTS, type BlobName, type ManifestName, type ModelManifest } from './model-content.ts';

/**
 * What the /v2 contract says the registry holds, written from README "OCI registry (/v2)" and
 * DESIGN.md section 3 rather than from the code: the model-based tests compare a real server
 * with it after every request.
 */

export interface RepoModel {
  blobs: Set<BlobName>;
  manifests: Set<ManifestName>;
  /** tag name -> its schema 1 and schema 2 units */
  tags: Map<string, { s1?: ManifestName; s2?: ManifestName }>;
  /** a push into it succeeded (a repository, once made, is never removed) */
  exists: boolean;
}

export class RegistryModel {
  readonly repos = new Map<string, RepoModel>();

  repo(name: string): RepoModel {
    let r = this.repos.get(name);
    if (!r) this.repos.set(name, (r = { blobs: new Set(), manifests: new Set(), tags: new Map(), exists: false }));
    return r;
  }

  /** blobs and child manifests a push of `m` to `repo` lacks (the push is refused when any) */
  missingFor(repo: string, m: ModelManifest): string[] {
    const r = this.repo(repo);
    return [...new Set(m.blobs.filter((b) => !r.blobs.has(b)).map((b) => BLOBS[b].digest)), ...m.children.filter((c) => !r.manifests.has(c)).map((c) => MANIFESTS[c].digest)];
  }

  pushManifest(repo: string, m: ModelManifest, tag?: string): void {
    const r = this.repo(repo);
    r.exists = true;
    r.manifests.add(m.name);
    if (tag !== undefined) {
      const units = r.tags.get(tag) ?? {};
      if (m.schemaVersion === 1) units.s1 = m.name;
      else units.s2 = m.name;
      r.tags.set(tag, units);
    }
  }

  /** the indexes of `repo` listing `m` (a delete by digest of `m` is then refused) */
  listedBy(repo: string, m: ManifestName): ManifestName[] {
    return [...this.repo(repo).manifests].filter((n) => MANIFESTS[n].children.includes(m));
  }

  deleteManifest(repo: string, m: ManifestName): void {
    const r = this.repo(repo);
    r.manifests.delete(m);
    for (const [tag, units] of r.tags) {
      if (units.s1 === m) delete units.s1;
      if (units.s2 === m) delete units.s2;
      if (!units.s1 && !units.s2) r.tags.delete(tag);
    }
  }

  /**
   * What `gc --delete-untagged` may remove from each repository: manifests no tag, kept index
   * or kept subject/referrer needs, then blobs no kept manifest uses. (It may keep some: content
   * within the grace period stays.)
   */
  untaggedGarbage(): Map<string, { manifests: ManifestName[]; blobs: BlobName[] }> {
    const out = new Map<string, { manifests: ManifestName[]; blobs: BlobName[] }>();
    for (const [name, r] of this.repos) {
      const kept = new Set<ManifestName>();
      for (const units of r.tags.values()) for (const m of [units.s1, units.s2]) if (m) kept.add(m);
      for (let grew = true; grew; ) {
        grew = false;
        const keptDigests = new Set([...kept].map((k) => MANIFESTS[k].digest));
        for (const n of r.manifests) {
          if (kept.has(n)) continue;
          const m = MANIFESTS[n];
          if ([...kept].some((k) => MANIFESTS[k].children.includes(n) || MANIFESTS[k].subject === m.digest) || (m.subject !== undefined && keptDigests.has(m.subject))) {
            kept.add(n);
            grew = true;
          }
        }
      }
      const used = new Set([...kept].flatMap((k) => MANIFESTS[k].blobs));
      out.set(name, { manifests: [...r.manifests].filter((m) => !kept.has(m)), blobs: [...r.blobs].filter((b) => !used.has(b)) });
    }
    return out;
  }

  tagNames(repo: string): string[] {
    return [...this.repo(repo).tags.keys()].sort(byteOrder);
  }

  referrers(repo: string, subject: string, artifactType?: string): ModelManifest[] {
    return [...this.repo(repo).manifests]
      .map((n) => MANIFESTS[n])
      .filter((m) => m.subject === subject && (artifactType === undefined || m.artifactType === artifactType));
  }
}

export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** One media range of a generated Accept header. */
export interface AcceptItem {
  range: string;
  /** q=0: the client refuses what this range names */
  refused: boolean;
}

export function acceptHeader(items: readonly AcceptItem[]): string {
  return items.map((i) => (i.refused ? `${i.range};q=0` : i.range)).join(', ');
}

/** RFC 9110: the most specific range matching a type decides; no Accept header accepts everything. */
function accepts(items: readonly AcceptItem[] | undefined, mediaType: string): boolean {
  if (items === undefined) return true;
  const exact = items.find((i) => i.range === mediaType);
  if (exact) return !exact.refused;
  const all = items.find((i) => i.range === '*/*');
  return all !== undefined && !all.refused;
}

/**
 * What a tag gives a client with this Accept (undefined: no Accept header), in README's order:
 * an accepted list; else the list's linux/amd64 entry if accepted; an accepted image; schema 1
 * for a client reading it (a schema 1 type or application/json); else nothing (404).
 */
export function expectedForTag(units: { s1?: ManifestName; s2?: ManifestName } | undefined, accept: readonly AcceptItem[] | undefined): ModelManifest | null {
  if (!units) return null;
  const s2 = units.s2 ? MANIFESTS[units.s2] : undefined;
  if (s2?.kind === 'list') {
    if (accepts(accept, s2.mediaType)) return s2;
    const entry = s2.amd64 ? MANIFESTS[s2.amd64] : undefined;
    if (entry && accepts(accept, entry.mediaType)) return entry;
  }
  if (s2?.kind === 'image' && accepts(accept, s2.mediaType)) return s2;
  const readsSchema1 = accepts(accept, MT.schema1) || accepts(accept, MT.schema1Signed) || accepts(accept, 'application/json');
  if (units.s1 && readsSchema1) return MANIFESTS[units.s1];
  return null;
}
