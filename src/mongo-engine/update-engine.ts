import { Decimal128, Double, Int32, Long, Timestamp, type Document } from 'bson';
import { Aggregator } from 'mingo';
import {
  bsonTypeName,
  cloneValue,
  setField,
  compareStrings,
  compareValues,
  encodeKey,
  formatDocument,
  formatValue,
  isNumeric,
  isPlainObject,
  numericValue,
  toView,
} from './bson-values.ts';
import { engineError, EngineError } from './errors.ts';
import { compileFilter, type Matcher } from './matcher.ts';

/**
 * mongod's update language applied to typed documents: every update operator, positional
 * `$`, `$[]` and `$[id]` with arrayFilters, replacement and pipeline-style updates.
 * Implemented here rather than through mingo's updater because mongod raises errors
 * (TypeMismatch, PathNotViable, ImmutableField, ...) where mingo silently skips, and
 * because arithmetic must keep BSON number types (int32 overflowing into int64, etc.).
 */

export type UpdateSpec =
  | { kind: 'operators'; ops: Document }
  | { kind: 'replacement'; doc: Document }
  | { kind: 'pipeline'; stages: Document[] };

export interface UpdateContext {
  /** view-shaped query filter, for the positional `$` operator */
  filter: Document;
  /** view-shaped old document (positional matching); undefined on upsert inserts */
  oldView?: Document;
  arrayFilters: Document[];
  isUpsertInsert: boolean;
}

const OPERATORS = new Set([
  '$set', '$unset', '$inc', '$mul', '$min', '$max', '$rename', '$currentDate',
  '$setOnInsert', '$push', '$addToSet', '$pop', '$pull', '$pullAll', '$bit',
]);

const PIPELINE_STAGES = new Set(['$addFields', '$set', '$project', '$unset', '$replaceRoot', '$replaceWith']);

export function parseUpdate(u: unknown): UpdateSpec {
  if (Array.isArray(u)) {
    const stages = u as Document[];
    for (const st of stages) {
      const name = isPlainObject(st) ? Object.keys(st)[0] : undefined;
      if (name === undefined || !PIPELINE_STAGES.has(name)) {
        throw engineError('BadValue', `${String(name)} is not allowed to be used within an update`);
      }
    }
    return { kind: 'pipeline', stages };
  }
  if (!isPlainObject(u)) throw engineError('FailedToParse', 'Update argument must be either an object or an array');
  const keys = Object.keys(u);
  if (keys.length === 0 || !(keys[0] as string).startsWith('$')) {
    for (const k of keys) {
      if (k.startsWith('$')) {
        throw engineError('BadValue', `The dollar ($) prefixed field '${k}' in '${k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith.`);
      }
    }
    return { kind: 'replacement', doc: u };
  }
  for (const op of keys) {
    if (!OPERATORS.has(op)) {
      throw engineError('FailedToParse', `Unknown modifier: ${op}. Expected a valid update modifier or pipeline-style update specified as an array`);
    }
    const arg = u[op];
    if (!isPlainObject(arg)) {
      throw engineError('FailedToParse', `Modifiers operate on fields but we found type ${bsonTypeName(arg)} instead. For example: {$mod: {<field>: ...}} not {${op}: ${formatValue(arg)}}`);
    }
    if (op === '$inc' || op === '$mul') {
      for (const [field, val] of Object.entries(arg)) {
        if (!isNumeric(val)) {
          const verb = op === '$inc' ? 'increment' : 'multiply';
          throw engineError('TypeMismatch', `Cannot ${verb} with non-numeric argument: {${field}: ${formatValue(val)}}`);
        }
      }
    }
  }
  checkConflicts(u);
  return { kind: 'operators', ops: u };
}

function checkConflicts(ops: Document): void {
  const paths: string[] = [];
  for (const op of Object.keys(ops)) {
    const arg = ops[op] as Document;
    for (const field of Object.keys(arg)) {
      paths.push(field);
      if (op === '$rename') paths.push(String(arg[field]));
    }
  }
  for (let i = 0; i < paths.length; i++) {
    for (let j = 0; j < paths.length; j++) {
      if (i === j) continue;
      const a = paths[i] as string;
      const b = paths[j] as string;
      if (a === b || isPathWithin(b, a)) {
        throw engineError('ConflictingUpdateOperators', `Updating the path '${b}' would create a conflict at '${a}'`);
      }
    }
  }
}

