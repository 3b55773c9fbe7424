import { Int32, type Document } from 'bson';
import { compareValues, formatDocument, isPlainObject, numericValue, toView, toBson } from '../bson-values.ts';
import type { Collection } from '../collection-store.ts';
import { engineError } from '../errors.ts';
import type { CommandContext } from '../engine-state.ts';
import { defaultIndexName, type Index } from '../index-manager.ts';
import { cursorReply } from '../reply-builder.ts';
import { collectionArg, cursorBatchSize, documentArray } from './command-args.ts';

/** createIndexes, listIndexes, dropIndexes with mongod's conflict rules. */

const ALLOWED_SPEC_FIELDS = new Set([
  'key', 'name', 'unique', 'sparse', 'partialFilterExpression', 'expireAfterSeconds', 'background',
  'hidden', 'collation', 'v', 'ns', 'storageEngine', 'prepareUnique',
]);

/** Options that decide whether two specs describe the same index. */
const IDENTITY_FIELDS = ['unique', 'sparse', 'partialFilterExpression', 'expireAfterSeconds', 'collation', 'hidden'];

function normalizeSpec(raw: Document): Document {
  for (const k of Object.keys(raw)) {
    if (!ALLOWED_SPEC_FIELDS.has(k)) {
      throw engineError('InvalidIndexSpecificationOption', `The field '${k}' is not valid for an index specification. Specification: ${formatDocument(raw)}`);
    }
  }
  const key = raw['key'];
  if (!isPlainObject(key) || Object.keys(key).length === 0) {
    throw engineError('CannotCreateIndex', `Index keys cannot be an empty field.`);
  }
  for (const [f, dir] of Object.entries(key)) {
    if (typeof dir === 'string') {
      if (dir !== 'hashed') {
        throw engineError('CannotCreateIndex', `Index type '${dir}' on field '${f}' is not supported by the volreg embedded engine`);
      }
      continue;
    }
    const n = numericValue(dir);
    if (n === undefined || n === 0 || Number.isNaN(n)) {
      throw engineError('CannotCreateIndex', `Values in the index key pattern can only be of type numbers > 0, numbers < 0, or strings. Found: ${formatDocument(key)}`);
    }
  }
  const name = raw['name'] === undefined ? defaultIndexName(key) : raw['name'];
  if (typeof name !== 'string' || name.length === 0) throw engineError('CannotCreateIndex', 'The index name cannot be empty');
  if (name === '_id_' && (Object.keys(key).length !== 1 || Object.keys(key)[0] !== '_id')) {
    throw engineError('BadValue', "The index name '_id_' is reserved for the _id index, which must have key pattern {_id: 1}");
  }
  if (raw['expireAfterSeconds'] !== undefined) {
    const s = numericValue(raw['expireAfterSeconds']);
    if (s === undefined || s < 0) throw engineError('CannotCreateIndex', `TTL index 'expireAfterSeconds' option must be numeric, but received a type of '${typeof raw['expireAfterSeconds']}'`);
    if (Object.keys(key).length > 1) throw engineError('CannotCreateIndex', 'TTL indexes are single-field indexes, compound indexes do not support TTL.');
  }
  if (raw['partialFilterExpression'] !== undefined && !isPlainObject(raw['partialFilterExpression'])) {
    throw engineError('TypeMismatch', "The field 'partialFilterExpression' must be an object");
  }
  const spec: Document = { v: new Int32(2), key, name };
  for (const k of Object.keys(raw)) {
    if (k === 'key' || k === 'name' || k === 'v' || k === 'ns' || k === 'background') continue;
    const v = raw[k];
    if ((k === 'unique' || k === 'sparse' || k === 'hidden') && (v === false || numericValue(v) === 0)) continue;
    spec[k] = k === 'unique' || k === 'sparse' || k === 'hidden' ? true : v;
  }
  if (name === '_id_') delete spec['unique'];
  return spec;
}

function sameKey(a: Document, b: Document): boolean {
  return compareValues(toView(a), toView(b)) === 0;
}

function sameOptions(a: Document, b: Document): boolean {
  return IDENTITY_FIELDS.every((f) => compareValues(toView(a[f]), toView(b[f])) === 0);
}

function specString(spec: Document): string {
  return formatDocument(toView(spec) as Document);
}

