import type { Document } from 'bson';
import { compareValues, encodeKey, isPlainObject, numericValue, pathValues } from './bson-values.ts';
import type { Collection, StoredRecord } from './collection-store.ts';
import { engineError, EngineError } from './errors.ts';
import type { Index } from './index-manager.ts';
import { compileFilter, type Matcher } from './matcher.ts';

/**
 * Selects, filters, sorts and pages the records of a collection for a query.
 * Planning is deliberately simple: equality and $in on the leading fields of an index
 * (or on _id) become hash lookups; anything else is a full scan. Every candidate is
 * re-checked against the full filter, so an index only narrows, never decides.
 */

export interface QueryOptions {
  sort?: Document;
  skip?: number;
  limit?: number;
}

const MAX_LOOKUP_COMBINATIONS = 10_000;

/** Equality constraints usable for lookups: field -> candidate values (view shape). */
function equalityConstraints(filter: Document, out: Map<string, unknown[]>): void {
  for (const key of Object.keys(filter)) {
    const v = filter[key];
    if (key === '$and' && Array.isArray(v)) {
      for (const sub of v) if (isPlainObject(sub)) equalityConstraints(sub, out);
      continue;
    }
    if (key.startsWith('$')) continue;
    const values = lookupValues(v);
    if (values !== undefined && !out.has(key)) out.set(key, values);
  }
}

function isLookupable(v: unknown): boolean {
  return !Array.isArray(v) && !(v instanceof RegExp) && !(isPlainObject(v) && Object.keys(v).some((k) => k.startsWith('$')));
}

function lookupValues(v: unknown): unknown[] | undefined {
  if (isPlainObject(v) && Object.keys(v).some((k) => k.startsWith('$'))) {
    if ('$eq' in v) return isLookupable(v['$eq']) ? [v['$eq']] : undefined;
    const inList = v['$in'];
    if (Array.isArray(inList) && inList.every(isLookupable)) return inList;
    return undefined;
  }
  return isLookupable(v) ? [v] : undefined;
}

/** Candidate records for a filter, or undefined when the whole collection must be scanned. */
export function candidateRecords(coll: Collection, filter: Document): StoredRecord[] | undefined {
  const eq = new Map<string, unknown[]>();
  equalityConstraints(filter, eq);
  if (eq.size === 0) return undefined;
  const ids = eq.get('_id');
  if (ids) {
    const out: StoredRecord[] = [];
    const seen = new Set<string>();
    for (const id of ids) {
      const rid = encodeKey(id);
      const rec = coll.records.get(rid);
      if (rec && !seen.has(rid)) {
        seen.add(rid);
        out.push(rec);
      }
    }
    return out;
  }
  let best: { ix: Index; n: number; combos: number } | undefined;
  for (const ix of coll.indexes.values()) {
    if (ix.isPartial) continue;
    let n = 0;
    let combos = 1;
    for (const f of ix.fields) {
      const vals = eq.get(f);
      if (!vals) break;
      // A sparse index holds no entry for documents missing the field, so it cannot answer null.
      if (ix.sparse && vals.some((x) => x === null || x === undefined)) break;
      combos *= Math.max(vals.length, 1);
      n++;
    }
    if (n === 0 || combos > MAX_LOOKUP_COMBINATIONS) continue;
    const better = !best || n > best.n || (n === best.n && ix.unique && !best.ix.unique);
    if (better) best = { ix, n, combos };
  }
  if (!best) return undefined;
  const fields = best.ix.fields.slice(0, best.n);
  const rids = new Set<string>();
  const walk = (i: number, acc: unknown[]): void => {
    if (i === fields.length) {
      best.ix.lookup(acc, rids);
      return;
    }
    for (const v of eq.get(fields[i] as string) as unknown[]) walk(i + 1, [...acc, v]);
  };
  walk(0, []);
  const out: StoredRecord[] = [];
  for (const rid of rids) {
    const rec = coll.records.get(rid);
    if (rec) out.push(rec);
  }
  // Keep natural (insertion) order among candidates when there are few enough to sort cheaply.
  return out;
}

export function testRecord(m: Matcher, rec: StoredRecord): boolean {
  try {
    return m.test(rec.view);
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw engineError('BadValue', err instanceof Error ? err.message : String(err));
  }
}

/** Runs a query and returns the matching records in result order. */
export function findRecords(coll: Collection | undefined, filter: Document, opts: QueryOptions = {}): StoredRecord[] {
  if (!coll) return [];
  const matcher = compileFilter(filter);
  let sortSpec = opts.sort && Object.keys(opts.sort).length > 0 ? parseSort(opts.sort) : undefined;
  // {$natural: ±1} is insertion order, which is how records are kept.
  const natural = sortSpec?.length === 1 && sortSpec[0]?.[0] === '$natural' ? sortSpec[0][1] : undefined;
  if (natural !== undefined) sortSpec = undefined;
  const skip = Math.max(0, opts.skip ?? 0);
  const limit = opts.limit !== undefined && opts.limit !== 0 ? Math.abs(opts.limit) : Infinity;
  let source: Iterable<StoredRecord> = candidateRecords(coll, filter) ?? coll.records.values();
  if (natural === -1) source = [...source].reverse();
  const out: StoredRecord[] = [];
  if (!sortSpec) {
    let skipped = 0;
    for (const rec of source) {
      if (!testRecord(matcher, rec)) continue;
      if (skipped < skip) {
        skipped++;
        continue;
      }
      out.push(rec);
      if (out.length >= limit) break;
    }
    return out;
  }
  for (const rec of source) if (testRecord(matcher, rec)) out.push(rec);
  const sorted = sortRecords(out, sortSpec);
  return sorted.slice(skip, limit === Infinity ? undefined : skip + limit);
}

export type SortSpec = Array<[string, 1 | -1]>;

export function parseSort(sort: Document): SortSpec {
  return Object.keys(sort).map((f) => {
    const d = sort[f];
    if (isPlainObject(d)) {
      throw engineError('BadValue', `$meta sort by '${String(d['$meta'])}' is not supported by the volreg embedded engine`);
    }
    const n = numericValue(d);
    if (n !== 1 && n !== -1) throw engineError('BadValue', `Illegal key in $sort specification: ${f}: ${String(n ?? d)}`);
    return [f, n] as [string, 1 | -1];
  });
}

/** mongod sort key of a field: for arrays the smallest element ascending, the largest descending. */
function sortKey(view: Document, field: string, dir: 1 | -1): unknown {
  const vals = pathValues(view, field);
  if (vals.length === 1) return vals[0] ?? null;
  let best: unknown = vals[0] ?? null;
  for (const v of vals) {
    const c = compareValues(v ?? null, best);
    if ((dir === 1 && c < 0) || (dir === -1 && c > 0)) best = v ?? null;
  }
  return best;
}

export function sortRecords(recs: StoredRecord[], spec: SortSpec): StoredRecord[] {
  return sortViews(recs, (r) => r.view, spec);
}

export function sortViews<T>(items: T[], viewOf: (t: T) => Document, spec: SortSpec): T[] {
  const decorated = items.map((item) => ({ item, keys: spec.map(([f, d]) => sortKey(viewOf(item), f, d)) }));
  decorated.sort((a, b) => {
    for (let i = 0; i < spec.length; i++) {
      const c = compareValues(a.keys[i], b.keys[i]);
      if (c !== 0) return c * (spec[i] as [string, 1 | -1])[1];
    }
    return 0;
  });
  return decorated.map((d) => d.item);
}
