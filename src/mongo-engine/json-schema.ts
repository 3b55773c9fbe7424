import type { Document } from 'bson';
import { bsonTypeName, compareValues, isNumeric, isPlainObject, numericValue } from './bson-values.ts';

/**
 * The subset of MongoDB's $jsonSchema (draft 4 plus bsonType) that collection validators use:
 * bsonType, type, required, properties, patternProperties, additionalProperties, enum,
 * pattern, minLength/maxLength, minimum/maximum (+exclusive), items, minItems/maxItems,
 * uniqueItems, minProperties/maxProperties, allOf/anyOf/oneOf/not.
 * Evaluated on typed documents, so int/long/double are told apart exactly.
 */

export interface SchemaFailure {
  path: string;
  operatorName: string;
  specifiedAs: Document;
  reason: string;
  [extra: string]: unknown;
}

const REGEX_CACHE = new Map<string, RegExp>();

/** mongod speaks PCRE; try the stricter unicode mode first, then plain JS syntax. */
function schemaRegex(pattern: string): RegExp {
  let re = REGEX_CACHE.get(pattern);
  if (!re) {
    try {
      re = new RegExp(pattern, 'u');
    } catch {
      re = new RegExp(pattern);
    }
    REGEX_CACHE.set(pattern, re);
  }
  return re;
}

const JSON_TYPES: Record<string, (v: unknown) => boolean> = {
  object: (v) => isPlainObject(v),
  array: (v) => Array.isArray(v),
  string: (v) => typeof v === 'string',
  number: (v) => isNumeric(v),
  boolean: (v) => typeof v === 'boolean',
  null: (v) => v === null,
};

function matchesBsonType(v: unknown, t: string): boolean {
  if (t === 'number') return isNumeric(v);
  const actual = bsonTypeName(v);
  if (t === actual) return true;
  // view-shaped numbers carry no int/long/double distinction; accept any integral value as int/long
  if (typeof v === 'number' && (t === 'int' || t === 'long')) return Number.isInteger(v);
  if (typeof v === 'number' && t === 'double') return true;
  return false;
}

function typeMatches(spec: unknown, v: unknown, test: (v: unknown, t: string) => boolean): boolean {
  if (!Array.isArray(spec)) return test(v, String(spec));
  for (const t of spec) if (test(v, String(t))) return true;
  return false;
}

function jsonTypeMatches(v: unknown, t: string): boolean {
  const f = JSON_TYPES[t];
  return f !== undefined && f(v);
}

/** Length in code points (what $jsonSchema's minLength/maxLength count), without allocating. */
function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

function fail(out: SchemaFailure[], schema: Document, path: string, operatorName: string, reason: string, extra: Document = {}): void {
  out.push({ path, operatorName, specifiedAs: { [operatorName]: schema[operatorName] }, reason, ...extra });
}

function childPath(path: string, k: string | number): string {
  return path ? `${path}.${k}` : String(k);
}

export function validateSchema(schema: Document, value: unknown, path = ''): SchemaFailure[] {
  const failures: SchemaFailure[] = [];
  collectFailures(schema, value, path, failures);
  return failures;
}

