import { COLLECTIONS, UNIT_TYPES, type Collections, type UnitTypeId } from './collections.ts';
import { MarkedCache } from './marked-cache.ts';

/**
 * Which units a repository holds (`repo_content_units`), as the read paths ask: one unit's
 * association and when it was last refreshed, or which of several units are held. A blob HEAD,
 * a manifest GET and a manifest push's reference check all ask this for every request.
 *
 * With the embedded engine's change marks (marked-cache.ts) an association found is kept
 * until it changes (or one sharing its mark's slot does), by whichever request or collection.
 * Only what a repository holds is kept: a unit not held is asked again next time. An
 * association this process wrote is kept as written, when nothing else changed it meanwhile:
 * a push's own check that it still holds its manifest then asks nothing.
 */
export class HeldUnits {
  private readonly cache = new MarkedCache<string | null>(20_000);
  private readonly mark: ((repo: string, type: UnitTypeId, unitId: string) => number) | undefined;

  constructor(private readonly c: Collections) {
    this.mark = c.marks?.reader(COLLECTIONS.repoContentUnits);
  }

  /** The association's `updated` (ISO 8601) if `repo` holds the unit; null otherwise. */
  async updated(repo: string, type: UnitTypeId, unitId: string): Promise<string | null> {
    const load = async (): Promise<string | null> => {
      const held = await this.c.repoContentUnits.findOne({ repo_id: repo, unit_type_id: type, unit_id: unitId }, { projection: { _id: 0, updated: 1 } });
      return held ? held.updated : null;
    };
    const mark = this.mark;
    if (!mark) return load();
    return this.cache.read(key(repo, type, unitId), () => mark(repo, type, unitId), load, (v) => v !== null);
  }

  /**
   * The association's mark, noted before this process writes it: undefined without marks, and
   * for tags, whose associations no read here asks about (keeping them would only crowd out
   * the holdings pulls and pushes ask about).
   */
  markOf(repo: string, type: UnitTypeId, unitId: string): number | undefined {
    return type === UNIT_TYPES.tag ? undefined : this.mark?.(repo, type, unitId);
  }

  /**
   * This process's write created or refreshed the association (to `updated`), with its mark
   * noted at `before`: kept as held unless another change came in between.
   */
  wrote(repo: string, type: UnitTypeId, unitId: string, before: number | undefined, updated: string): void {
    const mark = this.mark;
    if (!mark || before === undefined) return;
    this.cache.keepWritten(key(repo, type, unitId), before, () => mark(repo, type, unitId), updated);
  }

  /** The ids of those of `units` that `repo` holds. */
  async heldIds(repo: string, units: ReadonlyArray<{ id: string; type: UnitTypeId }>): Promise<Set<string>> {
    const held = new Set<string>();
    const mark = this.mark;
    // each association's mark, noted before anything is asked
    const noted = new Map<string, number>();
    const ask: Array<{ id: string; type: UnitTypeId }> = [];
    for (const u of units) {
      const k = key(repo, u.type, u.id);
      if (mark) {
        const now = mark(repo, u.type, u.id);
        noted.set(k, now);
        if (this.cache.lookup(k, now) !== undefined) {
          held.add(u.id);
          continue;
        }
      }
      ask.push(u);
    }
    if (ask.length === 0) return held;
    const rows = await this.c.repoContentUnits
      .find(
        { repo_id: repo, unit_type_id: { $in: [...new Set(ask.map((u) => u.type))] }, unit_id: { $in: ask.map((u) => u.id) } },
        { projection: { unit_id: 1, unit_type_id: 1, updated: 1 } },
      )
      .toArray();
    for (const r of rows) {
      held.add(r.unit_id);
      const k = key(repo, r.unit_type_id, r.unit_id);
      const readAt = noted.get(k);
      if (mark && readAt !== undefined) this.cache.keep(k, readAt, () => mark(repo, r.unit_type_id, r.unit_id), r.updated);
    }
    return held;
  }
}

function key(repo: string, type: UnitTypeId, unitId: string): string {
  return `${repo}\0${type}\0${unitId}`;
}

const perDatabase = new WeakMap<Collections, HeldUnits>();

/** One per database handle, shared by the repositories that read associations. */
export function heldUnits(c: Collections): HeldUnits {
  let h = perDatabase.get(c);
  if (!h) {
    h = new HeldUnits(c);
    perDatabase.set(c, h);
  }
  return h;
}
