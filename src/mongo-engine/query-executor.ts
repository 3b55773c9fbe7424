import { ObjectId, type Document } from 'bson';
import { compareValues, encodeKey, isPlainObject, numericValue, pathValues, typeRank } from './bson-values.ts';
import type { Collection, StoredRecord } from './collection-store.ts';
import { engineError, EngineError } from './errors.ts';
import type { Index, RecordId } from './index-manager.ts';
import { compileFilter, type Matcher } from './matcher.ts';
import type { OrderedEntries, OrderedEntry } from './ordered-entries.ts';

/**
 * Selects, filters, sorts and pages the records of a collection for a query.
 *
 * Planning: equality and $in on the leading fields of an index (or on _id) are hash lookups;
 * a range ($gt/$gte/$lt/$lte) on the index field right after such an equality prefix is a walk
 * of the index's ordered entries between two positions; a sort that follows an index (after
 * the fields fixed by equality, in its direction or exactly reversed) is answered by walking
 * that index in order and stops as soon as skip + limit records matched. Anything else is a
 * full scan. Every candidate is re-checked against the full filter, so an index only narrows,
 * never decides. Ordered walks are not used on multikey indexes (array values), where mongod's
 * range and sort semantics differ from a walk of the entries. A top-level $or, when nothing
 * else narrows the query, is the union of its branches' candidates if each branch has a plan.
 */

export interface QueryOptions {
  sort?: Document;
  skip?: number;
  limit?: number;
}

/** How queries were answered; the engine-internals tests read it to prove that nothing was scanned. */
export const planStats = {
  /** queries that examined every record of a collection */
  collectionScans: 0,
  /** queries answered by walking an index's ordered entries */
  orderedWalks: 0,
  /** records tested against a filter */
  recordsExamined: 0,
};

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

interface Bound {
  v: unknown;
  inclusive: boolean;
}

/**
 * A range on one field. Like mongod, comparison operators only match values of the bound's
 * type (type bracketing), so the range lies within one type rank of the BSON order.
 */
interface FieldRange {
  rank: number;
  lo?: Bound;
  hi?: Bound;
}

function rangeable(v: unknown): boolean {
  return typeof v === 'string' || (typeof v === 'number' && !Number.isNaN(v)) || v instanceof Date || v instanceof ObjectId;
}

const RANGE_OPS = { $gt: ['lo', false], $gte: ['lo', true], $lt: ['hi', false], $lte: ['hi', true] } as const;

/** Range constraints: field -> range, or null when the field's bounds cannot be used. */
function rangeConstraints(filter: Document, out: Map<string, FieldRange | null>): void {
  for (const key of Object.keys(filter)) {
    const v = filter[key];
    if (key === '$and' && Array.isArray(v)) {
      for (const sub of v) if (isPlainObject(sub)) rangeConstraints(sub, out);
      continue;
    }
    if (key.startsWith('$') || !isPlainObject(v)) continue;
    for (const op of Object.keys(v)) {
      const kind = RANGE_OPS[op as keyof typeof RANGE_OPS];
      if (!kind) continue;
      const bound = v[op];
      const current = out.get(key);
      if (current === null) continue;
      if (!rangeable(bound) || (current && current.rank !== typeRank(bound))) {
        out.set(key, null);
        continue;
      }
      const r: FieldRange = current ?? { rank: typeRank(bound) };
      const [side, inclusive] = kind;
      const prev = r[side];
      const c = prev ? compareValues(bound, prev.v) : 0;
      // keep the tighter bound (several may come from $and)
      const tighter = !prev || (side === 'lo' ? c > 0 || (c === 0 && !inclusive) : c < 0 || (c === 0 && !inclusive));
      if (tighter) r[side] = { v: bound, inclusive };
      out.set(key, r);
    }
  }
}

/** Where a value lies relative to a range, in ascending BSON order: -1 below, 0 inside, 1 above. */
function rangePosition(v: unknown, r: FieldRange): number {
  const rank = typeRank(v);
  if (rank !== r.rank) return rank < r.rank ? -1 : 1;
  if (r.lo) {
    const c = compareValues(v, r.lo.v);
    if (c < 0 || (c === 0 && !r.lo.inclusive)) return -1;
  }
  if (r.hi) {
    const c = compareValues(v, r.hi.v);
    if (c > 0 || (c === 0 && !r.hi.inclusive)) return 1;
  }
  return 0;
}

