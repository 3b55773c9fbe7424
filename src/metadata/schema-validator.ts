import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { VolregError, type ErrorCode } from '../domain/errors.ts';
import { PACKAGE_ROOT } from '../package-root.ts';

/**
 * The JSON Schemas of schemas/ (stored documents, manifests, API bodies), compiled once by ajv.
 * Callers check a document before writing it, or a request body before using it:
 *
 *     assertValid('stored-docker-tag', doc);                    // 400 BAD_REQUEST by default
 *     assertValid('oci-image-manifest', body, 'MANIFEST_INVALID');
 *
 * Stored-document schemas type their fields with MongoDB's `bsonType`, which ajv learns here,
 * so the same file is also the collection's `$jsonSchema` validator (see mongoJsonSchema).
 */

export const SCHEMAS_DIR = join(PACKAGE_ROOT, 'schemas');
const SUFFIX = '.schema.json';
const MAX_REPORTED_ERRORS = 10;

type JsonObject = { [k: string]: unknown };

interface Loaded {
  ajv: Ajv;
  raw: Map<string, JsonObject>;
  compiled: Map<string, ValidateFunction>;
}

let loaded: Loaded | undefined;

/** Loads and compiles every schema file (once); throws on a broken schema file. */
export function loadSchemas(dir: string = SCHEMAS_DIR): void {
  if (!loaded) loaded = compileAll(dir);
}

function schemas(): Loaded {
  loadSchemas();
  return loaded as Loaded;
}

/** The ids of every schema in schemas/. */
export function schemaIds(): string[] {
  return [...schemas().raw.keys()].sort();
}

export interface SchemaProblem {
  path: string;
  message: string;
}

/** Validates without throwing: the problems found, empty when `doc` is valid. */
export function validate(schemaId: string, doc: unknown): SchemaProblem[] {
  const fn = schemas().compiled.get(schemaId);
  if (!fn) throw new Error(`unknown schema ${schemaId}`);
  if (fn(doc)) return [];
  return (fn.errors ?? []).slice(0, MAX_REPORTED_ERRORS).map(describe);
}

/**
 * Throws a VolregError with `code` when `doc` does not match the schema. The detail names the
 * schema and the failing paths, never values or internals.
 */
export function assertValid<T = unknown>(schemaId: string, doc: unknown, code: ErrorCode = 'BAD_REQUEST'): asserts doc is T {
  const problems = validate(schemaId, doc);
  if (problems.length > 0) {
    const first = problems[0]!;
    throw new VolregError(code, `${first.path || 'document'} ${first.message}`, { schema: schemaId, errors: problems });
  }
}

/**
 * A stored-document schema as a MongoDB `$jsonSchema` (minus the keywords MongoDB does not
 * take), for collection validators.
 */
export function mongoJsonSchema(schemaId: string): JsonObject {
  const raw = schemas().raw.get(schemaId);
  if (!raw) throw new Error(`unknown schema ${schemaId}`);
  return toMongo(raw) as JsonObject;
}

// ---------------------------------------------------------------------------------------------

function describe(e: ErrorObject): SchemaProblem {
  let message = e.message ?? 'is invalid';
  if (e.keyword === 'required') message = 'is missing a required field';
  if (e.keyword === 'additionalProperties') {
    message = `has an unexpected field ${JSON.stringify((e.params as { additionalProperty?: string }).additionalProperty)}`;
  }
  const path = e.keyword === 'required' ? `${e.instancePath}/${(e.params as { missingProperty?: string }).missingProperty}` : e.instancePath;
  return { path, message };
}

