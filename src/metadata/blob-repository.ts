import { randomUUID } from 'node:crypto';
import type { Digest } from '../domain/digest.ts';
import { COLLECTIONS, pulpFields, UNIT_TYPES, upsertUnit, type BlobUnitDoc, type Collections } from './collections.ts';
import { MarkedCache } from './marked-cache.ts';
import { isDuplicateKey } from './repo-content-repository.ts';
import { heldUnits, type HeldUnits } from './held-units.ts';
import { assertValid } from './schema-validator.ts';
import { unitCaches, type UnitCache } from './unit-cache.ts';

/**
 * Blob units (`units_docker_blob`): one document per digest, shared by every repository that
 * holds the blob (membership lives in `repo_content_units`). A unit is written only after its
 * bytes are durable in the blob store.
 */
export interface BlobUnit {
  id: string;
  digest: Digest;
  size: number;
}

/** A blob unit a repository holds, and when that association was last refreshed (ISO 8601). */
export interface HeldBlob extends BlobUnit {
  associationUpdated: string;
}

function fromDoc(d: Pick<BlobUnitDoc, '_id' | 'digest' | 'size'>): BlobUnit {
  return { id: d._id, digest: d.digest as Digest, size: d.size };
}

const FIELDS = { projection: { _id: 1, digest: 1, size: 1 } } as const;

export class BlobRepository {
  private readonly cache: UnitCache<BlobUnit>;
  private readonly held: HeldUnits;
  /** which units exist, by id, kept while their marks stay put (marked-cache.ts): what an upload's upsert left among them */
  private readonly stored = new MarkedCache<boolean>(20_000);
  private readonly mark: ((id: string) => number) | undefined;

  constructor(private readonly c: Collections) {
    this.cache = unitCaches(c).blobs;
    this.held = heldUnits(c);
    this.mark = c.marks?.reader(COLLECTIONS.blobs);
  }

  /**
   * The unit of a digest, created on first use (or stamped again). One atomic upsert on the
   * unique digest, which answers the unit as it was before (none: inserted now, with our id).
   */
  async upsert(digest: Digest, size: number): Promise<BlobUnit> {
    const doc: BlobUnitDoc = { _id: randomUUID(), digest, size, ...pulpFields(UNIT_TYPES.blob) };
    assertValid('stored-docker-blob', doc, 'UNKNOWN');
    for (let attempt = 0; ; attempt++) {
      // the marks of the unit this write may insert and of the one it is known to find, noted before it is sent
      const known = this.cache.get(digest)?.id;
      const mark = this.mark;
      const before = mark && { inserted: mark(doc._id), known: known !== undefined ? mark(known) : undefined };
      try {
        const found = await this.c.blobs.findOneAndUpdate({ digest }, upsertUnit(doc), {
          upsert: true,
          returnDocument: 'before',
          projection: { _id: 1, size: 1, _last_updated: 1 },
        });
        if (!found) this.keepStored(doc._id, true, before?.inserted);
        else if (found._id === known) this.keepStored(known, found._last_updated !== doc._last_updated, before?.known);
        return this.remember(found ? { id: found._id, digest, size: found.size } : { id: doc._id, digest, size });
      } catch (err) {
        // Two upserts of one new digest race: the loser finds the winner's document.
        if (!isDuplicateKey(err) || attempt > 0) throw err;
      }
      const existing = await this.findByDigest(digest);
      if (existing) return existing;
      if (attempt > 0) throw new Error('blob unit vanished during upsert');
    }
  }

  /**
   * After an upsert answered the unit `id`, with the unit's mark `before` (noted before the write
   * was sent; undefined without marks): kept as existing while the mark stays where this write
   * left it. When the write changed the unit, only if it moved the mark by exactly that one
   * change; when it changed nothing (a stamp within the same second), only if nothing moved it.
   */
  private keepStored(id: string, changed: boolean, before: number | undefined): void {
    const mark = this.mark;
    if (!mark || before === undefined) return;
    if (changed) this.stored.keepWritten(id, before, () => mark(id), true);
    else this.stored.keep(id, before, () => mark(id), true);
  }

  /**
   * Is this very unit (by id) still recorded? Not answered from the unit cache, which outlives
   * a collection; with change marks, kept while the unit's mark stays put (an upload's own
   * upsert left it so, unless another change came in between).
   */
  async stillExists(unit: BlobUnit): Promise<boolean> {
    const load = async (): Promise<boolean> => (await this.c.blobs.findOne({ _id: unit.id }, { projection: { _id: 1 } })) !== null;
    const mark = this.mark;
    const found = mark ? await this.stored.read(unit.id, () => mark(unit.id), load, (v) => v) : await load();
    if (!found && this.cache.get(unit.digest)?.id === unit.id) this.cache.delete(unit.digest);
    return found;
  }

  async findByDigest(digest: Digest): Promise<BlobUnit | null> {
    const d = await this.c.blobs.findOne({ digest }, FIELDS);
    if (!d) {
      this.cache.delete(digest);
      return null;
    }
    return this.remember(fromDoc(d));
  }

  /**
   * The unit of a digest if repository `repoId` holds it, with when the association was last
   * refreshed (`updated`). A unit remembered from earlier requests needs only the association
   * lookup (see unit-cache.ts); otherwise two point lookups.
   */
  async findInRepo(repoId: string, digest: Digest): Promise<HeldBlob | null> {
    const known = this.cache.get(digest);
    if (known) {
      const held = await this.heldSince(repoId, known);
      if (held) return held;
      // not held, or the unit was collected and pushed again: ask for the current one
      const current = await this.findByDigest(digest);
      if (!current || current.id === known.id) return null;
      return this.heldSince(repoId, current);
    }
    const unit = await this.findByDigest(digest);
    if (!unit) return null;
    return this.heldSince(repoId, unit);
  }

  private async heldSince(repoId: string, unit: BlobUnit): Promise<HeldBlob | null> {
    const updated = await this.held.updated(repoId, UNIT_TYPES.blob, unit.id);
    return updated !== null ? { ...unit, associationUpdated: updated } : null;
  }

  private remember(unit: BlobUnit): BlobUnit {
    this.cache.set(unit.digest, unit);
    return unit;
  }

  async findByDigests(digests: readonly Digest[]): Promise<BlobUnit[]> {
    if (digests.length === 0) return [];
    const docs = await this.c.blobs.find({ digest: { $in: [...digests] } }, FIELDS).toArray();
    return docs.map(fromDoc);
  }

  /** Removes a unit (garbage collection, after no repository holds it). */
  async delete(id: string): Promise<boolean> {
    return (await this.c.blobs.deleteOne({ _id: id })).deletedCount === 1;
  }
}