/** Is `path` a field inside `parent` ('a.b' inside 'a')? Allocates nothing: every update checks every pair of its paths. */
function isPathWithin(path: string, parent: string): boolean {
  return path.length > parent.length && path.charCodeAt(parent.length) === DOT && path.startsWith(parent);
}

const DOT = 0x2e;

/** Applies an update to a copy of `old` and returns the new typed document. */
export function applyUpdate(spec: UpdateSpec, old: Document, ctx: UpdateContext): Document {
  switch (spec.kind) {
    case 'replacement': {
      const out: Document = { _id: old['_id'] };
      for (const k of Object.keys(spec.doc)) if (k !== '_id') setField(out, k, cloneValue(spec.doc[k]));
      if (spec.doc['_id'] !== undefined && !ctx.isUpsertInsert && !sameValue(spec.doc['_id'], old['_id'])) {
        throw engineError('ImmutableField', `After applying the update, the (immutable) field '_id' was found to have been altered to _id: ${formatValue(spec.doc['_id'])}`);
      }
      if (ctx.isUpsertInsert && spec.doc['_id'] !== undefined) out['_id'] = spec.doc['_id'];
      return out;
    }
    case 'pipeline':
      return applyPipeline(spec.stages, old, ctx);
    case 'operators': {
      const doc = cloneValue(old);
      const usedFilters = new Set<string>();
      for (const [op, field, arg] of fieldsInApplyOrder(spec.ops, ctx.isUpsertInsert)) {
        applyOperator(op, field, arg, doc, ctx, usedFilters);
      }
      for (const f of ctx.arrayFilters) {
        const id = filterIdentifier(f);
        if (id !== undefined && !usedFilters.has(id)) {
          throw engineError('FailedToParse', `The array filter for identifier '${id}' was not used in the update ${formatDocument(spec.ops)}`);
        }
      }
      if (!ctx.isUpsertInsert && !sameValue(doc['_id'], old['_id'])) {
        throw engineError('ImmutableField', "Performing an update on the path '_id' would modify the immutable field '_id'");
      }
      return doc;
    }
  }
}

/**
 * Every (operator, field, argument) of an update in the order mongod (5.0 and later) applies
 * them: by path, whatever the operator, names compared as strings and numeric names as numbers
 * ("a.2" before "a.10"). New fields are appended in that order, so `{$set: {b: 1},
 * $setOnInsert: {a: 1}}` inserts `{a: 1, b: 1}` as mongod does.
 */
function fieldsInApplyOrder(ops: Document, isUpsertInsert: boolean): Array<[string, string, unknown]> {
  const out: Array<[string, string, unknown]> = [];
  for (const op of Object.keys(ops)) {
    if (op === '$setOnInsert' && !isUpsertInsert) continue;
    const arg = ops[op] as Document;
    for (const field of Object.keys(arg)) out.push([op, field, arg[field]]);
  }
  // Array.prototype.sort is stable, and no two entries share a path (checkConflicts)
  return out.sort((a, b) => comparePaths(a[1], b[1]));
}

const NUMERIC_NAME = /^(0|[1-9][0-9]*)$/;

// Runs for every pair the sort compares, on every update: plain names (most paths) are compared
// without splitting, and nothing is allocated.
function comparePaths(a: string, b: string): number {
  if (!a.includes('.') && !b.includes('.')) return compareNames(a, b);
  const sa = a.split('.');
  const sb = b.split('.');
  for (let i = 0; i < Math.min(sa.length, sb.length); i++) {
    const x = sa[i] as string;
    const y = sb[i] as string;
    if (x !== y) return compareNames(x, y);
  }
  return sa.length - sb.length;
}

function compareNames(x: string, y: string): number {
  if (x === y) return 0;
  if (NUMERIC_NAME.test(x) && NUMERIC_NAME.test(y) && x.length !== y.length) return x.length - y.length;
  return compareStrings(x, y);
}

/** The document an upsert inserts when nothing matched: equality fields of the filter, then the update. */
export function buildUpsertDocument(filter: Document, spec: UpdateSpec, ctx: UpdateContext): Document {
  const base: Document = {};
  if (spec.kind !== 'replacement') collectEqualities(filter, base);
  else if (filter['_id'] !== undefined && !isOperatorObject(filter['_id'])) base['_id'] = cloneValue(filter['_id']);
  else if (isOperatorObject(filter['_id']) && (filter['_id'] as Document)['$eq'] !== undefined) base['_id'] = (filter['_id'] as Document)['$eq'];
  const result = applyUpdate(spec, base, { ...ctx, isUpsertInsert: true });
  if (spec.kind === 'replacement' && result['_id'] === undefined) delete result['_id'];
  return result;
}

