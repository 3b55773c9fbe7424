/**
 * A plain in-memory model of the MongoDB semantics volreg relies on, written from the MongoDB
 * manual, for the engine's model-based tests: documents in natural (insertion) order, unique
 * indexes, the query operators of `src/metadata/` ($in, $nin, $ne, $exists, $gt/$gte/$lt/$lte,
 * $or, $and, dotted paths into arrays of documents, array indexes), the update operators ($set,
 * $setOnInsert, $inc, $max, $push, $pull with a condition), upserts, sort, skip, limit and
 * projection. Values are JSON-like (strings, int32 numbers, null, arrays, objects), as volreg
 * stores them.
 */

export type Value = null | number | string | boolean | Value[] | Doc;
export interface Doc {
  [field: string]: Value;
}
export type Filter = Record<string, unknown>;
export type Update = Partial<Record<'$set' | '$setOnInsert' | '$inc' | '$max' | '$push' | '$pull', Record<string, unknown>>>;

/** A MongoDB error the model expects, by code (the message is the server's business). */
export class ModelError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

export const DUPLICATE_KEY = 11000;
const BAD_VALUE = 2;
const TYPE_MISMATCH = 14;
const PATH_NOT_VIABLE = 28;
const CONFLICTING_UPDATE_OPERATORS = 40;
const IMMUTABLE_FIELD = 66;

const isDoc = (v: unknown): v is Doc => typeof v === 'object' && v !== null && !Array.isArray(v);

/** BSON comparison order: null (and missing) < numbers < strings < objects < arrays < booleans. */
function typeRank(v: Value | undefined): number {
  if (v === undefined || v === null) return 1;
  if (typeof v === 'number') return 2;
  if (typeof v === 'string') return 3;
  if (Array.isArray(v)) return 5;
  if (typeof v === 'boolean') return 8;
  return 4;
}

function compareStrings(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function compareValues(a: Value | undefined, b: Value | undefined): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra - rb;
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'string' && typeof b === 'string') return compareStrings(a, b);
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const c = compareValues(a[i] as Value, b[i] as Value);
      if (c !== 0) return c;
    }
    return a.length - b.length;
  }
  if (isDoc(a) && isDoc(b)) {
    const ea = Object.entries(a);
    const eb = Object.entries(b);
    for (let i = 0; i < Math.min(ea.length, eb.length); i++) {
      const [ka, va] = ea[i] as [string, Value];
      const [kb, vb] = eb[i] as [string, Value];
      const t = typeRank(va) - typeRank(vb);
      if (t !== 0) return t;
      const k = compareStrings(ka, kb);
      if (k !== 0) return k;
      const c = compareValues(va, vb);
      if (c !== 0) return c;
    }
    return ea.length - eb.length;
  }
  return 0;
}

/** Exact equality, field order included (as BSON compares documents). */
export function sameValue(a: Value | undefined, b: Value | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && typeRank(a) === typeRank(b) && compareValues(a, b) === 0);
}

export function clone<T>(v: T): T {
  return structuredClone(v);
}

/**
 * The values a path reaches, as a query sees them: through arrays of documents on the way, and a
 * leaf array stands for itself and for each of its elements. `found` is false when the path
 * reaches nothing at all (the field is missing).
 */
function reach(v: Value | undefined, segs: string[]): { values: Value[]; found: boolean } {
  if (segs.length === 0) {
    if (v === undefined) return { values: [], found: false };
    return { values: Array.isArray(v) ? [v, ...v] : [v], found: true };
  }
  const [seg, ...rest] = segs as [string, ...string[]];
  if (isDoc(v)) return reach(v[seg], rest);
  if (Array.isArray(v)) {
    const out: Value[] = [];
    let found = false;
    if (/^\d+$/.test(seg)) {
      const r = reach(v[Number(seg)], rest);
      out.push(...r.values);
      found ||= r.found;
    }
    for (const el of v) {
      if (!isDoc(el)) continue;
      const r = reach(el, segs);
      out.push(...r.values);
      found ||= r.found;
    }
    return { values: out, found };
  }
  return { values: [], found: false };
}

