import { ObjectId, type Document } from 'bson';
import { Query } from 'mingo';
import { compareStrings, isPlainObject, numericValue, pathValues } from './bson-values.ts';
import { engineError, EngineError } from './errors.ts';
import { jsonSchemaPredicate } from './json-schema.ts';

/**
 * Query matching over view-shaped documents, delegated to mingo. Operators mongod supports
 * but this engine cannot honour ($where, $text, geo) are refused with a clear error
 * instead of being silently misevaluated.
 */

export interface Matcher {
  test(view: Document): boolean;
}

const MATCH_ALL: Matcher = { test: () => true };

const QUERY_OPTIONS = {
  scriptEnabled: false,
  jsonSchemaValidator: (schema: Record<string, unknown>) => {
    const pred = jsonSchemaPredicate(schema as Document);
    return (doc: unknown) => pred(doc);
  },
};

function rejectUnsupported(filter: unknown): void {
  if (Array.isArray(filter)) {
    for (const f of filter) rejectUnsupported(f);
    return;
  }
  if (!isPlainObject(filter)) return;
  for (const key of Object.keys(filter)) {
    if (key === '$where') throw engineError('CommandNotSupported', '$where is not supported by the volreg embedded engine');
    if (key === '$text') throw engineError('IndexNotFound', 'text index required for $text query');
    if (key === '$near' || key === '$nearSphere' || key === '$geoNear') {
      throw engineError('CommandNotSupported', `${key} is not supported by the volreg embedded engine (no geospatial indexes)`);
    }
    if (key === '$geoWithin' || key === '$geoIntersects') {
      throw engineError('CommandNotSupported', `${key} is not supported by the volreg embedded engine`);
    }
    const v = filter[key];
    if (key === '$and' || key === '$or' || key === '$nor') {
      if (!Array.isArray(v) || v.length === 0) {
        throw engineError('BadValue', `${key} argument must be a non-empty array`);
      }
      rejectUnsupported(v);
    } else if (isPlainObject(v) && key !== '$expr' && key !== '$jsonSchema') {
      rejectUnsupported(v);
    }
  }
}

/**
 * Equality on scalar values is by far the most common filter (lookups by key), with ranges on
 * strings, numbers and dates next (pages of names); those are matched here directly instead
 * of compiling a mingo query per command. Like mongod (and mingo), a comparison only matches
 * values of its operand's type, and an array matches when any element does.
 */
type ValueTest = (v: unknown) => boolean;

function scalarTest(target: unknown): ValueTest | undefined {
  if (typeof target === 'string') return (v) => v === target;
  if (typeof target === 'boolean') return (v) => v === target;
  if (typeof target === 'number' && !Number.isNaN(target)) return (v) => v === target || numericValue(v) === target;
  if (target instanceof ObjectId) return (v) => v instanceof ObjectId && v.equals(target);
  if (target instanceof Date) {
    const ms = target.getTime();
    return (v) => v instanceof Date && v.getTime() === ms;
  }
  return undefined;
}

type RangeOp = '$gt' | '$gte' | '$lt' | '$lte';

function holds(op: RangeOp, c: number): boolean {
  return op === '$gt' ? c > 0 : op === '$gte' ? c >= 0 : op === '$lt' ? c < 0 : c <= 0;
}

function rangeTest(op: RangeOp, target: unknown): ValueTest | undefined {
  if (typeof target === 'string') return (v) => typeof v === 'string' && holds(op, compareStrings(v, target));
  if (typeof target === 'number' && !Number.isNaN(target)) {
    return (v) => typeof v === 'number' && !Number.isNaN(v) && holds(op, v < target ? -1 : v > target ? 1 : 0);
  }
  if (target instanceof Date) {
    const ms = target.getTime();
    return (v) => v instanceof Date && holds(op, Math.sign(v.getTime() - ms));
  }
  return undefined;
}

/** The tests a field's value must pass (each by itself, by any element of an array). */
function fieldTests(value: unknown): ValueTest[] | undefined {
  if (!isPlainObject(value)) {
    const t = scalarTest(value);
    return t && [t];
  }
  const keys = Object.keys(value);
  if (keys.length === 0) return undefined;
  const tests: ValueTest[] = [];
  for (const key of keys) {
    const operand = value[key];
    let t: ValueTest | undefined;
    if (key === '$eq') t = scalarTest(operand);
    else if (key === '$in' && Array.isArray(operand)) {
      const all = operand.map(scalarTest);
      if (all.length > 0 && all.every((x) => x !== undefined)) {
        const ins = all as ValueTest[];
        t = (v) => ins.some((f) => f(v));
      }
    } else if (key === '$gt' || key === '$gte' || key === '$lt' || key === '$lte') t = rangeTest(key, operand);
    if (!t) return undefined;
    tests.push(t);
  }
  return tests;
}

function fastMatcher(filter: Document): Matcher | undefined {
  const checks: Array<[string, ValueTest]> = [];
  for (const key of Object.keys(filter)) {
    if (key.startsWith('$')) return undefined;
    const tests = fieldTests(filter[key]);
    if (!tests) return undefined;
    for (const t of tests) checks.push([key, t]);
  }
  return {
    test: (view) => checks.every(([path, f]) => {
      if (!path.includes('.')) {
        const v = view[path];
        return Array.isArray(v) ? v.some(f) : f(v);
      }
      return pathValues(view, path).some(f);
    }),
  };
}

export function compileFilter(filter: Document | undefined): Matcher {
  if (filter === undefined || Object.keys(filter).length === 0) return MATCH_ALL;
  const fast = fastMatcher(filter);
  if (fast) return fast;
  rejectUnsupported(filter);
  try {
    return new Query(filter, QUERY_OPTIONS);
  } catch (err) {
    if (err instanceof EngineError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw engineError('BadValue', message.replace(/^unknown (top level )?operator:? ?/, 'unknown operator: '));
  }
}
