import { Int32, type Document } from 'bson';
import { compareValues, isPlainObject, numericValue, toView, toBson } from '../bson-values.ts';
import { checkCollectionName, checkDbName, type Collection } from '../collection-store.ts';
import { engineError } from '../errors.ts';
import type { CommandContext } from '../engine-state.ts';
import { schemaSyntaxError } from '../json-schema.ts';
import { compileFilter } from '../matcher.ts';
import { cursorReply } from '../reply-builder.ts';
import { collectionArg, cursorBatchSize, flag, optionalDocument } from './command-args.ts';

/** create, drop, collMod, renameCollection, listCollections, listDatabases, dropDatabase, stats. */

/** Generic command fields that are never collection options. */
const GENERIC_FIELDS = new Set([
  '$db', 'lsid', '$clusterTime', '$readPreference', 'writeConcern', 'readConcern', 'comment',
  'maxTimeMS', 'apiVersion', 'apiStrict', 'apiDeprecationErrors', 'txnNumber', 'autocommit',
  'startTransaction', '$audit', '$client',
]);

const UNSUPPORTED_CREATE_OPTIONS: Record<string, string> = {
  viewOn: 'views',
  pipeline: 'views',
  timeseries: 'time-series collections',
  clusteredIndex: 'clustered collections',
  changeStreamPreAndPostImages: 'change stream pre- and post-images',
  encryptedFields: 'queryable encryption',
  capped: 'capped collections',
};

function optionsOf(cmd: Document, commandName: string): Document {
  const options: Document = {};
  for (const k of Object.keys(cmd)) {
    if (k === commandName || GENERIC_FIELDS.has(k)) continue;
    options[k] = cmd[k];
  }
  return options;
}

export function createCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'create');
  const options = optionsOf(cmd, 'create');
  for (const k of Object.keys(options)) {
    const what = UNSUPPORTED_CREATE_OPTIONS[k];
    if (what && options[k] !== false) throw engineError('CommandNotSupported', `${what} are not supported by the volreg embedded engine`);
  }
  if (options['validator'] !== undefined && !isPlainObject(options['validator'])) {
    throw engineError('TypeMismatch', "BSON field 'create.validator' is the wrong type, expected type 'object'");
  }
  if (isPlainObject(options['validator'])) checkValidator(options['validator']);
  checkValidationOptions(options);
  const existing = ctx.state.catalog.getCollection(ctx.db, name);
  if (existing) {
    if (compareValues(toView(existing.options), toView(options)) === 0) return { ok: 1 };
    throw engineError('NamespaceExists', `Collection ${ctx.db}.${name} already exists.`);
  }
  ctx.state.catalog.createCollection(ctx.db, name, options);
  return { ok: 1 };
}

/** A validator mongod would refuse is refused here too, with its code and words. */
function checkValidator(validator: Document): void {
  if (validator['$jsonSchema'] !== undefined) {
    const err = schemaSyntaxError(validator['$jsonSchema']);
    if (err) throw engineError(err.code, err.message);
  }
  compileFilter(toView(withoutSchema(validator)) as Document);
}

function withoutSchema(v: Document): Document {
  const out: Document = {};
  for (const k of Object.keys(v)) if (k !== '$jsonSchema') out[k] = v[k];
  return out;
}

function checkValidationOptions(options: Document): void {
  const level = options['validationLevel'];
  if (level !== undefined && !['off', 'strict', 'moderate'].includes(String(level))) {
    throw engineError('BadValue', `Enumeration value '${String(level)}' for field 'validationLevel' is not a valid value.`);
  }
  const action = options['validationAction'];
  if (action !== undefined && !['error', 'warn'].includes(String(action))) {
    throw engineError('BadValue', `Enumeration value '${String(action)}' for field 'validationAction' is not a valid value.`);
  }
}

export function dropCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'drop');
  const dropped = ctx.state.catalog.dropCollection(ctx.db, name);
  const reply: Document = {};
  if (dropped) reply['nIndexesWas'] = dropped.indexes.size;
  reply['ns'] = `${ctx.db}.${name}`;
  reply['ok'] = 1;
  return reply;
}