/** Appends the failures of `value` against `schema` to `out` (no per-node allocations when it passes). */
function collectFailures(schema: Document, value: unknown, path: string, out: SchemaFailure[]): void {
  if (schema['bsonType'] !== undefined && value !== undefined && !typeMatches(schema['bsonType'], value, matchesBsonType)) {
    fail(out, schema, path, 'bsonType', 'type did not match', { consideredValue: value, consideredType: bsonTypeName(value) });
  }
  if (schema['type'] !== undefined && value !== undefined && !typeMatches(schema['type'], value, jsonTypeMatches)) {
    fail(out, schema, path, 'type', 'type did not match', { consideredValue: value, consideredType: bsonTypeName(value) });
  }
  const enumValues = schema['enum'];
  if (Array.isArray(enumValues) && value !== undefined) {
    let found = false;
    for (const e of enumValues) {
      if (compareValues(e, value) === 0) {
        found = true;
        break;
      }
    }
    if (!found) fail(out, schema, path, 'enum', 'value was not found in enum', { consideredValue: value });
  }

  if (typeof value === 'string') {
    if (typeof schema['pattern'] === 'string' && !schemaRegex(schema['pattern']).test(value)) {
      fail(out, schema, path, 'pattern', 'regular expression did not match', { consideredValue: value });
    }
    const min = numericValue(schema['minLength']);
    // a string has at most as many code points as UTF-16 units, and at least half as many
    if (min !== undefined && value.length < 2 * min && codePoints(value) < min) {
      fail(out, schema, path, 'minLength', 'specified string length was not satisfied', { consideredValue: value });
    }
    const max = numericValue(schema['maxLength']);
    if (max !== undefined && value.length > max && codePoints(value) > max) {
      fail(out, schema, path, 'maxLength', 'specified string length was not satisfied', { consideredValue: value });
    }
  }

  if (isNumeric(value)) {
    const n = numericValue(value) as number;
    const min = numericValue(schema['minimum']);
    if (min !== undefined && (schema['exclusiveMinimum'] === true ? n <= min : n < min)) {
      fail(out, schema, path, 'minimum', 'comparison failed', { consideredValue: value });
    }
    const max = numericValue(schema['maximum']);
    if (max !== undefined && (schema['exclusiveMaximum'] === true ? n >= max : n > max)) {
      fail(out, schema, path, 'maximum', 'comparison failed', { consideredValue: value });
    }
    const mult = numericValue(schema['multipleOf']);
    if (mult !== undefined && mult !== 0 && n % mult !== 0) fail(out, schema, path, 'multipleOf', 'considered value is not a multiple of the specified value', { consideredValue: value });
  }

  if (Array.isArray(value)) {
    const items = schema['items'];
    if (isPlainObject(items)) {
      for (let i = 0; i < value.length; i++) collectFailures(items, value[i], `${path}.${i}`, out);
    } else if (Array.isArray(items)) {
      for (let i = 0; i < items.length && i < value.length; i++) {
        const s = items[i];
        if (isPlainObject(s)) collectFailures(s, value[i], `${path}.${i}`, out);
      }
      const extra = schema['additionalItems'];
      if (extra === false && value.length > items.length) fail(out, schema, path, 'additionalItems', 'found additional items');
    }
    const minItems = numericValue(schema['minItems']);
    if (minItems !== undefined && value.length < minItems) fail(out, schema, path, 'minItems', 'array did not match specified length', { numberOfItems: value.length });
    const maxItems = numericValue(schema['maxItems']);
    if (maxItems !== undefined && value.length > maxItems) fail(out, schema, path, 'maxItems', 'array did not match specified length', { numberOfItems: value.length });
    if (schema['uniqueItems'] === true) {
      for (let i = 0; i < value.length; i++) {
        for (let j = i + 1; j < value.length; j++) {
          if (compareValues(value[i], value[j]) === 0) {
            fail(out, schema, path, 'uniqueItems', 'found a duplicate item', { duplicatedValue: value[i] });
            i = value.length;
            break;
          }
        }
      }
    }
  }

  if (isPlainObject(value)) {
    const required = schema['required'];
    if (Array.isArray(required)) {
      let missing: string[] | undefined;
      for (const r of required) {
        const k = String(r);
        if (value[k] === undefined) (missing ??= []).push(k);
      }
      if (missing) fail(out, schema, path, 'required', 'missing required fields', { missingProperties: missing });
    }
    const props = isPlainObject(schema['properties']) ? schema['properties'] : undefined;
    const patterns = isPlainObject(schema['patternProperties']) ? schema['patternProperties'] : undefined;
    const patternKeys = patterns ? Object.keys(patterns) : [];
    const additional = schema['additionalProperties'];
    let extraFields: string[] | undefined;
    const keys = Object.keys(value);
    for (const k of keys) {
      let covered = false;
      const ps = props?.[k];
      if (isPlainObject(ps)) {
        covered = true;
        collectFailures(ps, value[k], childPath(path, k), out);
      }
      for (const pat of patternKeys) {
        if (schemaRegex(pat).test(k)) {
          covered = true;
          const s = (patterns as Document)[pat];
          if (isPlainObject(s)) collectFailures(s, value[k], childPath(path, k), out);
        }
      }
      if (!covered) {
        if (additional === false) (extraFields ??= []).push(k);
        else if (isPlainObject(additional)) collectFailures(additional, value[k], childPath(path, k), out);
      }
    }
    if (extraFields) fail(out, schema, path, 'additionalProperties', 'found additional properties', { additionalProperties: extraFields });
    const nProps = keys.length;
    const minP = numericValue(schema['minProperties']);
    if (minP !== undefined && nProps < minP) fail(out, schema, path, 'minProperties', 'specified number of properties was not satisfied', { numberOfProperties: nProps });
    const maxP = numericValue(schema['maxProperties']);
    if (maxP !== undefined && nProps > maxP) fail(out, schema, path, 'maxProperties', 'specified number of properties was not satisfied', { numberOfProperties: nProps });
  }

  if (value !== undefined) {
    const allOf = schema['allOf'];
    if (Array.isArray(allOf)) for (const s of allOf) if (isPlainObject(s)) collectFailures(s, value, path, out);
    const anyOf = schema['anyOf'];
    if (Array.isArray(anyOf) && !anyOf.some((s: unknown) => isPlainObject(s) && validateSchema(s, value, path).length === 0)) {
      fail(out, schema, path, 'anyOf', 'did not match any of the specified schemas');
    }
    const oneOf = schema['oneOf'];
    if (Array.isArray(oneOf)) {
      const n = oneOf.filter((s: unknown) => isPlainObject(s) && validateSchema(s, value, path).length === 0).length;
      if (n !== 1) fail(out, schema, path, 'oneOf', n === 0 ? 'did not match any of the specified schemas' : 'matched more than one of the specified schemas');
    }
    if (isPlainObject(schema['not']) && validateSchema(schema['not'], value, path).length === 0) {
      fail(out, schema, path, 'not', 'child schema matched');
    }
  }
}

