import type { Document } from 'bson';
import { Query } from 'mingo';
import { isPlainObject } from './bson-values.ts';
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

export function compileFilter(filter: Document | undefined): Matcher {
  if (filter === undefined || Object.keys(filter).length === 0) return MATCH_ALL;
  rejectUnsupported(filter);
  try {
    return new Query(filter, QUERY_OPTIONS);
  } catch (err) {
    if (err instanceof EngineError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw engineError('BadValue', message.replace(/^unknown (top level )?operator:? ?/, 'unknown operator: '));
  }
}
