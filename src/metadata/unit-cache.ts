import type { Digest } from '../domain/digest.ts';
import type { StoredManifest } from '../domain/manifests/stored-manifest.ts';
import type { Collections } from './collections.ts';

/**
 * What a content unit is, by digest, remembered between requests. A unit document never changes
 * while it exists (the first bytes pushed under a digest stay), and a digest collected and pushed
 * again comes back as a new unit with a new id. So a remembered unit is a guess of the current
 * one that the reader confirms with the association it looks up anyway: associations are removed
 * before their unit (DESIGN.md §1, garbage collection), so a unit a repository holds exists. When
 * the association is missing, the reader reads the unit again (it may have been collected).
 *
 * Bounded by entries and bytes; the least recently used go first. One cache per database
 * handle, so separate databases (tests) never share entries.
 */
export class UnitCache<V> {
  private readonly entries = new Map<Digest, V>();
  private bytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    private readonly sizeOf: (v: V) => number,
  ) {}

  get(digest: Digest): V | undefined {
    const v = this.entries.get(digest);
    if (v !== undefined) {
      // most recently used last
      this.entries.delete(digest);
      this.entries.set(digest, v);
    }
    return v;
  }

  set(digest: Digest, v: V): void {
    this.delete(digest);
    const size = this.sizeOf(v);
    if (size > this.maxBytes) return;
    this.entries.set(digest, v);
    this.bytes += size;
    for (const [oldest, old] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= this.sizeOf(old);
    }
  }

  delete(digest: Digest): void {
    const old = this.entries.get(digest);
    if (old === undefined) return;
    this.entries.delete(digest);
    this.bytes -= this.sizeOf(old);
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface CachedBlobUnit {
  id: string;
  digest: Digest;
  size: number;
}

export interface UnitCaches {
  blobs: UnitCache<CachedBlobUnit>;
  /** manifests and lists, with their bytes when they were read with them */
  manifests: UnitCache<StoredManifest>;
}

/** Rough per-entry overhead (map slot, object, strings) so the byte bound holds for small entries too. */
const ENTRY_OVERHEAD = 300;

function manifestBytes(m: StoredManifest): number {
  // the bytes, plus what was parsed out of them (entries, annotations)
  return ENTRY_OVERHEAD + (m.content?.length ?? 0) + 150 * m.manifests.length + (m.annotations ? JSON.stringify(m.annotations).length : 0);
}

const perDatabase = new WeakMap<Collections, UnitCaches>();

export function unitCaches(c: Collections): UnitCaches {
  let caches = perDatabase.get(c);
  if (!caches) {
    caches = {
      blobs: new UnitCache<CachedBlobUnit>(20_000, 8 * 1024 * 1024, () => ENTRY_OVERHEAD),
      manifests: new UnitCache<StoredManifest>(10_000, 16 * 1024 * 1024, manifestBytes),
    };
    perDatabase.set(c, caches);
  }
  return caches;
}
