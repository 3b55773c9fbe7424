import { VolregError } from '../errors.ts';
import { isTag, parseRepositoryName } from '../names.ts';

/**
 * Where the next page of an /api/v1 listing starts: just after the entry the previous page
 * ended on, named by the values the list is sorted by (not by a count of entries before it).
 * Entries added or removed before it then move no other entry across a page boundary, and the
 * position stays meaningful after the entry it names is deleted.
 *
 * A volume's snapshots are sorted newest first, ties (snapshots created in the same
 * millisecond) by tag, so a snapshot's position is its `created` and its tag, written
 * `<epoch milliseconds>.<tag>` (the number holds no '.', so the first one ends it). The volume
 * list is sorted by name: a position there is a volume name.
 */
export interface SnapshotPosition {
  created: Date;
  tag: string;
}

const SNAPSHOT_POSITION = /^(-?\d{1,16})\.(.+)$/;

export function snapshotPosition(snapshot: { created: string; tag: string }): string {
  return `${Date.parse(snapshot.created)}.${snapshot.tag}`;
}

const notAPosition = (raw: string): VolregError =>
  new VolregError('BAD_REQUEST', 'after must be a position a listing gave (its next link or "next")', { after: raw.slice(0, 200) });

export function parseSnapshotPosition(raw: string): SnapshotPosition {
  const m = SNAPSHOT_POSITION.exec(raw);
  const created = m ? new Date(Number(m[1])) : null;
  if (!m || !created || Number.isNaN(created.getTime()) || !isTag(m[2]!)) throw notAPosition(raw);
  return { created, tag: m[2]! };
}

export function parseVolumePosition(raw: string): string {
  try {
    return parseRepositoryName(raw);
  } catch {
    throw notAPosition(raw);
  }
}