function equalityMatches(doc: Doc, path: string, want: unknown): boolean {
  const { values, found } = reach(doc, path.split('.'));
  if (want === null && (!found || values.includes(null))) return true;
  // a path through an array whose elements lack the field counts as null too
  if (want === null && path.includes('.') && values.length === 0) return true;
  return values.some((v) => sameValue(v, want as Value));
}

function comparisonMatches(doc: Doc, path: string, op: string, operand: unknown): boolean {
  const { values } = reach(doc, path.split('.'));
  return values.some((v) => {
    if (typeRank(v) !== typeRank(operand as Value)) return false;
    const c = compareValues(v, operand as Value);
    return op === '$gt' ? c > 0 : op === '$gte' ? c >= 0 : op === '$lt' ? c < 0 : c <= 0;
  });
}

function fieldMatches(doc: Doc, path: string, cond: unknown): boolean {
  if (!isDoc(cond) || !Object.keys(cond).some((k) => k.startsWith('$'))) return equalityMatches(doc, path, cond);
  return Object.entries(cond).every(([op, operand]) => {
    switch (op) {
      case '$eq':
        return equalityMatches(doc, path, operand);
      case '$ne':
        return !equalityMatches(doc, path, operand);
      case '$in':
        return (operand as unknown[]).some((w) => equalityMatches(doc, path, w));
      case '$nin':
        return !(operand as unknown[]).some((w) => equalityMatches(doc, path, w));
      case '$exists':
        return reach(doc, path.split('.')).found === Boolean(operand);
      case '$gt':
      case '$gte':
      case '$lt':
      case '$lte':
        return comparisonMatches(doc, path, op, operand);
      default:
        throw new Error(`model: unsupported operator ${op}`);
    }
  });
}

export function matches(doc: Doc, filter: Filter): boolean {
  return Object.entries(filter).every(([k, cond]) => {
    if (k === '$and') return (cond as Filter[]).every((f) => matches(doc, f));
    if (k === '$or') return (cond as Filter[]).some((f) => matches(doc, f));
    return fieldMatches(doc, k, cond);
  });
}

/** The value a sort key takes: for an array, its least (ascending) or greatest element. */
function sortKey(doc: Doc, path: string, dir: number): Value | undefined {
  const { values, found } = reach(doc, path.split('.'));
  if (!found) return null;
  const candidates = values.filter((v) => !Array.isArray(v));
  if (candidates.length === 0) return null;
  return candidates.reduce((a, b) => (compareValues(a, b) * dir <= 0 ? a : b));
}

export function sortDocs(docs: Doc[], sort: Array<[string, 1 | -1]>): Doc[] {
  // Array.prototype.sort is stable: ties keep natural order
  return [...docs].sort((a, b) => {
    for (const [path, dir] of sort) {
      const c = compareValues(sortKey(a, path, dir), sortKey(b, path, dir));
      if (c !== 0) return c * dir;
    }
    return 0;
  });
}

/**
 * Inclusion (with `_id` unless excluded) or exclusion of fields; a dotted inclusion keeps that
 * part of embedded documents, in each document of an array on the way, and drops other values.
 */
export function project(doc: Doc, projection: Record<string, 0 | 1> | undefined): Doc {
  if (!projection || Object.keys(projection).length === 0) return doc;
  const including = Object.entries(projection).some(([k, v]) => k !== '_id' && v === 1);
  if (!including) {
    const out: Doc = {};
    for (const [k, v] of Object.entries(doc)) if (projection[k] !== 0) out[k] = v;
    return out;
  }
  const paths = Object.entries(projection).filter(([k, v]) => k !== '_id' && v === 1).map(([k]) => k.split('.'));
  const out = include(doc, paths);
  if (projection['_id'] !== 0 && '_id' in doc) return { _id: doc['_id'] as Value, ...Object.fromEntries(Object.entries(out).filter(([k]) => k !== '_id')) };
  const { _id: _dropped, ...rest } = out;
  return rest;
}

