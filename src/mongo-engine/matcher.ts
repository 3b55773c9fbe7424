import { ObjectId, type Document } from 'bson';
import { Query } from 'mingo';
import { isPlainObject, numericValue, pathValues } from './bson-values.ts';
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
 * Equality on scalar values is by far the most common filter (lookups by key); it is
 * matched here directly instead of compiling a mingo query per command.
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

function fieldTest(value: unknown): ValueTest | undefined {
  if (isPlainObject(value)) {
    const keys = Object.keys(value);
    if (keys.length !== 1) return undefined;
    if (keys[0] === '$eq') return scalarTest(value['$eq']);
    if (keys[0] === '$in' && Array.isArray(value['$in'])) {
      const tests = value['$in'].map(scalarTest);
      if (tests.length === 0 || tests.some((x) => x === undefined)) return undefined;
      const all = tests as ValueTest[];
      return (v) => all.some((f) => f(v));
    }
    return undefined;
  }
  return scalarTest(value);
}

function fastEqualityMatcher(filter: Document): Matcher | undefined {
  const checks: Array<[string, ValueTest]> = [];
  for (const key of Object.keys(filter)) {
    if (key.startsWith('$')) return undefined;
    const test = fieldTest(filter[key]);
    if (!test) return undefined;
    checks.push([key, test]);
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
  const fast = fastEqualityMatcher(filter);
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