function compileAll(dir: string): Loaded {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictTuples: false, allowUnionTypes: true });
  // ajv-formats is CommonJS; its callable export sits on `default` when imported from ESM.
  type AddFormats = (a: Ajv) => Ajv;
  const addFormats = (addFormatsModule as unknown as { default?: AddFormats }).default ?? (addFormatsModule as unknown as AddFormats);
  addFormats(ajv);
  ajv.addKeyword({ keyword: 'bsonType', schemaType: ['string', 'array'], validate: bsonTypeKeyword, errors: true });

  const raw = new Map<string, JsonObject>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith(SUFFIX)).sort()) {
    const id = file.slice(0, -SUFFIX.length);
    let schema: unknown;
    try {
      schema = JSON.parse(readFileSync(`${dir}/${file}`, 'utf8'));
    } catch (err) {
      throw new Error(`schemas/${file}: not valid JSON: ${(err as Error).message}`);
    }
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new Error(`schemas/${file}: not a JSON object`);
    const obj = schema as JsonObject;
    if (obj.$id !== undefined && obj.$id !== id) throw new Error(`schemas/${file}: $id must be ${JSON.stringify(id)}`);
    raw.set(id, obj);
    ajv.addSchema({ ...obj, $id: id });
  }
  const compiled = new Map<string, ValidateFunction>();
  for (const id of raw.keys()) {
    const fn = ajv.getSchema(id);
    if (!fn) throw new Error(`schemas/${id}${SUFFIX}: did not compile`);
    compiled.set(id, fn);
  }
  return { ajv, raw, compiled };
}

type BsonTypeName = 'string' | 'number' | 'int' | 'long' | 'double' | 'decimal' | 'bool' | 'object' | 'array' | 'date' | 'objectId' | 'binData' | 'null';

function bsonKind(v: unknown): string | undefined {
  return typeof v === 'object' && v !== null && '_bsontype' in v ? String((v as { _bsontype: unknown })._bsontype) : undefined;
}

function matchesBsonType(type: BsonTypeName, v: unknown): boolean {
  const kind = bsonKind(v);
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'number':
      return (typeof v === 'number' && Number.isFinite(v)) || typeof v === 'bigint' || ['Int32', 'Long', 'Double', 'Decimal128'].includes(kind ?? '');
    case 'int':
      return (typeof v === 'number' && Number.isInteger(v) && v >= -2147483648 && v <= 2147483647) || kind === 'Int32';
    case 'long':
      return (typeof v === 'number' && Number.isSafeInteger(v)) || typeof v === 'bigint' || kind === 'Long';
    case 'double':
      return typeof v === 'number' || kind === 'Double';
    case 'decimal':
      return kind === 'Decimal128';
    case 'bool':
      return typeof v === 'boolean';
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date) && !(v instanceof Uint8Array) && kind === undefined;
    case 'array':
      return Array.isArray(v);
    case 'date':
      return v instanceof Date && !Number.isNaN(v.getTime());
    case 'objectId':
      return kind === 'ObjectId';
    case 'binData':
      return kind === 'Binary' || v instanceof Uint8Array;
    case 'null':
      return v === null;
    default:
      return false;
  }
}

interface KeywordFn {
  (schema: string | string[], data: unknown): boolean;
  errors?: Array<Partial<ErrorObject>>;
}

const bsonTypeKeyword: KeywordFn = (schema, data) => {
  const types = (Array.isArray(schema) ? schema : [schema]) as BsonTypeName[];
  const ok = types.some((t) => matchesBsonType(t, data));
  bsonTypeKeyword.errors = ok ? [] : [{ keyword: 'bsonType', message: `must be of BSON type ${types.join(' or ')}`, params: { bsonType: schema } }];
  return ok;
};

// Keywords MongoDB's $jsonSchema rejects; title and description are kept.
const NOT_FOR_MONGO = new Set(['$id', '$schema', '$comment', '$ref', 'definitions', '$defs', 'default', 'format', 'examples', 'const', 'id']);
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', 'dependencies']);
const SCHEMA_LISTS = new Set(['allOf', 'anyOf', 'oneOf', 'items']);
const SCHEMA_VALUES = new Set(['not', 'additionalProperties', 'additionalItems', 'items']);

function toMongo(node: unknown): unknown {
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return node;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node as JsonObject)) {
    if (NOT_FOR_MONGO.has(k)) continue;
    if (SCHEMA_MAPS.has(k) && typeof v === 'object' && v !== null) {
      out[k] = Object.fromEntries(Object.entries(v as JsonObject).map(([name, sub]) => [name, Array.isArray(sub) ? sub : toMongo(sub)]));
    } else if (SCHEMA_LISTS.has(k) && Array.isArray(v)) {
      out[k] = v.map(toMongo);
    } else if (SCHEMA_VALUES.has(k)) {
      out[k] = toMongo(v);
    } else {
      out[k] = v;
    }
  }
  return out;
}
