import { Binary, deserialize, Int32, ObjectId, UUID, type Document } from 'bson';
import type { ChangeMarker } from './change-marks.ts';
import { bsonTypeName, cloneValue, encodeKey, isPlainObject, setField, toView, toBson } from './bson-values.ts';
import { engineError } from './errors.ts';
import { Index, type KeyEntry, type RecordId } from './index-manager.ts';
import { validateSchema, type SchemaFailure } from './json-schema.ts';
import { compileFilter } from './matcher.ts';
import { checkNestingDepth, MAX_STORED_DEPTH } from './nesting-depth.ts';
import { MAX_BSON_OBJECT_SIZE } from './wire-protocol.ts';

/**
 * The in-memory catalog: databases -> collections -> records plus indexes.
 * A record keeps the exact BSON bytes (what is returned and journaled) and a view-shaped
 * deserialization (what queries and indexes look at). Records are immutable: an update
 * builds a new record, so cursors and snapshots can hold references without copying.
 * Every mutation is reported to a ChangeSink (the journal) in the order it is applied, and
 * moves the change marks (change-marks.ts) when a reader of them is attached.
 */

export interface StoredRecord {
  readonly rid: RecordId;
  readonly raw: Buffer;
  readonly view: Document;
  /** position in natural (insertion) order; kept when the record is replaced */
  readonly seq: number;
}

export interface ChangeSink {
  put(ns: string, raw: Buffer): void;
  remove(ns: string, id: unknown): void;
  ddl(op: DdlOp, args: Document): void;
}

export type DdlOp = 'create' | 'drop' | 'createIndex' | 'dropIndex' | 'collMod' | 'dropDatabase' | 'rename';

export interface WriteOptions {
  bypassValidation?: boolean;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

const TYPED = { promoteValues: false } as const;

export function typedDocument(rec: StoredRecord): Document {
  return deserialize(rec.raw, TYPED);
}

export function idIndexSpec(): Document {
  return { v: new Int32(2), key: { _id: new Int32(1) }, name: '_id_' };
}

export class Collection {
  readonly dbName: string;
  name: string;
  options: Document;
  readonly uuid: UUID;
  readonly records = new Map<RecordId, StoredRecord>();
  readonly indexes = new Map<string, Index>();
  /** next natural-order position */
  nextSeq = 0;
  private readonly catalog: Catalog;

  constructor(catalog: Catalog, dbName: string, name: string, options: Document, uuid: UUID) {
    this.catalog = catalog;
    this.dbName = dbName;
    this.name = name;
    this.options = options;
    this.uuid = uuid;
    this.indexes.set('_id_', new Index(idIndexSpec()));
  }

  get ns(): string {
    return `${this.dbName}.${this.name}`;
  }

  private get sink(): ChangeSink | undefined {
    return this.catalog.sink;
  }

  get size(): number {
    return this.records.size;
  }

  /** Adds or replaces a record without checks; used by journal replay and snapshot load. */
  putUnchecked(bytes: Buffer): StoredRecord {
    const raw = ownBytes(bytes);
    const view = viewOf(raw);
    const rid = encodeKey(view['_id']);
    const old = this.records.get(rid);
    if (old) for (const ix of this.indexes.values()) ix.remove(rid, old.view);
    const rec: StoredRecord = { rid, raw, view, seq: old ? old.seq : this.nextSeq++ };
    this.records.set(rid, rec);
    for (const ix of this.indexes.values()) ix.add(rid, view);
    return rec;
  }

  removeUnchecked(id: unknown): void {
    const rid = encodeKey(toView(id));
    const rec = this.records.get(rid);
    if (!rec) return;
    for (const ix of this.indexes.values()) ix.remove(rid, rec.view);
    this.records.delete(rid);
  }

