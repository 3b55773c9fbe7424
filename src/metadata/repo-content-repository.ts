import { ObjectId } from 'mongodb';
import { processClock } from '../domain/clock.ts';
import type { Collections, RepoDoc, UnitTypeId } from './collections.ts';
import { heldUnits, type HeldUnits } from './held-units.ts';

const ID_ONLY = { projection: { _id: 1 } } as const;

/**
 * The repository document's note that it holds volume snapshots (DESIGN.md §4), whichever API
 * pushed them: the volume list starts from these repositories. Set before the first snapshot's
 * tag is written and never removed, like the repository itself.
 */
export const VOLUME_NOTE = 'volreg_volume';

/** Repositories remembered as noted volumes, or as existing (one forgotten is only written again, one write). */
const NOTED_KEPT = 50_000;

/**
 * Repositories and their membership: which units (blobs, manifests, lists, tags) a repository
 * holds, as Pulp 2 recorded it in `repo_content_units`. Every write here is an idempotent
 * upsert, so a retried or racing request can never create a second association.
 */
export class RepoContentRepository {
  /** repositories this process already noted as volumes (a note is never taken back), the most recent last */
  private readonly notedVolumes = new Set<string>();
  /** repositories this process created or found created (a repository document is never removed), the most recent last */
  private readonly existing = new Set<string>();

  private readonly held: HeldUnits;

  constructor(
    private readonly c: Collections,
    private readonly notedKept = NOTED_KEPT,
  ) {
    this.held = heldUnits(c);
  }

  /**
   * Creates the repository document on first use; a no-op afterwards, and without a write once
   * this process has seen the document there: volreg never removes one, whichever process runs.
   */
  async ensureRepo(repoId: string): Promise<void> {
    if (remembered(this.existing, repoId)) return;
    const now = new Date();
    const doc: RepoDoc = {
      _id: repoId,
      repo_id: repoId,
      created: now.toISOString(),
      notes: { _repo_type: 'docker-repo' },
      scratchpad: { tags: [] },
      content_unit_counts: {},
      _ns: 'repos',
      _last_updated: Math.floor(now.getTime() / 1000),
    };
    await this.c.repos.updateOne({ _id: repoId }, { $setOnInsert: doc }, { upsert: true }).catch((err: unknown) => {
      if (isDuplicateKey(err)) return; // a racing request created it
      throw err;
    });
    remember(this.existing, repoId, this.notedKept);
  }

  /** Notes that the repository holds volume snapshots (see VOLUME_NOTE); creates it if need be. */
  async markVolume(repoId: string): Promise<void> {
    if (remembered(this.notedVolumes, repoId)) return;
    const note = { $set: { [`notes.${VOLUME_NOTE}`]: true, _last_updated: Math.floor(Date.now() / 1000) } };
    if ((await this.c.repos.updateOne({ _id: repoId }, note)).matchedCount === 0) {
      await this.ensureRepo(repoId);
      await this.c.repos.updateOne({ _id: repoId }, note);
    }
    remember(this.notedVolumes, repoId, this.notedKept);
    remember(this.existing, repoId, this.notedKept);
  }

  /** The repositories noted as holding volume snapshots, by name. */
  async volumeRepos(): Promise<string[]> {
    return ((await this.c.repos.distinct('_id', { [`notes.${VOLUME_NOTE}`]: true })) as string[]).sort();
  }

  // Point lookups on a unique key: a findOne of the _id is one find, where a count is an aggregation.
  async repoExists(repoId: string): Promise<boolean> {
    return (await this.c.repos.findOne({ _id: repoId }, ID_ONLY)) !== null;
  }

  /** Tally moves of one push, written together (see TallyMoves). */
  tally(repoId: string): TallyMoves {
    return new TallyMoves(this.c, repoId);
  }

  /**
   * Associates the unit with the repository (or refreshes `updated`); true when this call
   * created the association. The tally moves now, or with `tally` when that is flushed.
   */
  async associate(repoId: string, unitType: UnitTypeId, unitId: string, tally?: { flush(): Promise<void> }): Promise<boolean> {
    const now = processClock.now().toISOString();
    const before = this.held.markOf(repoId, unitType, unitId);
    return this.c.repoContentUnits
      .updateOne(
        { repo_id: repoId, unit_type_id: unitType, unit_id: unitId },
        {
          $setOnInsert: { _id: new ObjectId(), repo_id: repoId, unit_type_id: unitType, unit_id: unitId, created: now },
          $set: { updated: now },
        },
        { upsert: true },
      )
      .then(
        async (res) => {
          // a refresh within the same millisecond changes nothing, and moves no mark
          if (res.upsertedCount === 1 || res.modifiedCount === 1) this.held.wrote(repoId, unitType, unitId, before, now);
          if (res.upsertedCount === 1) {
            if (tally instanceof TallyMoves && tally.repoId === repoId) tally.add(unitType, 1);
            else await moveUnitCount(this.c, repoId, unitType, 1);
          }
          return res.upsertedCount === 1;
        },
        (err: unknown) => {
          // a racing request created it
          if (isDuplicateKey(err)) return false;
          throw err;
        },
      );
  }