export function jsonSchemaPredicate(schema: Document): (doc: unknown) => boolean {
  return (doc) => validateSchema(schema, doc).length === 0;
}

// ---- what mongod takes as a $jsonSchema (src/mongo/db/matcher/schema/json_schema_parser.cpp) ----

const KEYWORDS = new Set([
  'additionalItems', 'additionalProperties', 'allOf', 'anyOf', 'bsonType', 'dependencies', 'description', 'enum',
  'exclusiveMaximum', 'exclusiveMinimum', 'items', 'maxItems', 'maxLength', 'maxProperties', 'maximum', 'minItems',
  'minLength', 'minProperties', 'minimum', 'multipleOf', 'not', 'oneOf', 'pattern', 'patternProperties', 'properties',
  'required', 'title', 'type', 'uniqueItems',
]);
/** draft-4 keywords mongod names as unsupported (JSON Schema's other drafts' keywords are simply unknown to it) */
const UNSUPPORTED_KEYWORDS = new Set(['$ref', '$schema', 'default', 'definitions', 'format', 'id']);
const JSON_TYPE_NAMES = new Set(['array', 'boolean', 'null', 'number', 'object', 'string']);
const BSON_TYPE_NAMES = new Set([
  'double', 'string', 'object', 'array', 'binData', 'undefined', 'objectId', 'bool', 'date', 'null', 'regex', 'dbPointer',
  'javascript', 'symbol', 'javascriptWithScope', 'int', 'timestamp', 'long', 'decimal', 'minKey', 'maxKey', 'number',
]);

export interface SchemaSyntaxError {
  code: 'FailedToParse' | 'TypeMismatch' | 'BadValue';
  message: string;
}

/**
 * What mongod says of a `$jsonSchema` it refuses to take (a validator of create or collMod):
 * null when it takes it. The engine evaluates some keywords mongod refuses (draft-6 `const`,
 * `format`), so without this a validator could install here and fail on a real MongoDB.
 */
export function schemaSyntaxError(schema: unknown): SchemaSyntaxError | null {
  if (!isPlainObject(schema)) return { code: 'TypeMismatch', message: '$jsonSchema must be an object' };
  return checkSchemaNode(schema);
}