/** The contiguous stretch of an index holding `prefix` on its first fields (and `range` on the next). */
interface KeySpan {
  before(e: OrderedEntry): boolean;
  after(e: OrderedEntry): boolean;
}

function keySpan(ix: Index, prefix: readonly unknown[], range: FieldRange | undefined): KeySpan {
  const dirs = ix.dirs;
  const p = prefix.length;
  const position = (e: OrderedEntry): number => {
    for (let i = 0; i < p; i++) {
      const c = compareValues(e.vals[i], prefix[i]);
      if (c !== 0) return c * (dirs[i] as number);
    }
    return range ? rangePosition(e.vals[p], range) * (dirs[p] as number) : 0;
  };
  return { before: (e) => position(e) < 0, after: (e) => position(e) > 0 };
}

/** Visits the entries of a span in index order (or reversed) until `visit` returns true. */
function walkSpan(ordered: OrderedEntries, span: KeySpan, reverse: boolean, visit: (e: OrderedEntry) => boolean): void {
  const from = ordered.seek(span.before);
  const to = ordered.seek((e) => !span.after(e));
  ordered.each(from, to, reverse, visit);
}

type Plan =
  | { kind: 'scan' }
  | { kind: 'ids'; ids: unknown[] }
  | { kind: 'hash'; ix: Index; fields: string[] }
  /** candidates from ordered walks, one per combination of the equality prefix */
  | { kind: 'range'; ix: Index; prefixes: unknown[][]; range: FieldRange }
  /** the index walked in the query's sort order */
  | { kind: 'ordered'; ix: Index; prefix: unknown[]; range: FieldRange | undefined; reverse: boolean; sortFields: number }
  /** a top-level $or whose every branch has a plan of its own: the union of their candidates */
  | { kind: 'or'; branches: Array<{ plan: Plan; filter: Document }> };

function combinations(fields: readonly string[], eq: Map<string, unknown[]>): unknown[][] {
  let combos: unknown[][] = [[]];
  for (const f of fields) {
    const next: unknown[][] = [];
    for (const c of combos) for (const v of eq.get(f) as unknown[]) next.push([...c, v]);
    combos = next;
  }
  return combos;
}

/** The sort plan an index offers, if its order (after `p` fixed fields) is the sort's. */
function sortPlanFor(ix: Index, p: number, sortSpec: SortSpec): { reverse: boolean; sortFields: number } | undefined {
  const fixed = new Set(ix.fields.slice(0, p));
  const rest = sortSpec.filter(([f]) => !fixed.has(f));
  if (p + rest.length > ix.fields.length) return undefined;
  let reverse: boolean | undefined;
  for (let i = 0; i < rest.length; i++) {
    const [f, d] = rest[i] as [string, 1 | -1];
    if (ix.fields[p + i] !== f) return undefined;
    const r = d !== ix.dirs[p + i];
    if (reverse !== undefined && r !== reverse) return undefined;
    reverse = r;
  }
  return { reverse: reverse ?? false, sortFields: rest.length };
}

/**
 * Picks how to find the candidates. Score: fields fixed by equality, +0.5 for a range on the
 * next field, +0.25 for answering the sort; a unique index wins ties among hash lookups.
 */