  /**
   * Refreshes an association's `updated` only if it is still the one read (`seen`): false when
   * it was removed (garbage collection) or refreshed meanwhile. Never creates one: an
   * association re-created after a collection removed it could outlive the unit it names.
   */
  async refresh(repoId: string, unitType: UnitTypeId, unitId: string, seen: string): Promise<boolean> {
    const res = await this.c.repoContentUnits.updateOne({ repo_id: repoId, unit_type_id: unitType, unit_id: unitId, updated: seen }, { $set: { updated: processClock.now().toISOString() } });
    return res.matchedCount === 1;
  }

  async disassociate(repoId: string, unitType: UnitTypeId, unitIds: string[]): Promise<void> {
    if (unitIds.length === 0) return;
    const { deletedCount } = await this.c.repoContentUnits.deleteMany({ repo_id: repoId, unit_type_id: unitType, unit_id: { $in: unitIds } });
    await moveUnitCount(this.c, repoId, unitType, -deletedCount);
  }

  async isAssociated(repoId: string, unitType: UnitTypeId, unitId: string): Promise<boolean> {
    return (await this.c.repoContentUnits.findOne({ repo_id: repoId, unit_type_id: unitType, unit_id: unitId }, ID_ONLY)) !== null;
  }

  /** Ids of the units of one type a repository holds. */
  async unitIds(repoId: string, unitType: UnitTypeId): Promise<string[]> {
    const rows = await this.c.repoContentUnits.find({ repo_id: repoId, unit_type_id: unitType }, { projection: { unit_id: 1 } }).toArray();
    return rows.map((r) => r.unit_id);
  }

  /** Number of repositories that hold a unit (garbage collection keeps units with any). */
  async holders(unitType: UnitTypeId, unitId: string): Promise<number> {
    return this.c.repoContentUnits.countDocuments({ unit_type_id: unitType, unit_id: unitId });
  }
}

/**
 * Moves a repository's `content_unit_counts.<unit type>` (Pulp 2's tally of the units it holds,
 * which Pulp 2 tools read instead of counting) by the associations a write created (+) or
 * removed (-). Every writer of `repo_content_units` calls it with what its write reported, so
 * racing writers each count only their own change. Migration 0005 rebuilds the tallies.
 */
export async function moveUnitCount(c: Pick<Collections, 'repos'>, repoId: string, unitType: UnitTypeId, delta: number): Promise<void> {
  if (delta === 0) return;
  await c.repos.updateOne({ _id: repoId }, { $inc: { [`content_unit_counts.${unitType}`]: delta } }, TALLY_WRITE);
}

/** Is `repoId` in `set`? Then it becomes the most recent. */
function remembered(set: Set<string>, repoId: string): boolean {
  if (!set.delete(repoId)) return false;
  set.add(repoId);
  return true;
}

/** Adds `repoId` as the most recent; the least recent go past `kept`. */
function remember(set: Set<string>, repoId: string, kept: number): void {
  set.add(repoId);
  if (set.size > kept) set.delete(set.values().next().value as string);
}

/**
 * The tally moves of one push's associations (its manifest's and its tags'), written in one
 * update of the repository document when the push ends instead of one each. Between an
 * association and the flush the tally is behind by it, as it is when a crash loses a move.
 */
export class TallyMoves {
  private readonly deltas = new Map<UnitTypeId, number>();

  constructor(
    private readonly c: Pick<Collections, 'repos'>,
    readonly repoId: string,
  ) {}

  add(unitType: UnitTypeId, delta: number): void {
    this.deltas.set(unitType, (this.deltas.get(unitType) ?? 0) + delta);
  }

  async flush(): Promise<void> {
    const inc = Object.fromEntries([...this.deltas].filter(([, d]) => d !== 0).map(([type, d]) => [`content_unit_counts.${type}`, d]));
    this.deltas.clear();
    if (Object.keys(inc).length === 0) return;
    await this.c.repos.updateOne({ _id: this.repoId }, { $inc: inc }, TALLY_WRITE);
  }
}

// Not waiting for the journal: the tally is informational (volreg never reads it), and the
// next journaled write syncs it with everything before it; a crash can lose only the last
// moves. A push does not wait a sync more for it.
const TALLY_WRITE = { writeConcern: { w: 1, j: false } } as const;

export function isDuplicateKey(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 11000;
}