function checkSchemaNode(schema: Document): SchemaSyntaxError | null {
  const failed = (message: string): SchemaSyntaxError => ({ code: 'FailedToParse', message });
  const mistyped = (message: string): SchemaSyntaxError => ({ code: 'TypeMismatch', message });
  for (const k of Object.keys(schema)) {
    if (KEYWORDS.has(k)) continue;
    if (UNSUPPORTED_KEYWORDS.has(k)) return failed(`$jsonSchema keyword '${k}' is not currently supported`);
    return failed(`Unknown $jsonSchema keyword: ${k}`);
  }
  for (const k of ['title', 'description']) {
    if (schema[k] !== undefined && typeof schema[k] !== 'string') return mistyped(`$jsonSchema keyword '${k}' must be of type string`);
  }
  if (schema['type'] !== undefined && schema['bsonType'] !== undefined) return failed("Cannot specify both $jsonSchema keywords 'type' and 'bsonType'");
  for (const [k, names] of [['type', JSON_TYPE_NAMES], ['bsonType', BSON_TYPE_NAMES]] as const) {
    const v = schema[k];
    if (v === undefined) continue;
    const list = Array.isArray(v) ? v : [v];
    if (list.length === 0) return failed(`$jsonSchema keyword '${k}' must name at least one type`);
    for (const t of list) {
      if (typeof t !== 'string') return mistyped(`$jsonSchema keyword '${k}' must be a string or an array of strings`);
      if (k === 'type' && t === 'integer') return failed("$jsonSchema type 'integer' is not currently supported.");
      if (!names.has(t)) return { code: 'BadValue', message: `Unknown type name alias: ${t}` };
    }
  }
  for (const [k, dependent] of [['exclusiveMaximum', 'maximum'], ['exclusiveMinimum', 'minimum']] as const) {
    if (schema[k] === undefined) continue;
    // draft 4's boolean form only; draft 6's number form is refused
    if (typeof schema[k] !== 'boolean') return mistyped(`$jsonSchema keyword '${k}' must be a boolean`);
    if (schema[dependent] === undefined) return failed(`$jsonSchema keyword '${dependent}' must be a present if ${k} is present`);
  }
  for (const k of ['maximum', 'minimum', 'multipleOf']) {
    if (schema[k] !== undefined && !isNumeric(schema[k])) return mistyped(`$jsonSchema keyword '${k}' must be a number`);
  }
  if (schema['pattern'] !== undefined && typeof schema['pattern'] !== 'string') return mistyped("$jsonSchema keyword 'pattern' must be a string");
  const enumValues = schema['enum'];
  if (enumValues !== undefined) {
    if (!Array.isArray(enumValues)) return mistyped("$jsonSchema keyword 'enum' must be an array");
    if (enumValues.length === 0) return failed("$jsonSchema keyword 'enum' cannot be an empty array");
  }
  const required = schema['required'];
  if (required !== undefined) {
    if (!Array.isArray(required)) return mistyped("$jsonSchema keyword 'required' must be an array");
    if (required.length === 0) return failed("$jsonSchema keyword 'required' cannot be an empty array");
    if (!required.every((r) => typeof r === 'string')) return mistyped("$jsonSchema keyword 'required' must be an array of strings");
    if (new Set(required).size !== required.length) return failed("$jsonSchema keyword 'required' array cannot contain duplicate values");
  }
  for (const k of ['properties', 'patternProperties']) {
    const v = schema[k];
    if (v === undefined) continue;
    if (!isPlainObject(v)) return mistyped(`$jsonSchema keyword '${k}' must be an object`);
    for (const sub of Object.values(v)) {
      if (!isPlainObject(sub)) return mistyped(`Nested schema for $jsonSchema property '${k}' must be an object`);
      const err = checkSchemaNode(sub);
      if (err) return err;
    }
  }
  for (const k of ['additionalProperties', 'additionalItems']) {
    const v = schema[k];
    if (v === undefined || typeof v === 'boolean') continue;
    if (!isPlainObject(v)) return mistyped(`$jsonSchema keyword '${k}' must be either an object or a boolean`);
    const err = checkSchemaNode(v);
    if (err) return err;
  }
  const items = schema['items'];
  if (items !== undefined) {
    if (!isPlainObject(items) && !Array.isArray(items)) return mistyped("$jsonSchema keyword 'items' must be an array or an object");
    for (const sub of Array.isArray(items) ? items : [items]) {
      if (!isPlainObject(sub)) return mistyped("$jsonSchema keyword 'items' requires that each element of the array is an object");
      const err = checkSchemaNode(sub);
      if (err) return err;
    }
  }
  for (const k of ['allOf', 'anyOf', 'oneOf']) {
    const v = schema[k];
    if (v === undefined) continue;
    if (!Array.isArray(v)) return mistyped(`$jsonSchema keyword '${k}' must be an array`);
    if (v.length === 0) return { code: 'BadValue', message: `$jsonSchema keyword '${k}' must be a non-empty array` };
    for (const sub of v) {
      if (!isPlainObject(sub)) return mistyped(`$jsonSchema keyword '${k}' must be an array of objects`);
      const err = checkSchemaNode(sub);
      if (err) return err;
    }
  }
  if (schema['not'] !== undefined) {
    if (!isPlainObject(schema['not'])) return mistyped("$jsonSchema keyword 'not' must be an object");
    const err = checkSchemaNode(schema['not']);
    if (err) return err;
  }
  const deps = schema['dependencies'];
  if (deps !== undefined) {
    if (!isPlainObject(deps)) return mistyped("$jsonSchema keyword 'dependencies' must be an object");
    for (const dep of Object.values(deps)) {
      if (Array.isArray(dep)) continue;
      if (!isPlainObject(dep)) return mistyped("property dependency in $jsonSchema keyword 'dependencies' must be an object or an array");
      const err = checkSchemaNode(dep);
      if (err) return err;
    }
  }
  return null;
}