  /** Inserts a typed document: assigns _id, enforces size, validation and unique indexes. */
  insert(doc: Document, opts: WriteOptions = {}): StoredRecord {
    const withId = ensureIdFirst(doc);
    const raw = serializeChecked(withId);
    const view = viewOf(raw);
    const rid = encodeKey(view['_id']);
    if (this.records.has(rid)) {
      const ix = this.indexes.get('_id_') as Index;
      throw ix.duplicateKeyError(this.ns, { key: rid, values: [view['_id']] });
    }
    this.validate(withId, view, undefined, opts);
    const entries = this.checkUnique(rid, view);
    const rec: StoredRecord = { rid, raw, view, seq: this.nextSeq++ };
    this.records.set(rid, rec);
    for (const [ix, es] of entries) ix.add(rid, view, es);
    this.catalog.marker?.changed(this.ns, this.name, undefined, view);
    this.sink?.put(this.ns, raw);
    return rec;
  }

  /** Replaces a record's document (same _id). Returns the old record when nothing changed. */
  replace(old: StoredRecord, doc: Document, opts: WriteOptions = {}): StoredRecord {
    const raw = serializeChecked(doc);
    if (raw.equals(old.raw)) return old;
    const view = viewOf(raw);
    const rid = old.rid;
    this.validate(doc, view, old, opts);
    const entries = this.checkUnique(rid, view);
    const rec: StoredRecord = { rid, raw, view, seq: old.seq };
    for (const [ix, es] of entries) ix.update(rid, old.view, view, es);
    this.records.set(rid, rec);
    this.catalog.marker?.changed(this.ns, this.name, old.view, view);
    this.sink?.put(this.ns, raw);
    return rec;
  }

  delete(rec: StoredRecord): void {
    if (this.records.get(rec.rid) !== rec) {
      const current = this.records.get(rec.rid);
      if (!current) return;
      rec = current;
    }
    for (const ix of this.indexes.values()) ix.remove(rec.rid, rec.view);
    this.records.delete(rec.rid);
    this.catalog.marker?.changed(this.ns, this.name, rec.view, undefined);
    this.sink?.remove(this.ns, deserialize(rec.raw, TYPED)['_id']);
  }

  private checkUnique(rid: RecordId, view: Document): Array<[Index, KeyEntry[]]> {
    const out: Array<[Index, KeyEntry[]]> = [];
    for (const ix of this.indexes.values()) {
      const entries = ix.entriesFor(view);
      const conflict = ix.findConflict(rid, entries);
      if (conflict) throw ix.duplicateKeyError(this.ns, conflict);
      out.push([ix, entries]);
    }
    return out;
  }

  private validate(doc: Document, view: Document, old: StoredRecord | undefined, opts: WriteOptions): void {
    const validator = this.options['validator'];
    if (!isPlainObject(validator) || Object.keys(validator).length === 0 || opts.bypassValidation) return;
    const level = this.options['validationLevel'] ?? 'strict';
    if (level === 'off') return;
    const failures = evaluateValidator(validator, doc, view);
    if (failures === undefined) return;
    if (old && level === 'moderate') {
      const oldDoc = deserialize(old.raw, TYPED);
      if (evaluateValidator(validator, oldDoc, old.view) !== undefined) return;
    }
    if (this.options['validationAction'] === 'warn') {
      opts.log?.('document failed validation', { ns: this.ns, id: String(view['_id']) });
      return;
    }
    throw engineError('DocumentValidationFailure', 'Document failed validation', {
      errInfo: { failingDocumentId: doc['_id'], details: failures },
    });
  }