function planQuery(coll: Collection, filter: Document, sortSpec: SortSpec | undefined): Plan {
  const eq = new Map<string, unknown[]>();
  equalityConstraints(filter, eq);
  const ids = eq.get('_id');
  if (ids) return { kind: 'ids', ids };
  const ranges = new Map<string, FieldRange | null>();
  rangeConstraints(filter, ranges);
  if (eq.size === 0 && ranges.size === 0 && !sortSpec) return orPlan(coll, filter) ?? { kind: 'scan' };
  let best: { plan: Plan; score: number } | undefined;
  const consider = (plan: Plan, score: number): void => {
    if (!best || score > best.score) best = { plan, score };
  };
  for (const ix of coll.indexes.values()) {
    if (ix.isPartial) continue;
    let n = 0;
    let single = 0; // leading fields fixed to one value
    let combos = 1;
    for (const f of ix.fields) {
      const vals = eq.get(f);
      if (!vals) break;
      // A sparse index holds no entry for documents missing the field, so it cannot answer null.
      if (ix.sparse && vals.some((x) => x === null || x === undefined)) break;
      combos *= Math.max(vals.length, 1);
      if (single === n && vals.length === 1) single++;
      n++;
    }
    if (n > 0 && combos <= MAX_LOOKUP_COMBINATIONS) consider({ kind: 'hash', ix, fields: ix.fields.slice(0, n) }, n + (ix.unique ? 0.1 : 0));
    if (!ix.orderable || ix.isMultikey) continue;
    const range = n < ix.fields.length ? ranges.get(ix.fields[n] as string) ?? undefined : undefined;
    if (range && combos <= MAX_LOOKUP_COMBINATIONS) {
      consider({ kind: 'range', ix, prefixes: combinations(ix.fields.slice(0, n), eq), range }, n + 0.5);
    }
    if (sortSpec) {
      const sortRange = single < ix.fields.length ? ranges.get(ix.fields[single] as string) ?? undefined : undefined;
      // without a constraint on its first field a sparse index misses documents
      if (ix.sparse && single === 0 && !sortRange) continue;
      const sp = sortPlanFor(ix, single, sortSpec);
      if (sp) {
        const prefix = ix.fields.slice(0, single).map((f) => (eq.get(f) as unknown[])[0]);
        consider({ kind: 'ordered', ix, prefix, range: sortRange, ...sp }, single + (sortRange ? 0.5 : 0) + 0.25);
      }
    }
  }
  return best?.plan ?? orPlan(coll, filter) ?? { kind: 'scan' };
}

/**
 * A filter nothing else narrows, whose top-level $or has branches that each use an index (a
 * reference looked up in one of two fields, say): every match satisfies one branch, so the union
 * of the branches' candidates holds them all. Undefined when a branch would need a scan.
 */
function orPlan(coll: Collection, filter: Document): Plan | undefined {
  const or = filter['$or'];
  if (!Array.isArray(or) || or.length === 0 || or.length > MAX_OR_BRANCHES) return undefined;
  const branches: Array<{ plan: Plan; filter: Document }> = [];
  for (const branch of or) {
    if (!isPlainObject(branch)) return undefined;
    const plan = planQuery(coll, branch, undefined);
    if (plan.kind === 'scan' || plan.kind === 'ordered') return undefined;
    branches.push({ plan, filter: branch });
  }
  return { kind: 'or', branches };
}

const MAX_OR_BRANCHES = 16;

function recordsOf(coll: Collection, rids: Iterable<RecordId>): StoredRecord[] {
  const out: StoredRecord[] = [];
  for (const rid of rids) {
    const rec = coll.records.get(rid);
    if (rec) out.push(rec);
  }
  return out;
}

/** Candidates in the order a scan would have met them, so results never depend on the plan. */
function inNaturalOrder(recs: StoredRecord[]): StoredRecord[] {
  return recs.length > 1 ? recs.sort((a, b) => a.seq - b.seq) : recs;
}

/** Candidates of a non-ordered plan, or undefined for a full scan. */
function planCandidates(coll: Collection, plan: Plan, eq: () => Map<string, unknown[]>): StoredRecord[] | undefined {
  switch (plan.kind) {
    case 'scan':
    case 'ordered':
      return undefined;
    case 'ids': {
      const out: StoredRecord[] = [];
      const seen = new Set<string>();
      for (const id of plan.ids) {
        const rid = encodeKey(id);
        const rec = coll.records.get(rid);
        if (rec && !seen.has(rid)) {
          seen.add(rid);
          out.push(rec);
        }
      }
      return out;
    }
    case 'hash': {
      const rids = new Set<string>();
      for (const combo of combinations(plan.fields, eq())) plan.ix.lookup(combo, rids);
      return inNaturalOrder(recordsOf(coll, rids));
    }
    case 'or': {
      const union = new Set<StoredRecord>();
      for (const b of plan.branches) for (const rec of planCandidates(coll, b.plan, () => equalitiesOf(b.filter)) ?? []) union.add(rec);
      return inNaturalOrder([...union]);
    }
    case 'range': {
      planStats.orderedWalks++;
      const rids: RecordId[] = [];
      const ordered = plan.ix.orderedEntries(coll.records.values());
      for (const prefix of plan.prefixes) {
        walkSpan(ordered, keySpan(plan.ix, prefix, plan.range), false, (e) => {
          rids.push(e.rid);
          return false;
        });
      }
      return inNaturalOrder(recordsOf(coll, rids));
    }
  }
}