function include(doc: Doc, paths: string[][]): Doc {
  const out: Doc = {};
  for (const [k, v] of Object.entries(doc)) {
    const here = paths.filter((p) => p[0] === k);
    if (here.length === 0) continue;
    if (here.some((p) => p.length === 1)) {
      out[k] = v;
      continue;
    }
    const rest = here.map((p) => p.slice(1));
    if (isDoc(v)) out[k] = include(v, rest);
    else if (Array.isArray(v)) out[k] = includeInArray(v, rest);
  }
  return out;
}

function includeInArray(arr: Value[], paths: string[][]): Value[] {
  const out: Value[] = [];
  for (const el of arr) {
    if (isDoc(el)) out.push(include(el, paths));
    else if (Array.isArray(el)) out.push(includeInArray(el, paths));
  }
  return out;
}

// ---------------------------------------------------------------- updates

function conflictCheck(update: Update): void {
  const paths = Object.values(update).flatMap((fields) => Object.keys(fields ?? {}));
  for (let i = 0; i < paths.length; i++) {
    for (let j = i + 1; j < paths.length; j++) {
      const a = paths[i] as string;
      const b = paths[j] as string;
      if (a === b || a.startsWith(b + '.') || b.startsWith(a + '.')) throw new ModelError(CONFLICTING_UPDATE_OPERATORS, `conflict at ${a} / ${b}`);
    }
  }
}

type Slot = { parent: Doc | Value[]; key: string };

/** The parent of a path's last segment, creating missing documents on the way when asked. */
function locate(doc: Doc, path: string, create: boolean): Slot | undefined {
  const segs = path.split('.');
  let cur: Doc | Value[] = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    const seg = segs[i] as string;
    let next: Value | undefined;
    if (Array.isArray(cur)) {
      if (!/^\d+$/.test(seg)) throw new ModelError(PATH_NOT_VIABLE, `cannot create field ${seg} in an array`);
      next = cur[Number(seg)];
    } else {
      next = cur[seg];
    }
    if (next === undefined) {
      if (!create) return undefined;
      next = {};
      if (Array.isArray(cur)) {
        while (cur.length < Number(seg)) cur.push(null);
        cur[Number(seg)] = next;
      } else {
        cur[seg] = next;
      }
    } else if (next === null || typeof next !== 'object') {
      // a path through a scalar: $pull leaves the document alone, a creating operator fails
      if (!create) return undefined;
      throw new ModelError(PATH_NOT_VIABLE, `cannot create field in ${seg}`);
    }
    cur = next;
  }
  const key = segs[segs.length - 1] as string;
  if (Array.isArray(cur) && !/^\d+$/.test(key)) throw new ModelError(PATH_NOT_VIABLE, `cannot create field ${key} in an array`);
  return { parent: cur, key };
}

function getAt(slot: Slot): Value | undefined {
  return Array.isArray(slot.parent) ? slot.parent[Number(slot.key)] : slot.parent[slot.key];
}

function setAt(slot: Slot, v: Value): void {
  if (Array.isArray(slot.parent)) {
    while (slot.parent.length < Number(slot.key)) slot.parent.push(null);
    slot.parent[Number(slot.key)] = v;
  } else {
    slot.parent[slot.key] = v;
  }
}

function pullCondition(cond: unknown): (el: Value) => boolean {
  if (isDoc(cond) && !Object.keys(cond).some((k) => k.startsWith('$'))) return (el) => isDoc(el) && matches(el, cond as Filter);
  return (el) => fieldMatches({ v: el }, 'v', cond);
}

/** Path order of updates: names as strings, numeric names (array indexes) as numbers. */
function comparePaths(a: string, b: string): number {
  const sa = a.split('.');
  const sb = b.split('.');
  for (let i = 0; i < Math.min(sa.length, sb.length); i++) {
    const x = sa[i] as string;
    const y = sb[i] as string;
    if (x === y) continue;
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) - Number(y);
    return compareStrings(x, y);
  }
  return sa.length - sb.length;
}

