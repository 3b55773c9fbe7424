import type { Context } from 'koa';
import { VolregError } from '../domain/errors.ts';
import { parseTime } from '../domain/times.ts';
import { parseHost } from '../domain/volumes/snapshot-config.ts';
import { queryOne, queryOneKeepingPlus, queryValues } from './query-values.ts';
import { parseSnapshotPosition, parseVolumePosition, type SnapshotPosition } from '../domain/volumes/listing-position.ts';

/**
 * The query of an /api/v1 listing: the page (`limit`, and where it starts: `offset`, or `after`,
 * the position a previous page's next link names) and the filters `host`, `since` and `until`.
 * One place for the rules of every listing: a volume's snapshots take all of them, the volume
 * list only the page and refuses the filters.
 */
export interface Page<P> {
  limit: number;
  offset: number;
  /** the position the page starts after (listing-position.ts) */
  after?: P;
}

export interface ListingQuery extends Page<SnapshotPosition> {
  host?: string;
  since?: Date;
  until?: Date;
}

const MAX_LIMIT = 1000;
const DEFAULT_LIMIT = 100;
const MAX_OFFSET = 1e9;

function intParam(ctx: Context, key: string, def: number, min: number, max: number): number {
  const raw = queryOne(ctx, key);
  if (raw === undefined) return def;
  // digits only (no sign, space, hex or exponent), judged by value: leading zeros are the number
  if (!/^[0-9]+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new VolregError('PAGINATION_NUMBER_INVALID', `${key} must be an integer from ${min} to ${max}`, { [key]: raw.slice(0, 20) });
  }
  return Number(raw);
}

function timeParam(ctx: Context, key: string): Date | undefined {
  const raw = queryOneKeepingPlus(ctx, key);
  if (raw === undefined) return undefined;
  const d = parseTime(raw);
  if (d === null) throw new VolregError('BAD_REQUEST', `${key} must be ISO 8601 (2024-05-01, 2024-05-01T10:00:00Z) or epoch seconds`, { [key]: raw.slice(0, 40) });
  return d;
}

const FILTERS = ['host', 'since', 'until'] as const;
const PAGE_PARAMETERS = ['limit', 'offset', 'after'] as const;

/**
 * A parameter a listing does not know is refused, not ignored: `?label=env=test` or `?tag=` read
 * as a filter and ignored would hand a retention job every snapshot of the volume to delete.
 */
function refuseUnknownParameters(ctx: Context, known: readonly string[]): void {
  const unknown = Object.keys(ctx.query).filter((k) => !known.includes(k));
  if (unknown.length === 0) return;
  const shown = unknown.slice(0, 8).map((k) => k.slice(0, 40));
  throw new VolregError('BAD_REQUEST', `this list takes no parameter ${shown.join(', ')} (it takes ${known.join(', ')}): nothing was filtered`, {
    unsupported: shown,
  });
}

/** The listing parameters of a listing that filters (a volume's snapshots): 400 for a bad one, or one it does not know. */
export function listingQuery(ctx: Context): ListingQuery {
  refuseUnknownParameters(ctx, [...PAGE_PARAMETERS, ...FILTERS]);
  const host = queryOne(ctx, 'host');
  return { ...pageQuery(ctx, parseSnapshotPosition), host: host === undefined ? undefined : parseHost(host), since: timeParam(ctx, 'since'), until: timeParam(ctx, 'until') };
}

/**
 * `limit` and `offset` of a listing that does not filter (the volume list): a filter given
 * anyway is refused, rather than taken and ignored, so no one reads an unfiltered list as filtered.
 */
export function unfilteredListingQuery(ctx: Context, filteredThere: string): Page<string> {
  const given = FILTERS.filter((f) => queryValues(ctx, f).length > 0);
  if (given.length > 0) {
    throw new VolregError('BAD_REQUEST', `this list does not filter by ${given.join(', ')}: ${filteredThere} does`, { unsupported: given });
  }
  refuseUnknownParameters(ctx, PAGE_PARAMETERS);
  return pageQuery(ctx, parseVolumePosition);
}

function pageQuery<P>(ctx: Context, parsePosition: (raw: string) => P): Page<P> {
  const limit = intParam(ctx, 'limit', DEFAULT_LIMIT, 1, MAX_LIMIT);
  const offset = intParam(ctx, 'offset', 0, 0, MAX_OFFSET);
  const after = queryOne(ctx, 'after');
  if (after === undefined) return { limit, offset };
  // two starting points would contradict each other
  if (queryOne(ctx, 'offset') !== undefined) throw new VolregError('BAD_REQUEST', 'give after or offset, not both');
  return { limit, offset: 0, after: parsePosition(after) };
}