function isOperatorObject(v: unknown): boolean {
  return isPlainObject(v) && Object.keys(v).some((k) => k.startsWith('$'));
}

function collectEqualities(filter: Document, out: Document): void {
  for (const key of Object.keys(filter)) {
    const v = filter[key];
    // mongod simplifies the query first: a one-clause $or is that clause (as a one-value $in is an equality)
    if ((key === '$and' || (key === '$or' && Array.isArray(v) && v.length === 1)) && Array.isArray(v)) {
      for (const sub of v) if (isPlainObject(sub)) collectEqualities(sub, out);
      continue;
    }
    if (key.startsWith('$')) continue;
    let value: unknown;
    if (isOperatorObject(v)) {
      const ops = v as Document;
      if (ops['$eq'] !== undefined) value = ops['$eq'];
      else if (Array.isArray(ops['$in']) && ops['$in'].length === 1) value = ops['$in'][0];
      else continue;
    } else value = v;
    if (value instanceof RegExp) continue;
    setPathCreating(out, key.split('.'), cloneValue(value));
  }
}

function setPathCreating(doc: Document, segs: string[], value: unknown): void {
  let cur: Document = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    const s = segs[i] as string;
    if (!Object.hasOwn(cur, s) || !isPlainObject(cur[s])) setField(cur, s, {});
    cur = cur[s] as Document;
  }
  setField(cur, segs[segs.length - 1] as string, value);
}

function sameValue(a: unknown, b: unknown): boolean {
  return compareValues(a, b) === 0 && bsonTypeName(a) === bsonTypeName(b);
}

function filterIdentifier(f: Document): string | undefined {
  const k = Object.keys(f)[0];
  return k === undefined ? undefined : (k.split('.')[0] as string);
}

// ---------------------------------------------------------------------------------------------
// Path expansion: turns 'a.$.b', 'a.$[].b', 'a.$[x].b' into concrete segment lists.

type Container = Document | unknown[];

function childOf(v: unknown, seg: string): unknown {
  if (Array.isArray(v)) return /^\d+$/.test(seg) ? v[Number(seg)] : undefined;
  if (isPlainObject(v)) return Object.hasOwn(v, seg) ? v[seg] : undefined;
  return undefined;
}

function expandPath(doc: Document, field: string, ctx: UpdateContext, usedFilters: Set<string>): string[][] {
  const segs = field.split('.');
  let results: Array<{ segs: string[]; value: unknown }> = [{ segs: [], value: doc }];
  for (const seg of segs) {
    const next: Array<{ segs: string[]; value: unknown }> = [];
    for (const r of results) {
      if (seg === '$') {
        const arrayPath = r.segs.join('.');
        if (!Array.isArray(r.value) || ctx.isUpsertInsert) {
          throw engineError('BadValue', 'The positional operator did not find the match needed from the query.');
        }
        const idx = positionalIndex(ctx, arrayPath, r.value.length);
        next.push({ segs: [...r.segs, String(idx)], value: r.value[idx] });
      } else if (seg === '$[]' || (seg.startsWith('$[') && seg.endsWith(']'))) {
        const arrayPath = r.segs.join('.');
        if (!Array.isArray(r.value)) {
          if (r.value === undefined && ctx.isUpsertInsert) continue;
          throw engineError('BadValue', `The path '${arrayPath}' must exist in the document in order to apply array updates.`);
        }
        let matcher: Matcher | undefined;
        let id = '';
        if (seg !== '$[]') {
          id = seg.slice(2, -1);
          const filters = ctx.arrayFilters.filter((f) => filterIdentifier(f) === id);
          if (filters.length === 0) {
            throw engineError('BadValue', `No array filter found for identifier '${id}' in path '${field}'`);
          }
          usedFilters.add(id);
          const merged: Document = {};
          for (const f of filters) Object.assign(merged, toView(f) as Document);
          matcher = compileFilter(merged);
        }
        r.value.forEach((el, i) => {
          if (matcher && !matcher.test({ [id]: toView(el) })) return;
          next.push({ segs: [...r.segs, String(i)], value: el });
        });
      } else {
        next.push({ segs: [...r.segs, seg], value: childOf(r.value, seg) });
      }
    }
    results = next;
  }
  return results.map((r) => r.segs);
}