/**
 * Applies `update` to a copy of `doc`. Fields are processed in the order of their paths,
 * whatever the operator (MongoDB 5.0 and later), so new fields are appended in that order.
 */
export function applyUpdate(doc: Doc, update: Update, inserting: boolean): Doc {
  conflictCheck(update);
  const out = clone(doc);
  const steps: Array<[string, string, unknown]> = [];
  for (const [op, fields] of Object.entries(update)) {
    if (op === '$setOnInsert' && !inserting) continue;
    for (const [path, arg] of Object.entries(fields ?? {})) steps.push([op, path, arg]);
  }
  steps.sort((a, b) => comparePaths(a[1], b[1]));
  for (const [op, path, arg] of steps) {
    if (path === '_id' || path.startsWith('_id.')) {
      if (op === '$set' || op === '$setOnInsert') {
        if (inserting || sameValue(out['_id'], arg as Value)) {
          if (inserting) out['_id'] = arg as Value;
          continue;
        }
      }
      throw new ModelError(IMMUTABLE_FIELD, `would modify _id`);
    }
    const missingIsNoop = op === '$pull';
    const slot = locate(out, path, !missingIsNoop);
    if (!slot) continue;
    const cur = getAt(slot);
    switch (op) {
      case '$set':
      case '$setOnInsert':
        setAt(slot, clone(arg as Value));
        break;
      case '$inc':
        if (cur === undefined) setAt(slot, arg as number);
        else if (typeof cur !== 'number') throw new ModelError(TYPE_MISMATCH, `$inc on non-numeric ${path}`);
        else setAt(slot, cur + (arg as number));
        break;
      case '$max':
        if (cur === undefined || compareValues(arg as Value, cur) > 0) setAt(slot, clone(arg as Value));
        break;
      case '$push':
        if (cur === undefined) setAt(slot, [clone(arg as Value)]);
        else if (!Array.isArray(cur)) throw new ModelError(BAD_VALUE, `$push on non-array ${path}`);
        else cur.push(clone(arg as Value));
        break;
      case '$pull': {
        if (cur === undefined) break;
        if (!Array.isArray(cur)) throw new ModelError(BAD_VALUE, `$pull on non-array ${path}`);
        const drop = pullCondition(arg);
        setAt(slot, cur.filter((el) => !drop(el)));
        break;
      }
      default:
        throw new Error(`model: unsupported update operator ${op}`);
    }
  }
  return out;
}

/** The document an upsert starts from: the filter's equalities (through `$and`), `_id` first. */
export function upsertSeed(filter: Filter): Doc {
  const seed: Doc = {};
  const visit = (f: Filter): void => {
    for (const [k, cond] of Object.entries(f)) {
      // mongod simplifies the query first: a one-clause $or is that clause, a one-value $in an equality
      if (k === '$and' || (k === '$or' && (cond as Filter[]).length === 1)) (cond as Filter[]).forEach(visit);
      else if (k.startsWith('$')) continue;
      else if (isDoc(cond) && Object.keys(cond).some((op) => op.startsWith('$'))) {
        if ('$eq' in cond) setSeed(seed, k, cond['$eq']);
        else if (Array.isArray(cond['$in']) && cond['$in'].length === 1) setSeed(seed, k, cond['$in'][0]);
      } else setSeed(seed, k, cond);
    }
  };
  visit(filter);
  if ('_id' in seed) {
    const { _id, ...rest } = seed;
    return { _id: _id as Value, ...rest };
  }
  return seed;
}

function setSeed(seed: Doc, path: string, v: unknown): void {
  const slot = locate(seed, path, true);
  if (slot) setAt(slot, clone(v as Value));
}

// ---------------------------------------------------------------- collections

export interface IndexSpec {
  keys: string[];
  unique: boolean;
}