  /** Builds an index over the current records, refusing if a unique index would be violated. */
  addIndex(spec: Document): Index {
    const ix = new Index(spec);
    for (const rec of this.records.values()) {
      const entries = ix.entriesFor(rec.view);
      const conflict = ix.findConflict(rec.rid, entries);
      if (conflict) {
        ix.clear();
        throw ix.duplicateKeyError(this.ns, conflict);
      }
      ix.add(rec.rid, rec.view, entries);
    }
    this.indexes.set(ix.name, ix);
    return ix;
  }
}

/** Returns undefined when the document passes, else mongod-style failure details. */
export function evaluateValidator(validator: Document, doc: Document, view: Document): Document | undefined {
  const rest: Document = {};
  let schemaFailures: SchemaFailure[] = [];
  for (const k of Object.keys(validator)) {
    if (k === '$jsonSchema' && isPlainObject(validator[k])) schemaFailures = validateSchema(validator[k], doc);
    else rest[k] = validator[k];
  }
  const restOk = Object.keys(rest).length === 0 || compileFilter(toView(rest) as Document).test(view);
  if (schemaFailures.length === 0 && restOk) return undefined;
  if (schemaFailures.length > 0) {
    return {
      operatorName: '$jsonSchema',
      schemaRulesNotSatisfied: schemaFailures.map((f) => {
        const { path, ...rest } = f;
        return path ? { operatorName: 'properties', propertiesNotSatisfied: [{ propertyName: path, details: [rest] }] } : rest;
      }),
    };
  }
  return { operatorName: '$and', clausesNotSatisfied: [{ index: 0, details: { operatorName: 'query' } }] };
}

function ensureIdFirst(doc: Document): Document {
  const keys = Object.keys(doc);
  if (keys[0] === '_id') {
    checkIdType(doc['_id']);
    return doc;
  }
  const out: Document = { _id: doc['_id'] === undefined ? new ObjectId() : doc['_id'] };
  checkIdType(out['_id']);
  for (const k of keys) if (k !== '_id') setField(out, k, doc[k]);
  return out;
}

function checkIdType(id: unknown): void {
  const t = bsonTypeName(id);
  if (t === 'array' || t === 'regex' || t === 'undefined') {
    throw engineError('BadValue', `The '_id' value cannot be of type ${t}`);
  }
}

function serializeChecked(doc: Document): Buffer {
  checkNestingDepth(doc, MAX_STORED_DEPTH, 'Document');
  const raw = toBson(doc);
  if (raw.length > MAX_BSON_OBJECT_SIZE) {
    throw engineError('BSONObjectTooLarge', `object to insert too large. size in bytes: ${raw.length}, max size: ${MAX_BSON_OBJECT_SIZE}`);
  }
  return ownBytes(raw);
}

/**
 * Records live as long as the data: their bytes get memory of their own. A small Buffer is
 * usually a slice of an 8 KiB pool slab shared with short-lived buffers, and one long-lived
 * slice keeps the whole slab alive (tens of times the record's size, per record).
 */
function ownBytes(b: Buffer): Buffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b;
  const own = Buffer.allocUnsafeSlow(b.length);
  b.copy(own);
  return own;
}

/** The view of a record; binary values in it get their own memory too (see ownBytes). */
function viewOf(raw: Buffer): Document {
  const view = deserialize(raw);
  detachBinaries(view);
  return view;
}

function detachBinaries(v: Document | unknown[]): void {
  const keys = Object.keys(v);
  for (const k of keys) {
    const x = (v as Record<string, unknown>)[k];
    if (x instanceof Binary) {
      const bytes = x.buffer;
      if (bytes.byteOffset !== 0 || bytes.byteLength !== bytes.buffer.byteLength) {
        (v as Record<string, unknown>)[k] = new Binary(ownBytes(Buffer.from(bytes.buffer, bytes.byteOffset, x.position)), x.sub_type);
      }
    } else if (Array.isArray(x) || isPlainObject(x)) detachBinaries(x as Document | unknown[]);
  }
}