function positionalIndex(ctx: UpdateContext, arrayPath: string, length: number): number {
  const view = ctx.oldView;
  const relevant: Document = {};
  collectRelevant(ctx.filter, arrayPath, relevant);
  if (!view || Object.keys(relevant).length === 0) {
    throw engineError('BadValue', 'The positional operator did not find the match needed from the query.');
  }
  const m = compileFilter(relevant);
  const arr = getViewPath(view, arrayPath);
  if (Array.isArray(arr)) {
    for (let i = 0; i < Math.min(length, arr.length); i++) {
      if (m.test(replaceAtPath(view, arrayPath.split('.'), [arr[i]]))) return i;
    }
  }
  throw engineError('BadValue', 'The positional operator did not find the match needed from the query.');
}

function collectRelevant(filter: Document, arrayPath: string, out: Document): void {
  for (const k of Object.keys(filter)) {
    if (k === '$and' && Array.isArray(filter[k])) {
      for (const sub of filter[k] as unknown[]) if (isPlainObject(sub)) collectRelevant(sub, arrayPath, out);
    } else if (k === arrayPath || k.startsWith(arrayPath + '.')) out[k] = filter[k];
  }
}

function getViewPath(doc: unknown, path: string): unknown {
  let cur = doc;
  for (const s of path.split('.')) cur = childOf(cur, s);
  return cur;
}

function replaceAtPath(doc: Document, segs: string[], value: unknown): Document {
  const [head, ...rest] = segs as [string, ...string[]];
  const copy: Document = { ...doc };
  setField(copy, head, rest.length === 0 ? value : Object.hasOwn(doc, head) && isPlainObject(doc[head]) ? replaceAtPath(doc[head], rest, value) : value);
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Navigation on concrete paths.

function formatElement(key: string, v: unknown): string {
  return `{${key}: ${formatValue(v)}}`;
}

/** Finds (creating intermediate objects if asked) the container holding the last segment. */
function resolveParent(doc: Document, segs: string[], create: boolean): { parent: Container; key: string } | undefined {
  let cur: Container = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    const seg = segs[i] as string;
    let child: unknown;
    if (Array.isArray(cur)) {
      if (!/^\d+$/.test(seg)) {
        if (!create) return undefined;
        throw engineError('PathNotViable', `Cannot create field '${seg}' in element ${formatElement(segs[i - 1] ?? '', cur)}`);
      }
      child = cur[Number(seg)];
    } else child = getChild(cur, seg);
    if (child === undefined || child === null) {
      if (!create) return undefined;
      if (child === null) {
        throw engineError('PathNotViable', `Cannot create field '${segs[i + 1]}' in element {${seg}: null}`);
      }
      const fresh: Document = {};
      setChild(cur, seg, fresh);
      cur = fresh;
      continue;
    }
    if (!isPlainObject(child) && !Array.isArray(child)) {
      if (!create) return undefined;
      throw engineError('PathNotViable', `Cannot create field '${segs[i + 1]}' in element ${formatElement(seg, child)}`);
    }
    cur = child;
  }
  const key = segs[segs.length - 1] as string;
  if (Array.isArray(cur) && !/^\d+$/.test(key)) {
    if (!create) return undefined;
    throw engineError('PathNotViable', `Cannot create field '${key}' in element {${segs[segs.length - 2] ?? ''}: ${formatValue(cur)}}`);
  }
  return { parent: cur, key };
}

function getChild(parent: Container, key: string): unknown {
  return Array.isArray(parent) ? parent[Number(key)] : Object.hasOwn(parent, key) ? parent[key] : undefined;
}

function setChild(parent: Container, key: string, value: unknown): void {
  if (Array.isArray(parent)) {
    const idx = Number(key);
    while (parent.length < idx) parent.push(null);
    parent[idx] = value;
  } else setField(parent, key, value);
}

function idForMessage(doc: Document): string {
  return doc['_id'] === undefined ? 'no id' : `_id: ${formatValue(doc['_id'])}`;
}

// ---------------------------------------------------------------------------------------------
// Operators.