export function dropDatabaseCommand(_cmd: Document, ctx: CommandContext): Document {
  ctx.state.catalog.dropDatabase(ctx.db);
  return { dropped: ctx.db, ok: 1 };
}

export function collModCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'collMod');
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  if (!coll) throw engineError('NamespaceNotFound', `ns does not exist: ${ctx.db}.${name}`);
  const reply: Document = {};
  const changes = optionsOf(cmd, 'collMod');
  const index = changes['index'];
  delete changes['index'];
  checkValidationOptions(changes);
  for (const k of Object.keys(changes)) {
    if (!['validator', 'validationLevel', 'validationAction'].includes(k)) {
      throw engineError('InvalidOptions', `unknown option to collMod: ${k}`);
    }
  }
  if (changes['validator'] !== undefined && !isPlainObject(changes['validator'])) {
    throw engineError('TypeMismatch', "BSON field 'collMod.validator' is the wrong type, expected type 'object'");
  }
  if (isPlainObject(changes['validator'])) checkValidator(changes['validator']);
  if (isPlainObject(index)) modifyIndex(coll, index, reply, ctx);
  if (Object.keys(changes).length > 0) {
    const options = { ...coll.options, ...changes };
    if (isPlainObject(changes['validator']) && Object.keys(changes['validator']).length === 0) delete options['validator'];
    ctx.state.catalog.setOptions(coll, options);
  }
  reply['ok'] = 1;
  return reply;
}

function modifyIndex(coll: Collection, index: Document, reply: Document, ctx: CommandContext): void {
  const ix = typeof index['name'] === 'string'
    ? coll.indexes.get(index['name'])
    : [...coll.indexes.values()].find((i) => isPlainObject(index['keyPattern']) && compareValues(toView(i.spec['key']), toView(index['keyPattern'])) === 0);
  if (!ix) throw engineError('IndexNotFound', `cannot find index ${JSON.stringify(toView(index['name'] ?? index['keyPattern']))} for ns ${coll.ns}`);
  const spec = { ...ix.spec };
  if (index['expireAfterSeconds'] !== undefined) {
    if (ix.expireAfterSeconds === undefined) throw engineError('InvalidOptions', 'no expireAfterSeconds field to update');
    reply['expireAfterSeconds_old'] = ix.spec['expireAfterSeconds'];
    reply['expireAfterSeconds_new'] = index['expireAfterSeconds'];
    spec['expireAfterSeconds'] = index['expireAfterSeconds'];
  }
  if (index['hidden'] !== undefined) {
    reply['hidden_old'] = ix.spec['hidden'] === true;
    reply['hidden_new'] = index['hidden'] === true;
    if (index['hidden'] === true) spec['hidden'] = true;
    else delete spec['hidden'];
  }
  ctx.state.catalog.replaceIndexSpec(coll, spec);
}

function splitNs(ns: unknown, field: string): [string, string] {
  if (typeof ns !== 'string' || !ns.includes('.')) throw engineError('InvalidNamespace', `Invalid ${field} namespace: ${String(ns)}`);
  const dot = ns.indexOf('.');
  return [ns.slice(0, dot), ns.slice(dot + 1)];
}

export function renameCollectionCommand(cmd: Document, ctx: CommandContext): Document {
  if (ctx.db !== 'admin') throw engineError('Unauthorized', 'renameCollection may only be run against the admin database.');
  const [fromDb, from] = splitNs(cmd['renameCollection'], 'source');
  const [toDb, to] = splitNs(cmd['to'], 'target');
  checkDbName(toDb);
  checkCollectionName(toDb, to);
  const catalog = ctx.state.catalog;
  if (!catalog.getCollection(fromDb, from)) throw engineError('NamespaceNotFound', `Source collection ${fromDb}.${from} does not exist`);
  if (fromDb === toDb && from === to) throw engineError('IllegalOperation', "Can't rename a collection to itself");
  if (catalog.getCollection(toDb, to)) {
    if (!flag(cmd, 'dropTarget')) throw engineError('NamespaceExists', 'target namespace exists');
    catalog.dropCollection(toDb, to);
  }
  catalog.renameCollection(fromDb, from, toDb, to);
  return { ok: 1 };
}

