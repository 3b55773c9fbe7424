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

function asList(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [String(v)];
}

export function validateSchema(schema: Document, value: unknown, path = ''): SchemaFailure[] {
  const failures: SchemaFailure[] = [];
  const fail = (operatorName: string, reason: string, extra: Document = {}): void => {
    failures.push({ path, operatorName, specifiedAs: { [operatorName]: schema[operatorName] }, reason, ...extra });
  };

  if (schema['bsonType'] !== undefined) {
    const types = asList(schema['bsonType']);
    if (value !== undefined && !types.some((t) => matchesBsonType(value, t))) {
      fail('bsonType', 'type did not match', { consideredValue: value, consideredType: bsonTypeName(value) });
    }
  }
  if (schema['type'] !== undefined) {
    const types = asList(schema['type']);
    if (value !== undefined && !types.some((t) => (JSON_TYPES[t] ?? (() => false))(value))) {
      fail('type', 'type did not match', { consideredValue: value, consideredType: bsonTypeName(value) });
    }
  }
  if (Array.isArray(schema['enum']) && value !== undefined) {
    if (!schema['enum'].some((e: unknown) => compareValues(e, value) === 0)) {
      fail('enum', 'value was not found in enum', { consideredValue: value });
    }
  }

  if (typeof value === 'string') {
    if (typeof schema['pattern'] === 'string' && !schemaRegex(schema['pattern']).test(value)) {
      fail('pattern', 'regular expression did not match', { consideredValue: value });
    }
    const min = numericValue(schema['minLength']);
    if (min !== undefined && [...value].length < min) fail('minLength', 'specified string length was not satisfied', { consideredValue: value });
    const max = numericValue(schema['maxLength']);
    if (max !== undefined && [...value].length > max) fail('maxLength', 'specified string length was not satisfied', { consideredValue: value });
  }

  if (isNumeric(value)) {
    const n = numericValue(value) as number;
    const min = numericValue(schema['minimum']);
    if (min !== undefined && (schema['exclusiveMinimum'] === true ? n <= min : n < min)) {
      fail('minimum', 'comparison failed', { consideredValue: value });
    }
    const max = numericValue(schema['maximum']);
    if (max !== undefined && (schema['exclusiveMaximum'] === true ? n >= max : n > max)) {
      fail('maximum', 'comparison failed', { consideredValue: value });
    }
    const mult = numericValue(schema['multipleOf']);
    if (mult !== undefined && mult !== 0 && n % mult !== 0) fail('multipleOf', 'considered value is not a multiple of the specified value', { consideredValue: value });
  }

  if (Array.isArray(value)) {
    const items = schema['items'];
    if (isPlainObject(items)) {
      value.forEach((item, i) => failures.push(...validateSchema(items, item, `${path}.${i}`)));
    } else if (Array.isArray(items)) {
      items.forEach((s: unknown, i: number) => {
        if (isPlainObject(s) && i < value.length) failures.push(...validateSchema(s, value[i], `${path}.${i}`));
      });
      const extra = schema['additionalItems'];
      if (extra === false && value.length > items.length) fail('additionalItems', 'found additional items');
    }
    const minItems = numericValue(schema['minItems']);
    if (minItems !== undefined && value.length < minItems) fail('minItems', 'array did not match specified length', { numberOfItems: value.length });
    const maxItems = numericValue(schema['maxItems']);
    if (maxItems !== undefined && value.length > maxItems) fail('maxItems', 'array did not match specified length', { numberOfItems: value.length });
    if (schema['uniqueItems'] === true) {
      for (let i = 0; i < value.length; i++) {
        for (let j = i + 1; j < value.length; j++) {
          if (compareValues(value[i], value[j]) === 0) {
            fail('uniqueItems', 'found a duplicate item', { duplicatedValue: value[i] });
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
      const missing = required.map(String).filter((k) => value[k] === undefined);
      if (missing.length > 0) fail('required', 'missing required fields', { missingProperties: missing });
    }
    const props = isPlainObject(schema['properties']) ? schema['properties'] : {};
    const patterns = isPlainObject(schema['patternProperties']) ? schema['patternProperties'] : {};
    const additional = schema['additionalProperties'];
    const extraFields: string[] = [];
    for (const k of Object.keys(value)) {
      let covered = false;
      const ps = props[k];
      if (isPlainObject(ps)) {
        covered = true;
        failures.push(...validateSchema(ps, value[k], path ? `${path}.${k}` : k));
      }
      for (const pat of Object.keys(patterns)) {
        if (schemaRegex(pat).test(k)) {
          covered = true;
          const s = patterns[pat];
          if (isPlainObject(s)) failures.push(...validateSchema(s, value[k], path ? `${path}.${k}` : k));
        }
      }
      if (!covered) {
        if (additional === false) extraFields.push(k);
        else if (isPlainObject(additional)) failures.push(...validateSchema(additional, value[k], path ? `${path}.${k}` : k));
      }
    }
    if (extraFields.length > 0) fail('additionalProperties', 'found additional properties', { additionalProperties: extraFields });
    const nProps = Object.keys(value).length;
    const minP = numericValue(schema['minProperties']);
    if (minP !== undefined && nProps < minP) fail('minProperties', 'specified number of properties was not satisfied', { numberOfProperties: nProps });
    const maxP = numericValue(schema['maxProperties']);
    if (maxP !== undefined && nProps > maxP) fail('maxProperties', 'specified number of properties was not satisfied', { numberOfProperties: nProps });
  }

  if (value !== undefined) {
    if (Array.isArray(schema['allOf'])) {
      for (const s of schema['allOf']) if (isPlainObject(s)) failures.push(...validateSchema(s, value, path));
    }
    if (Array.isArray(schema['anyOf'])) {
      const ok = schema['anyOf'].some((s: unknown) => isPlainObject(s) && validateSchema(s, value, path).length === 0);
      if (!ok) fail('anyOf', 'did not match any of the specified schemas');
    }
    if (Array.isArray(schema['oneOf'])) {
      const n = schema['oneOf'].filter((s: unknown) => isPlainObject(s) && validateSchema(s, value, path).length === 0).length;
      if (n !== 1) fail('oneOf', n === 0 ? 'did not match any of the specified schemas' : 'matched more than one of the specified schemas');
    }
    if (isPlainObject(schema['not']) && validateSchema(schema['not'], value, path).length === 0) {
      fail('not', 'child schema matched');
    }
  }
  return failures;
}

export function jsonSchemaPredicate(schema: Document): (doc: unknown) => boolean {
  return (doc) => validateSchema(schema, doc).length === 0;
}