function applyOperator(op: string, field: string, arg: unknown, doc: Document, ctx: UpdateContext, usedFilters: Set<string>): void {
  if (op === '$rename') {
    applyRename(doc, field, arg);
    return;
  }
  const paths = field.includes('$') ? expandPath(doc, field, ctx, usedFilters) : [field.split('.')];
  for (const segs of paths) {
    const create = op !== '$unset' && op !== '$pop' && op !== '$pull' && op !== '$pullAll';
    const loc = resolveParent(doc, segs, create);
    if (!loc) continue;
    const current = getChild(loc.parent, loc.key);
    const fieldName = segs.join('.');
    switch (op) {
      case '$set':
      case '$setOnInsert':
        setChild(loc.parent, loc.key, cloneValue(arg));
        break;
      case '$unset':
        if (current === undefined) break;
        if (Array.isArray(loc.parent)) loc.parent[Number(loc.key)] = null;
        else delete loc.parent[loc.key];
        break;
      case '$inc':
      case '$mul': {
        if (current !== undefined && !isNumeric(current)) {
          throw engineError('TypeMismatch', `Cannot apply ${op} to a value of non-numeric type. {${idForMessage(doc)}} has the field '${loc.key}' of non-numeric type ${bsonTypeName(current)}`);
        }
        const base = current === undefined ? zeroLike(arg) : current;
        setChild(loc.parent, loc.key, op === '$inc' ? arith(base, arg, 'add') : current === undefined ? zeroLike(arg) : arith(base, arg, 'mul'));
        break;
      }
      case '$min':
      case '$max': {
        if (current === undefined) setChild(loc.parent, loc.key, cloneValue(arg));
        else {
          const c = compareValues(arg, current);
          if ((op === '$min' && c < 0) || (op === '$max' && c > 0)) setChild(loc.parent, loc.key, cloneValue(arg));
        }
        break;
      }
      case '$currentDate': {
        let type = 'date';
        if (isPlainObject(arg)) {
          type = String(arg['$type']);
          if (type !== 'date' && type !== 'timestamp') {
            throw engineError('BadValue', "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}");
          }
        } else if (typeof arg !== 'boolean') {
          throw engineError('BadValue', `${fieldName} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({$type: 'timestamp/date'}).`);
        }
        const now = Date.now();
        setChild(loc.parent, loc.key, type === 'date' ? new Date(now) : new Timestamp({ t: Math.floor(now / 1000), i: 1 }));
        break;
      }
      case '$push':
        applyPush(doc, loc.parent, loc.key, fieldName, current, arg);
        break;
      case '$addToSet':
        applyAddToSet(loc.parent, loc.key, current, arg);
        break;
      case '$pop': {
        if (current === undefined) break;
        if (!Array.isArray(current)) {
          throw engineError('TypeMismatch', `Path '${fieldName}' contains an element of non-array type '${bsonTypeName(current)}'`);
        }
        const n = numericValue(arg);
        if (n !== 1 && n !== -1) throw engineError('FailedToParse', `$pop expects 1 or -1, found: ${formatValue(arg)}`);
        if (n === 1) current.pop();
        else current.shift();
        break;
      }
      case '$pull':
      case '$pullAll': {
        if (current === undefined) break;
        if (!Array.isArray(current)) throw engineError('BadValue', 'Cannot apply $pull to a non-array value');
        let keep: (el: unknown) => boolean;
        if (op === '$pullAll') {
          if (!Array.isArray(arg)) throw engineError('BadValue', `$pullAll requires an array argument but was given a ${bsonTypeName(arg)}`);
          keep = (el) => !arg.some((a) => compareValues(a, el) === 0);
        } else keep = pullPredicate(arg);
        const kept = current.filter(keep);
        setChild(loc.parent, loc.key, kept);
        break;
      }
      case '$bit': {
        if (!isPlainObject(arg)) throw engineError('BadValue', '$bit needs an object');
        if (current !== undefined && !(current instanceof Int32 || current instanceof Long)) {
          throw engineError('BadValue', `Cannot apply $bit to a value of non-integral type.{${idForMessage(doc)}} has the field ${loc.key} of non-integer type ${bsonTypeName(current)}`);
        }
        let v = current === undefined ? 0n : BigInt(numericValue(current) ?? 0);
        const wide = current instanceof Long;
        for (const [bop, operand] of Object.entries(arg)) {
          const o = BigInt(numericValue(operand) ?? 0);
          if (bop === 'and') v &= o;
          else if (bop === 'or') v |= o;
          else if (bop === 'xor') v ^= o;
          else throw engineError('BadValue', `The $bit modifier only supports 'and', 'or', and 'xor', not '${bop}'`);
        }
        setChild(loc.parent, loc.key, wide || Object.values(arg).some((x) => x instanceof Long) ? Long.fromBigInt(v) : new Int32(Number(BigInt.asIntN(32, v))));
        break;
      }
      default:
        throw engineError('FailedToParse', `Unknown modifier: ${op}`);
    }
  }
}