/** Returns the existing index when the request is a no-op; throws on conflicts. */
function checkAgainstExisting(coll: Collection, spec: Document): Index | undefined {
  const byName = coll.indexes.get(String(spec['name']));
  if (byName) {
    if (!sameKey(byName.spec['key'] as Document, spec['key'] as Document)) {
      throw engineError('IndexKeySpecsConflict', `An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: ${specString(spec)}, existing index: ${specString(byName.spec)}`);
    }
    if (!sameOptions(byName.spec, spec)) {
      throw engineError('IndexOptionsConflict', `An equivalent index already exists with the same name but different options. Requested index: ${specString(spec)}, existing index: ${specString(byName.spec)}`);
    }
    return byName;
  }
  for (const ix of coll.indexes.values()) {
    if (!sameKey(ix.spec['key'] as Document, spec['key'] as Document)) continue;
    const pfeA = toView(ix.spec['partialFilterExpression']);
    const pfeB = toView(spec['partialFilterExpression']);
    if (compareValues(pfeA, pfeB) !== 0) continue; // distinct partial indexes may share a key pattern
    if (sameOptions(ix.spec, spec)) throw engineError('IndexOptionsConflict', `Index already exists with a different name: ${ix.name}`);
    throw engineError('IndexOptionsConflict', `An equivalent index already exists with a different name and options. Requested index: ${specString(spec)}, existing index: ${specString(ix.spec)}`);
  }
  return undefined;
}

export function createIndexesCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'createIndexes');
  const specs = documentArray(cmd, 'indexes', 'createIndexes').map(normalizeSpec);
  if (specs.length === 0) throw engineError('BadValue', 'Must specify at least one index to create');
  const catalog = ctx.state.catalog;
  let coll = catalog.getCollection(ctx.db, name);
  const created = coll === undefined;
  coll = coll ?? catalog.ensureCollection(ctx.db, name);
  const before = coll.indexes.size;
  const toBuild: Document[] = [];
  for (const spec of specs) {
    if (checkAgainstExisting(coll, spec)) continue;
    if (toBuild.some((s) => s['name'] === spec['name'])) continue;
    toBuild.push(spec);
  }
  const built: string[] = [];
  try {
    for (const spec of toBuild) {
      catalog.createIndex(coll, spec);
      built.push(String(spec['name']));
    }
  } catch (err) {
    for (const n of built) catalog.dropIndex(coll, n);
    throw err;
  }
  const reply: Document = { numIndexesBefore: before, numIndexesAfter: coll.indexes.size };
  if (toBuild.length === 0) reply['note'] = 'all indexes already exist';
  else reply['createdCollectionAutomatically'] = created;
  reply['ok'] = 1;
  return reply;
}

export function listIndexesCommand(cmd: Document, ctx: CommandContext): Buffer {
  const name = collectionArg(cmd, 'listIndexes');
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  const ns = `${ctx.db}.${name}`;
  if (!coll) throw engineError('NamespaceNotFound', `ns does not exist: ${ns}`);
  const specs = [...coll.indexes.values()].map((ix) => ix.spec);
  const batch = ctx.state.cursors.open(ns, ctx.connectionId, specs, (s: Document) => toBson(s), cursorBatchSize(cmd), false);
  return cursorReply('firstBatch', batch.docs, batch.id, ns);
}

export function dropIndexesCommand(cmd: Document, ctx: CommandContext): Document {
  const cmdName = 'dropIndexes' in cmd ? 'dropIndexes' : 'deleteIndexes';
  const name = collectionArg(cmd, cmdName);
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  if (!coll) throw engineError('NamespaceNotFound', `ns not found ${ctx.db}.${name}`);
  const was = coll.indexes.size;
  const target = cmd['index'];
  const names: string[] = [];
  if (target === '*') {
    for (const n of coll.indexes.keys()) if (n !== '_id_') names.push(n);
  } else if (typeof target === 'string') {
    names.push(target);
  } else if (Array.isArray(target)) {
    for (const t of target) names.push(String(t));
  } else if (isPlainObject(target)) {
    const ix = [...coll.indexes.values()].find((i) => sameKey(i.spec['key'] as Document, target));
    if (!ix) throw engineError('IndexNotFound', `can't find index with key: ${formatDocument(toView(target) as Document)}`);
    names.push(ix.name);
  } else {
    throw engineError('TypeMismatch', "BSON field 'dropIndexes.index' is the wrong type, expected type 'string, array or object'");
  }
  for (const n of names) {
    if (n === '_id_') throw engineError('InvalidOptions', 'cannot drop _id index');
    if (!coll.indexes.has(n)) throw engineError('IndexNotFound', `index not found with name [${n}]`);
  }
  for (const n of names) ctx.state.catalog.dropIndex(coll, n);
  const reply: Document = { nIndexesWas: was };
  if (target === '*') reply['msg'] = 'non-_id indexes dropped for collection';
  reply['ok'] = 1;
  return reply;
}