/**
 * `distinct` answered from an index alone, as mongod's DISTINCT_SCAN: when the filter is string
 * equalities on the leading fields of an ordered index and `key` is the next field, the
 * answer is the key values of that span in index order, without a record read or a match.
 * Undefined when it does not apply, or when a value found is not a plain string (a missing
 * field, null and other types need the records' exact values): the caller then reads them.
 */
export function distinctFromIndex(coll: Collection, filter: Document, key: string): string[] | undefined {
  const fields = Object.keys(filter);
  if (fields.some((f) => f.startsWith('$') || typeof filter[f] !== 'string')) return undefined;
  for (const ix of coll.indexes.values()) {
    if (ix.isPartial || ix.sparse || !ix.orderable || ix.isMultikey) continue;
    // the filter's fields are exactly the index's leading ones, and the key comes next
    const leading = ix.fields.slice(0, fields.length);
    if (ix.fields[fields.length] !== key || !fields.every((f) => leading.includes(f))) continue;
    planStats.orderedWalks++;
    const prefix = leading.map((f) => filter[f]);
    const values: string[] = [];
    let plain = true;
    walkSpan(ix.orderedEntries(coll.records.values()), keySpan(ix, prefix, undefined), false, (e) => {
      const v = e.vals[fields.length];
      if (typeof v !== 'string') {
        plain = false;
        return true; // stop: the records decide
      }
      // in index order equal values are neighbours
      if (values[values.length - 1] !== v) values.push(v);
      return false;
    });
    return plain ? values : undefined;
  }
  return undefined;
}

/** Candidate records for a filter, or undefined when the whole collection must be scanned. */
export function candidateRecords(coll: Collection, filter: Document): StoredRecord[] | undefined {
  return planCandidates(coll, planQuery(coll, filter, undefined), () => equalitiesOf(filter));
}

function equalitiesOf(filter: Document): Map<string, unknown[]> {
  const eq = new Map<string, unknown[]>();
  equalityConstraints(filter, eq);
  return eq;
}

export function testRecord(m: Matcher, rec: StoredRecord): boolean {
  planStats.recordsExamined++;
  try {
    return m.test(rec.view);
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw engineError('BadValue', err instanceof Error ? err.message : String(err));
  }
}

/**
 * Walks an index in sort order and keeps the first skip + limit matches. Entries whose sort
 * fields are equal are taken together in natural order, which is what a stable sort of a
 * scan gives, so the answer is the same as without the index.
 */
function orderedFind(coll: Collection, plan: Extract<Plan, { kind: 'ordered' }>, matcher: Matcher, skip: number, limit: number): StoredRecord[] {
  planStats.orderedWalks++;
  const { ix, sortFields } = plan;
  const first = plan.prefix.length;
  const out: StoredRecord[] = [];
  let skipped = 0;
  const group: StoredRecord[] = [];
  let groupKey: OrderedEntry | undefined;
  /** takes the group's matches; true once the page is full */
  const flush = (): boolean => {
    if (group.length > 1) group.sort((a, b) => a.seq - b.seq);
    for (const rec of group) {
      if (!testRecord(matcher, rec)) continue;
      if (skipped < skip) {
        skipped++;
        continue;
      }
      out.push(rec);
      if (out.length >= limit) return true;
    }
    group.length = 0;
    return false;
  };
  const sameGroup = (a: OrderedEntry, b: OrderedEntry): boolean => {
    for (let i = first; i < first + sortFields; i++) if (compareValues(a.vals[i], b.vals[i]) !== 0) return false;
    return true;
  };
  let full = false;
  walkSpan(ix.orderedEntries(coll.records.values()), keySpan(ix, plan.prefix, plan.range), plan.reverse, (e) => {
    if (groupKey && !sameGroup(groupKey, e) && flush()) return (full = true);
    groupKey = e;
    const rec = coll.records.get(e.rid);
    if (rec) group.push(rec);
    return false;
  });
  if (!full) flush();
  return out;
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
  const plan = planQuery(coll, filter, sortSpec);
  if (plan.kind === 'ordered') return orderedFind(coll, plan, matcher, skip, limit);
  const candidates = planCandidates(coll, plan, () => equalitiesOf(filter));
  if (!candidates) planStats.collectionScans++;
  let source: Iterable<StoredRecord> = candidates ?? coll.records.values();
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