function applyRename(doc: Document, from: string, to: unknown): void {
  if (typeof to !== 'string') throw engineError('BadValue', `The 'to' field for $rename must be a string: ${from}: ${formatValue(to)}`);
  if (from.includes('$') || to.includes('$')) throw engineError('BadValue', `The source field for $rename may not be dynamic: ${from}`);
  if (from === to) throw engineError('BadValue', `The source and target field for $rename must differ: ${from}: "${to}"`);
  const src = resolveParent(doc, from.split('.'), false);
  if (!src) return;
  if (Array.isArray(src.parent)) throw engineError('BadValue', `The source field cannot be an array element, '${from}' in doc with ${idForMessage(doc)} has an array field called '${from}'`);
  const value = src.parent[src.key];
  if (value === undefined) return;
  delete src.parent[src.key];
  const dst = resolveParent(doc, to.split('.'), true);
  if (!dst) return;
  if (Array.isArray(dst.parent)) throw engineError('BadValue', `The destination field cannot be an array element, '${to}' in doc with ${idForMessage(doc)} has an array field called '${to}'`);
  setField(dst.parent, dst.key, value);
}

function applyPush(doc: Document, parent: Container, key: string, dottedPath: string, current: unknown, arg: unknown): void {
  if (current !== undefined && !Array.isArray(current)) {
    throw engineError('BadValue', `The field '${dottedPath}' must be an array but is of type ${bsonTypeName(current)} in document {${idForMessage(doc)}}`);
  }
  const arr: unknown[] = current === undefined ? [] : current;
  let items: unknown[] = [arg];
  let position: number | undefined;
  let slice: number | undefined;
  let sort: unknown;
  if (isPlainObject(arg) && arg['$each'] !== undefined) {
    if (!Array.isArray(arg['$each'])) throw engineError('BadValue', `The argument to $each in $push must be an array but it was of type: ${bsonTypeName(arg['$each'])}`);
    for (const k of Object.keys(arg)) {
      if (!['$each', '$slice', '$sort', '$position'].includes(k)) {
        throw engineError('BadValue', `Unrecognized clause in $push: ${k}`);
      }
    }
    items = arg['$each'] as unknown[];
    position = numericValue(arg['$position']);
    slice = numericValue(arg['$slice']);
    sort = arg['$sort'];
  }
  const copies = items.map(cloneValue);
  if (position === undefined) arr.push(...copies);
  else {
    const at = position < 0 ? Math.max(0, arr.length + position) : Math.min(position, arr.length);
    arr.splice(at, 0, ...copies);
  }
  if (sort !== undefined) sortArray(arr, sort);
  if (slice !== undefined) {
    const kept = slice >= 0 ? arr.slice(0, slice) : arr.slice(Math.max(0, arr.length + slice));
    arr.length = 0;
    arr.push(...kept);
  }
  if (current === undefined) setChild(parent, key, arr);
}

function sortArray(arr: unknown[], spec: unknown): void {
  if (isPlainObject(spec)) {
    const fields = Object.entries(spec).map(([f, d]) => [f, (numericValue(d) ?? 1) < 0 ? -1 : 1] as const);
    arr.sort((a, b) => {
      for (const [f, dir] of fields) {
        const c = compareValues(getViewPath(a, f), getViewPath(b, f));
        if (c !== 0) return c * dir;
      }
      return 0;
    });
  } else {
    const dir = (numericValue(spec) ?? 1) < 0 ? -1 : 1;
    arr.sort((a, b) => compareValues(a, b) * dir);
  }
}