function collectionInfo(coll: Collection): Document {
  return {
    name: coll.name,
    type: 'collection',
    options: coll.options,
    info: { readOnly: false, uuid: coll.uuid },
    idIndex: { v: new Int32(2), key: { _id: new Int32(1) }, name: '_id_' },
  };
}

export function listCollectionsCommand(cmd: Document, ctx: CommandContext): Buffer {
  const filter = optionalDocument(cmd, 'filter');
  const nameOnly = flag(cmd, 'nameOnly');
  const colls = [...(ctx.state.catalog.dbs.get(ctx.db)?.values() ?? [])];
  const matcher = compileFilter(filter ? (toView(filter) as Document) : undefined);
  const entries: Document[] = [];
  for (const c of colls) {
    const info = collectionInfo(c);
    if (!matcher.test(toView(info) as Document)) continue;
    entries.push(nameOnly ? { name: c.name, type: 'collection' } : info);
  }
  const ns = `${ctx.db}.$cmd.listCollections`;
  const batch = ctx.state.cursors.open(ns, ctx.connectionId, entries, (d: Document) => toBson(d), cursorBatchSize(cmd), false);
  return cursorReply('firstBatch', batch.docs, batch.id, ns);
}

function dataSize(coll: Collection): number {
  let n = 0;
  for (const r of coll.records.values()) n += r.raw.length;
  return n;
}

export function listDatabasesCommand(cmd: Document, ctx: CommandContext): Document {
  if (ctx.db !== 'admin') throw engineError('Unauthorized', 'listDatabases may only be run against the admin database.');
  const nameOnly = flag(cmd, 'nameOnly');
  const filter = optionalDocument(cmd, 'filter');
  const matcher = compileFilter(filter ? (toView(filter) as Document) : undefined);
  const databases: Document[] = [];
  let total = 0;
  for (const [name, colls] of [...ctx.state.catalog.dbs.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    let size = 0;
    for (const c of colls.values()) size += dataSize(c);
    const size4k = Math.max(4096, Math.ceil(size / 4096) * 4096);
    const entry: Document = nameOnly ? { name } : { name, sizeOnDisk: size4k, empty: false };
    if (!matcher.test(entry)) continue;
    total += size4k;
    databases.push(entry);
  }
  if (nameOnly) return { databases, ok: 1 };
  return { databases, totalSize: total, totalSizeMb: Math.floor(total / (1024 * 1024)), ok: 1 };
}

export function dbStatsCommand(cmd: Document, ctx: CommandContext): Document {
  const scale = numericValue(cmd['scale']) ?? 1;
  const colls = [...(ctx.state.catalog.dbs.get(ctx.db)?.values() ?? [])];
  let objects = 0;
  let size = 0;
  let indexes = 0;
  for (const c of colls) {
    objects += c.size;
    size += dataSize(c);
    indexes += c.indexes.size;
  }
  return {
    db: ctx.db,
    collections: colls.length,
    views: 0,
    objects,
    avgObjSize: objects ? size / objects : 0,
    dataSize: size / scale,
    storageSize: size / scale,
    indexes,
    indexSize: 0,
    totalSize: size / scale,
    scaleFactor: scale,
    ok: 1,
  };
}

export function collStatsCommand(cmd: Document, ctx: CommandContext): Document {
  const name = collectionArg(cmd, 'collStats');
  const coll = ctx.state.catalog.getCollection(ctx.db, name);
  if (!coll) throw engineError('NamespaceNotFound', `ns not found ${ctx.db}.${name}`);
  const size = dataSize(coll);
  const indexSizes: Document = {};
  for (const n of coll.indexes.keys()) indexSizes[n] = 0;
  return {
    ns: coll.ns,
    size,
    count: coll.size,
    avgObjSize: coll.size ? size / coll.size : 0,
    storageSize: size,
    nindexes: coll.indexes.size,
    totalIndexSize: 0,
    indexSizes,
    ok: 1,
  };
}
