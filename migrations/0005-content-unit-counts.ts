import type { Db } from 'mongodb';
import { COLLECTIONS, type UnitTypeId } from '../src/metadata/collections.ts';

/**
 * Fills every repository's `content_unit_counts` (DESIGN.md section 3; Pulp 2's tally of the
 * units a repository holds, by unit type) from `repo_content_units`. Volregs before this one
 * left it `{}` on every repository; writes now keep it moving (moveUnitCount). The shape is
 * unchanged: an object of numbers, a key per unit type the repository holds (Pulp 2's
 * rebuild wrote the same). Idempotent: it sets each tally to what the associations count.
 */
export const id = '0005-content-unit-counts';
export const description = 'count the units each repository holds into repos.content_unit_counts';

export async function up(db: Db): Promise<void> {
  const counts = new Map<string, Partial<Record<UnitTypeId, number>>>();
  const rows = db.collection(COLLECTIONS.repoContentUnits).aggregate<{ _id: { repo: string; type: UnitTypeId }; n: number }>([
    { $group: { _id: { repo: '$repo_id', type: '$unit_type_id' }, n: { $sum: 1 } } },
  ]);
  for await (const row of rows) {
    const tally = counts.get(row._id.repo) ?? {};
    tally[row._id.type] = row.n;
    counts.set(row._id.repo, tally);
  }
  for await (const repo of db.collection(COLLECTIONS.repos).find({}, { projection: { _id: 1 } })) {
    const repoId = String(repo._id);
    await db.collection(COLLECTIONS.repos).updateOne({ _id: repo._id }, { $set: { content_unit_counts: counts.get(repoId) ?? {} } });
  }
}