function applyAddToSet(parent: Container, key: string, current: unknown, arg: unknown): void {
  if (current !== undefined && !Array.isArray(current)) {
    throw engineError('BadValue', `Cannot apply $addToSet to non-array field. Field named '${key}' has non-array type ${bsonTypeName(current)}`);
  }
  const arr: unknown[] = current === undefined ? [] : current;
  let items: unknown[] = [arg];
  if (isPlainObject(arg) && arg['$each'] !== undefined) {
    if (!Array.isArray(arg['$each'])) throw engineError('TypeMismatch', `The argument to $each in $addToSet must be an array but it was of type ${bsonTypeName(arg['$each'])}`);
    items = arg['$each'] as unknown[];
  }
  const present = new Set(arr.map((v) => encodeKey(v)));
  for (const it of items) {
    const k = encodeKey(it);
    if (!present.has(k)) {
      present.add(k);
      arr.push(cloneValue(it));
    }
  }
  if (current === undefined) setChild(parent, key, arr);
}

function pullPredicate(cond: unknown): (el: unknown) => boolean {
  if (isPlainObject(cond)) {
    const keys = Object.keys(cond);
    const allOps = keys.length > 0 && keys.every((k) => k.startsWith('$'));
    const isLogical = keys.some((k) => k === '$and' || k === '$or' || k === '$nor');
    if (allOps && !isLogical) {
      const m = compileFilter({ v: toView(cond) });
      return (el) => !m.test({ v: toView(el) });
    }
    const m = compileFilter(toView(cond) as Document);
    return (el) => !(isPlainObject(el) && m.test(toView(el) as Document));
  }
  return (el) => compareValues(el, cond) !== 0;
}

// ---------------------------------------------------------------------------------------------
// Arithmetic keeping BSON number types.

type NumKind = 0 | 1 | 2 | 3; // int32, int64, double, decimal

function kindOf(v: unknown): NumKind {
  if (v instanceof Int32) return 0;
  if (v instanceof Long || typeof v === 'bigint') return 1;
  if (v instanceof Decimal128) return 3;
  if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) <= 0x7fffffff ? 0 : 2;
  return 2;
}

function zeroLike(v: unknown): unknown {
  switch (kindOf(v)) {
    case 0:
      return new Int32(0);
    case 1:
      return Long.fromNumber(0);
    case 3:
      return Decimal128.fromString('0');
    default:
      return new Double(0);
  }
}

function toBig(v: unknown): bigint {
  if (v instanceof Long) return v.toBigInt();
  if (typeof v === 'bigint') return v;
  return BigInt(Math.trunc(numericValue(v) ?? 0));
}

function arith(a: unknown, b: unknown, op: 'add' | 'mul'): unknown {
  const kind = Math.max(kindOf(a), kindOf(b)) as NumKind;
  if (kind === 0 || kind === 1) {
    const r = op === 'add' ? toBig(a) + toBig(b) : toBig(a) * toBig(b);
    if (kind === 0 && r >= -2147483648n && r <= 2147483647n) return new Int32(Number(r));
    if (r >= -(2n ** 63n) && r < 2n ** 63n) return Long.fromBigInt(r);
    throw new EngineError(2, `Failed to apply $${op === 'add' ? 'inc' : 'mul'} operations to current value (${formatValue(a)}) for document`);
  }
  const x = numericValue(a) as number;
  const y = numericValue(b) as number;
  const r = op === 'add' ? x + y : x * y;
  return kind === 3 ? Decimal128.fromString(String(r)) : new Double(r);
}

// ---------------------------------------------------------------------------------------------
// Pipeline-style updates, evaluated by mingo on the view shape.

function applyPipeline(stages: Document[], old: Document, ctx: UpdateContext): Document {
  const oldView = toView(old) as Document;
  let out: Document;
  try {
    const result = new Aggregator(toView(stages) as Document[], { scriptEnabled: false }).run([cloneValue(oldView)]);
    out = (result[0] ?? {}) as Document;
  } catch (err) {
    throw engineError('BadValue', err instanceof Error ? err.message : String(err));
  }
  // Unchanged top-level fields keep their exact BSON types from the old document.
  const typed: Document = {};
  for (const k of Object.keys(out)) {
    setField(typed, k, Object.hasOwn(old, k) && compareValues(out[k], oldView[k]) === 0 ? old[k] : out[k]);
  }
  if (!ctx.isUpsertInsert && !sameValue(toView(typed['_id']), oldView['_id'])) {
    throw engineError('ImmutableField', "Performing an update on the path '_id' would modify the immutable field '_id'");
  }
  if (typed['_id'] === undefined && old['_id'] !== undefined) return { _id: old['_id'], ...typed };
  return typed;
}