const INVALID_DB_CHARS = /[/\\. "$\0]/;

export function checkDbName(db: string): void {
  if (db.length === 0 || db.length >= 64 || INVALID_DB_CHARS.test(db)) {
    throw engineError('InvalidNamespace', `Invalid database name: '${db}'`);
  }
}

export function checkCollectionName(db: string, name: string): void {
  if (name.length === 0 || name.includes('\0') || name.startsWith('.') || (name.includes('$') && !name.startsWith('$cmd'))) {
    throw engineError('InvalidNamespace', `Invalid collection name: ${db}.${name}`);
  }
}

export class Catalog {
  readonly dbs = new Map<string, Map<string, Collection>>();
  sink: ChangeSink | undefined;
  marker: ChangeMarker | undefined;

  private ddl(op: DdlOp, args: Document): void {
    this.marker?.changedAll();
    this.sink?.ddl(op, args);
  }

  getCollection(db: string, name: string): Collection | undefined {
    return this.dbs.get(db)?.get(name);
  }

  /** Implicit creation on first write, like mongod. */
  ensureCollection(db: string, name: string): Collection {
    return this.getCollection(db, name) ?? this.createCollection(db, name, {});
  }

  createCollection(db: string, name: string, options: Document, uuid = new UUID()): Collection {
    checkDbName(db);
    checkCollectionName(db, name);
    let colls = this.dbs.get(db);
    if (!colls) {
      colls = new Map();
      this.dbs.set(db, colls);
    }
    const coll = new Collection(this, db, name, cloneValue(options), uuid);
    colls.set(name, coll);
    this.ddl('create', { db, name, options, uuid });
    return coll;
  }

  dropCollection(db: string, name: string): Collection | undefined {
    const colls = this.dbs.get(db);
    const coll = colls?.get(name);
    if (!colls || !coll) return undefined;
    colls.delete(name);
    if (colls.size === 0) this.dbs.delete(db);
    this.ddl('drop', { db, name });
    return coll;
  }

  dropDatabase(db: string): boolean {
    const existed = this.dbs.delete(db);
    if (existed) this.ddl('dropDatabase', { db });
    return existed;
  }

  renameCollection(fromDb: string, from: string, toDb: string, to: string): void {
    const colls = this.dbs.get(fromDb);
    const coll = colls?.get(from);
    if (!colls || !coll) throw engineError('NamespaceNotFound', 'Source collection does not exist');
    checkDbName(toDb);
    checkCollectionName(toDb, to);
    colls.delete(from);
    if (colls.size === 0) this.dbs.delete(fromDb);
    const moved = new Collection(this, toDb, to, coll.options, coll.uuid);
    for (const [name, ix] of coll.indexes) moved.indexes.set(name, ix);
    for (const [rid, rec] of coll.records) moved.records.set(rid, rec);
    moved.nextSeq = coll.nextSeq;
    let target = this.dbs.get(toDb);
    if (!target) {
      target = new Map();
      this.dbs.set(toDb, target);
    }
    target.set(to, moved);
    this.ddl('rename', { fromDb, from, toDb, to });
  }

  createIndex(coll: Collection, spec: Document): Index {
    const ix = coll.addIndex(spec);
    this.ddl('createIndex', { db: coll.dbName, name: coll.name, spec });
    return ix;
  }

  dropIndex(coll: Collection, name: string): void {
    coll.indexes.delete(name);
    this.ddl('dropIndex', { db: coll.dbName, name: coll.name, index: name });
  }

  setOptions(coll: Collection, options: Document): void {
    coll.options = cloneValue(options);
    this.ddl('collMod', { db: coll.dbName, name: coll.name, options });
  }

  /** Rebuilds the index with the changed spec (collMod expireAfterSeconds etc.). */
  replaceIndexSpec(coll: Collection, spec: Document): void {
    const old = coll.indexes.get(String(spec['name']));
    if (!old) return;
    coll.indexes.delete(old.name);
    coll.addIndex(spec);
    this.ddl('dropIndex', { db: coll.dbName, name: coll.name, index: old.name });
    this.ddl('createIndex', { db: coll.dbName, name: coll.name, spec });
  }
}