/** The key a unique index gives a document: a missing field counts as null. */
function indexKeys(doc: Doc, keys: string[]): Value[][] {
  // one entry per combination of array elements (multikey); enough for these tests' keys
  let combos: Value[][] = [[]];
  for (const k of keys) {
    const { values, found } = reach(doc, k.split('.'));
    const leaf = !found ? [null] : values.filter((v) => !Array.isArray(v));
    const options = leaf.length === 0 ? [[] as Value] : leaf;
    combos = combos.flatMap((c) => options.map((o) => [...c, o]));
  }
  return combos;
}

export class ModelCollection {
  docs: Doc[] = [];
  constructor(readonly indexes: IndexSpec[]) {}

  copy(): ModelCollection {
    const c = new ModelCollection(this.indexes);
    c.docs = clone(this.docs);
    return c;
  }

  /** Throws E11000 when `doc` would share a unique key with another document than `self`. */
  private checkUnique(doc: Doc, self: Doc | undefined): void {
    const uniques: IndexSpec[] = [{ keys: ['_id'], unique: true }, ...this.indexes.filter((i) => i.unique)];
    for (const index of uniques) {
      const mine = indexKeys(doc, index.keys);
      for (const other of this.docs) {
        if (other === self) continue;
        const theirs = indexKeys(other, index.keys);
        if (mine.some((a) => theirs.some((b) => a.every((v, i) => sameValue(v, b[i]))))) {
          throw new ModelError(DUPLICATE_KEY, `duplicate key on ${index.keys.join(',')}`);
        }
      }
    }
  }

  insert(doc: Doc): void {
    this.checkUnique(doc, undefined);
    this.docs.push(clone(doc));
  }

  find(filter: Filter): Doc[] {
    return this.docs.filter((d) => matches(d, filter));
  }

  /** Replaces `old` by its updated version, in place; true when it changed. */
  private replace(old: Doc, update: Update): boolean {
    const next = applyUpdate(old, update, false);
    if (sameValue(next, old)) return false;
    this.checkUnique(next, old);
    this.docs[this.docs.indexOf(old)] = next;
    return true;
  }

  updateOne(filter: Filter, update: Update, upsert: boolean, upsertId: Value | undefined): { matched: number; modified: number; upserted?: Doc; before?: Doc; after?: Doc } {
    const target = this.docs.find((d) => matches(d, filter));
    if (target) {
      const changed = this.replace(target, update);
      const after = this.docs.find((d) => sameValue(d['_id'], target['_id']));
      return { matched: 1, modified: changed ? 1 : 0, before: target, ...(after ? { after } : {}) };
    }
    if (!upsert) return { matched: 0, modified: 0 };
    let doc = upsertSeed(filter);
    doc = applyUpdate(doc, update, true);
    if (!('_id' in doc)) doc = { _id: upsertId ?? null, ...doc };
    else {
      const { _id, ...rest } = doc;
      doc = { _id: _id as Value, ...rest };
    }
    this.insert(doc);
    return { matched: 0, modified: 0, upserted: doc, after: doc };
  }

  /** updateMany: each matching document in turn; stops at the first error (as mongod does). */
  updateMany(filter: Filter, update: Update): { matched: number; modified: number } {
    const targets = this.docs.filter((d) => matches(d, filter));
    let modified = 0;
    for (const t of targets) if (this.replace(t, update)) modified++;
    return { matched: targets.length, modified };
  }

  deleteOne(filter: Filter): Doc | undefined {
    const i = this.docs.findIndex((d) => matches(d, filter));
    if (i < 0) return undefined;
    return this.docs.splice(i, 1)[0];
  }

  deleteMany(filter: Filter): number {
    const before = this.docs.length;
    this.docs = this.docs.filter((d) => !matches(d, filter));
    return before - this.docs.length;
  }

  distinct(path: string, filter: Filter): Value[] {
    const out: Value[] = [];
    for (const d of this.find(filter)) {
      const { values, found } = reach(d, path.split('.'));
      for (const v of found ? values.filter((x) => !Array.isArray(x)) : []) if (!out.some((o) => sameValue(o, v))) out.push(v);
    }
    return out.sort(compareValues);
  }
}
