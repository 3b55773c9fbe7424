import fc from 'fast-check';
import { MongoServerError, type Db, type Document, type UpdateFilter } from 'mongodb';
import { clone, ModelCollection, ModelError, project, sortDocs, type Doc, type Filter, type IndexSpec, type Update, type Value } from './engine-model.ts';

/**
 * Random operations of the kinds volreg's metadata layer sends (see src/metadata/), run both
 * through the driver against the engine and against the model of engine-model.ts, with a result
 * of each that the two must agree on. Values come from small pools, so keys collide, arrays
 * match, and filters hit, miss and overlap.
 */

/** The collections, shaped like volreg's tags, snapshots, repositories and manifests. */
export const COLLECTIONS: Record<string, IndexSpec[]> = {
  tags: [
    { keys: ['name', 'schema_version', 'repo_id'], unique: true },
    { keys: ['repo_id', 'name'], unique: false },
    { keys: ['manifest_digest'], unique: false },
  ],
  snaps: [
    { keys: ['repo_id', 'tag'], unique: true },
    { keys: ['repo_id', 'created'], unique: false },
  ],
  repos: [{ keys: ['repo_id'], unique: true }],
  manifests: [
    { keys: ['digest'], unique: true },
    { keys: ['blob_digests'], unique: false },
  ],
};
export type CollName = keyof typeof COLLECTIONS & string;
const NAMES = Object.keys(COLLECTIONS) as CollName[];

/** Creates the collections' indexes (snaps' second one descending on `created`, as volreg's). */
export async function createIndexes(db: Db): Promise<void> {
  for (const [name, indexes] of Object.entries(COLLECTIONS)) {
    for (const index of indexes) {
      const keys = Object.fromEntries(index.keys.map((k) => [k, name === 'snaps' && k === 'created' ? -1 : 1]));
      await db.collection(name).createIndex(keys, { unique: index.unique });
    }
  }
}

// ---------------------------------------------------------------- values

const repo = fc.constantFrom('a', 'b', 'c');
const digest = fc.constantFrom('d0', 'd1', 'd2', 'd3');
const small = fc.integer({ min: -2, max: 4 });
const id = fc.integer({ min: 0, max: 11 });
const mixed: fc.Arbitrary<Value> = fc.oneof(small, fc.constantFrom('x', 'y', 'z', null, 1.5, 'Z'));

const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(arb, { nil: undefined, freq: 3 });
function docOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Doc> {
  return fc.record(fields, { requiredKeys: [] }).map((d) => JSON.parse(JSON.stringify(d)) as Doc);
}

const tagFields = { repo_id: repo, name: fc.constantFrom('x', 'y'), schema_version: fc.constantFrom(1, 2), manifest_digest: digest };
const snapFields = { repo_id: repo, tag: fc.constantFrom('t1', 't2', 't3'), created: mixed, layer_size: small };
const scratchTag = fc.record({ tag: fc.constantFrom('t1', 't2', 't3'), image_id: digest });
const repoFields = {
  repo_id: repo,
  content_unit_counts: fc.dictionary(fc.constantFrom('blob', 'manifest'), small, { maxKeys: 2 }),
  scratchpad: fc.record({ tags: fc.array(scratchTag, { maxLength: 3 }) }),
  notes: fc.constantFrom({ volume: true }, {}),
};
const manifestFields = { digest, blob_digests: fc.uniqueArray(digest, { minLength: 1, maxLength: 3 }), config_digest: digest, size: small };

const FIELDS: Record<CollName, Record<string, fc.Arbitrary<unknown>>> = { tags: tagFields, snaps: snapFields, repos: repoFields, manifests: manifestFields };
/** Each collection's unique key (the one volreg's single-document writes name). */
const KEYS: Record<CollName, string[]> = { tags: ['name', 'schema_version', 'repo_id'], snaps: ['repo_id', 'tag'], repos: ['_id'], manifests: ['digest'] };

function newDoc(coll: CollName): fc.Arbitrary<Doc> {
  const idArb = coll === 'repos' ? (fc.constantFrom('a', 'b', 'c', 'e') as fc.Arbitrary<Value>) : (id as fc.Arbitrary<Value>);
  return fc.tuple(idArb, docOf(FIELDS[coll])).map(([_id, rest]) => ({ _id, ...rest }));
}

// ---------------------------------------------------------------- filters

function condition(coll: CollName): fc.Arbitrary<Filter> {
  const f = FIELDS[coll];
  const scalar = Object.entries(f).filter(([k]) => !['content_unit_counts', 'scratchpad', 'notes', 'blob_digests'].includes(k));
  const byField = scalar.map(([field, arb]) =>
    fc.oneof(
      arb.map((v) => ({ [field]: v })),
      fc.array(arb, { maxLength: 3 }).map((vs) => ({ [field]: { $in: vs } })),
      fc.array(arb, { maxLength: 2 }).map((vs) => ({ [field]: { $nin: vs } })),
      arb.map((v) => ({ [field]: { $ne: v } })),
      fc.boolean().map((b) => ({ [field]: { $exists: b } })),
      fc.tuple(fc.constantFrom('$gt', '$gte', '$lt', '$lte'), arb).map(([op, v]) => ({ [field]: { [op]: v } })),
    ),
  );
  const extra: Array<fc.Arbitrary<Filter>> = [];
  if (coll === 'manifests') {
    extra.push(digest.map((d) => ({ blob_digests: d })), fc.array(digest, { maxLength: 2 }).map((ds) => ({ blob_digests: { $in: ds } })));
    extra.push(fc.tuple(digest, digest).map(([a, b]) => ({ $or: [{ blob_digests: a }, { config_digest: b }] })));
  }
  if (coll === 'repos') {
    extra.push(
      fc.constantFrom('t1', 't2').map((t) => ({ 'scratchpad.tags.tag': { $ne: t } })),
      fc.constantFrom('t1', 't2').map((t) => ({ 'scratchpad.tags.tag': t })),
      fc.tuple(fc.constantFrom(0, 1, 2), fc.boolean()).map(([i, b]) => ({ [`scratchpad.tags.${i}`]: { $exists: b } })),
      fc.boolean().map((b) => ({ 'notes.volume': b ? true : { $exists: false } })),
      fc.integer({ min: 0, max: 3 }).map((n) => ({ 'content_unit_counts.blob': { $gte: n } })),
    );
  }
  return fc.oneof(...byField, ...extra);
}

/** A filter of up to two conditions on different fields, sometimes under $or or $and. */
function filterOf(coll: CollName): fc.Arbitrary<Filter> {
  return fc.oneof(
    fc.constant({}),
    condition(coll),
    fc.tuple(condition(coll), condition(coll)).map(([a, b]) => (Object.keys(a).some((k) => k in b) ? a : { ...a, ...b })),
    fc.array(condition(coll), { minLength: 1, maxLength: 3 }).map((cs) => ({ $or: cs })),
    fc.array(condition(coll), { minLength: 1, maxLength: 2 }).map((cs) => ({ $and: cs })),
  );
}

/** A filter naming one document by its unique key, with maybe one more condition. */
function keyFilter(coll: CollName): fc.Arbitrary<Filter> {
  const keyArb = coll === 'repos' ? fc.record({ _id: fc.constantFrom('a', 'b', 'c', 'e') }) : fc.record(Object.fromEntries(KEYS[coll].map((k) => [k, FIELDS[coll][k] as fc.Arbitrary<unknown>])));
  return fc.tuple(keyArb, maybe(condition(coll))).map(([key, extra]) => {
    if (!extra || Object.keys(extra).some((k) => k in key || k === '$or' || k === '$and')) return { ...key };
    return { ...key, ...extra };
  });
}

// ---------------------------------------------------------------- updates

function updateOf(coll: CollName, { keysToo }: { keysToo: boolean }): fc.Arbitrary<Update> {
  const f = FIELDS[coll];
  const settable = Object.entries(f).filter(([k]) => keysToo || !KEYS[coll].includes(k));
  const set = fc.oneof(...settable.map(([k, arb]) => arb.map((v) => ({ [k]: JSON.parse(JSON.stringify(v)) as unknown }))));
  const ops: Array<fc.Arbitrary<Update>> = [
    fc.tuple(set, maybe(set)).map(([a, b]) => ({ $set: { ...a, ...b } })),
    fc.tuple(set, newIdFor(coll)).map(([a, _id]) => ({ $set: { updated: 1 }, $setOnInsert: { ...a, _id } })),
  ];
  if (coll === 'snaps') ops.push(fc.tuple(small, mixed).map(([n, c]) => ({ $inc: { layer_size: n }, $max: { created: c } })));
  if (coll === 'manifests') ops.push(small.map((n) => ({ $inc: { size: n } })));
  if (coll === 'repos') {
    ops.push(
      fc.tuple(fc.constantFrom('blob', 'manifest'), small).map(([t, n]) => ({ $inc: { [`content_unit_counts.${t}`]: n } })),
      scratchTag.map((st) => ({ $push: { 'scratchpad.tags': st }, $set: { _last_updated: 7 } })),
      fc.array(fc.constantFrom('t1', 't2', 't3'), { maxLength: 2 }).map((ts) => ({ $pull: { 'scratchpad.tags': { tag: { $in: ts } } } })),
      fc.constantFrom('x', 1).map((v) => ({ $set: { scratchpad: v } })),
    );
  }
  return fc.oneof(...ops);
}

function newIdFor(coll: CollName): fc.Arbitrary<Value> {
  return coll === 'repos' ? fc.constantFrom('a', 'b', 'c', 'e') : id;
}

// ---------------------------------------------------------------- operations

export type Op =
  | { kind: 'insertOne'; coll: CollName; doc: Doc }
  | { kind: 'updateOne'; coll: CollName; filter: Filter; update: Update; upsert: boolean; unjournaled: boolean }
  | { kind: 'updateMany'; coll: CollName; filter: Filter; update: Update }
  | { kind: 'findOneAndUpdate'; coll: CollName; filter: Filter; update: Update; upsert: boolean; after: boolean; projection?: Record<string, 0 | 1> }
  | { kind: 'deleteOne'; coll: CollName; filter: Filter }
  | { kind: 'deleteMany'; coll: CollName; filter: Filter }
  | { kind: 'insertMany'; coll: CollName; docs: Doc[] }
  | { kind: 'find'; coll: CollName; filter: Filter; sort?: Array<[string, 1 | -1]>; skip?: number; limit?: number; batchSize?: number; projection?: Record<string, 0 | 1> }
  | { kind: 'count'; coll: CollName; filter: Filter }
  | { kind: 'distinct'; coll: CollName; field: string; filter: Filter };

const SORTABLE: Record<CollName, string[]> = { tags: ['name', 'repo_id'], snaps: ['created', 'tag', 'repo_id'], repos: ['repo_id', '_id'], manifests: ['size', 'digest'] };
const DISTINCT: Record<CollName, string[]> = { tags: ['name', 'repo_id'], snaps: ['repo_id', 'created'], repos: ['_id', 'scratchpad.tags.tag'], manifests: ['blob_digests', 'config_digest'] };

/** Dotted inclusions volreg sends (`scratchpad.tags`) and their kin. */
const DOTTED: Record<CollName, string[]> = { tags: [], snaps: [], repos: ['scratchpad.tags', 'scratchpad.tags.tag', 'content_unit_counts.blob'], manifests: [] };

function projectionOf(coll: CollName): fc.Arbitrary<Record<string, 0 | 1> | undefined> {
  const fields = Object.keys(FIELDS[coll]);
  const dotted = DOTTED[coll];
  return maybe(
    fc.oneof(
      ...(dotted.length ? [fc.tuple(fc.constantFrom(...dotted), fc.boolean()).map(([f, noId]) => ({ ...(noId ? { _id: 0 as const } : {}), [f]: 1 as const }))] : []),
      fc.subarray(fields, { minLength: 1, maxLength: 2 }).chain((fs) => fc.boolean().map((noId) => ({ ...(noId ? { _id: 0 as const } : {}), ...Object.fromEntries(fs.map((f) => [f, 1 as const])) }))),
      fc.subarray(fields, { minLength: 1, maxLength: 2 }).map((fs) => Object.fromEntries(fs.map((f) => [f, 0 as const]))),
    ),
  );
}

/** An upsert names the `_id` it may insert (as volreg's snapshot upsert does), so the model knows it. */
function withUpsertId(r: { filter: Filter; update: Update; upsert: boolean }, _id: Value): Update {
  if (!r.upsert || '_id' in r.filter || (r.update.$setOnInsert && '_id' in r.update.$setOnInsert)) return r.update;
  return { ...r.update, $setOnInsert: { ...r.update.$setOnInsert, _id } };
}

export function writeOp(coll: CollName): fc.Arbitrary<Op> {
  return fc.oneof(
    { weight: 3, arbitrary: newDoc(coll).map((doc): Op => ({ kind: 'insertOne', coll, doc })) },
    {
      weight: 3,
      arbitrary: fc
        .record({ filter: keyFilter(coll), update: updateOf(coll, { keysToo: true }), upsert: fc.boolean(), unjournaled: fc.boolean(), id: newIdFor(coll) })
        .map(({ id: _id, ...r }): Op => ({ kind: 'updateOne', coll, ...r, update: withUpsertId(r, _id) })),
    },
    { weight: 1, arbitrary: fc.record({ filter: filterOf(coll), update: updateOf(coll, { keysToo: false }) }).map((r): Op => ({ kind: 'updateMany', coll, ...r })) },
    {
      weight: 2,
      arbitrary: fc
        .record({ filter: keyFilter(coll), update: updateOf(coll, { keysToo: false }), upsert: fc.boolean(), after: fc.boolean(), projection: projectionOf(coll), id: newIdFor(coll) })
        .map(({ id: _id, projection, ...r }): Op => ({ kind: 'findOneAndUpdate', coll, ...r, update: withUpsertId(r, _id), ...(projection ? { projection } : {}) })),
    },
    { weight: 1, arbitrary: keyFilter(coll).map((filter): Op => ({ kind: 'deleteOne', coll, filter })) },
    { weight: 1, arbitrary: filterOf(coll).map((filter): Op => ({ kind: 'deleteMany', coll, filter })) },
  );
}

export function readOp(coll: CollName): fc.Arbitrary<Op> {
  const sort = fc.subarray(SORTABLE[coll], { minLength: 1, maxLength: 2 }).chain((fs) => fc.tuple(...fs.map((f) => fc.constantFrom<[string, 1 | -1]>([f, 1], [f, -1]))));
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .record({ filter: filterOf(coll), sort: maybe(sort), skip: maybe(fc.integer({ min: 0, max: 3 })), limit: maybe(fc.integer({ min: 1, max: 3 })), batchSize: maybe(fc.integer({ min: 1, max: 3 })), projection: projectionOf(coll) })
        .map(({ sort, skip, limit, batchSize, projection, filter }): Op => ({ kind: 'find', coll, filter, ...(sort ? { sort } : {}), ...(skip !== undefined ? { skip } : {}), ...(limit !== undefined ? { limit } : {}), ...(batchSize !== undefined ? { batchSize } : {}), ...(projection ? { projection } : {}) })),
    },
    { weight: 1, arbitrary: filterOf(coll).map((filter): Op => ({ kind: 'count', coll, filter })) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...DISTINCT[coll]), filterOf(coll)).map(([field, filter]): Op => ({ kind: 'distinct', coll, field, filter })) },
  );
}

/** A write of many documents, for a kill -9 to land in the middle of. */
export function multiWriteOp(coll: CollName): fc.Arbitrary<Op> {
  return fc.oneof(
    fc.uniqueArray(newDoc(coll), { minLength: 2, maxLength: 8, selector: (d) => d['_id'] }).map((docs): Op => ({ kind: 'insertMany', coll, docs })),
    fc.record({ filter: filterOf(coll), update: updateOf(coll, { keysToo: false }) }).map((r): Op => ({ kind: 'updateMany', coll, ...r })),
  );
}

export const anyColl = fc.constantFrom(...NAMES);
export const anyWrite = anyColl.chain(writeOp);
export const anyRead = anyColl.chain(readOp);

// ---------------------------------------------------------------- running

export type Outcome = { ok: unknown } | { error: number };

export class Model {
  colls: Record<string, ModelCollection>;
  constructor(colls?: Record<string, ModelCollection>) {
    this.colls = colls ?? Object.fromEntries(Object.entries(COLLECTIONS).map(([n, ix]) => [n, new ModelCollection(ix)]));
  }
  copy(): Model {
    return new Model(Object.fromEntries(Object.entries(this.colls).map(([n, c]) => [n, c.copy()])));
  }
  contents(): Record<string, Doc[]> {
    return Object.fromEntries(Object.entries(this.colls).map(([n, c]) => [n, c.docs]));
  }
}

/** A sort that ends on `_id`, so ties cannot make two correct answers differ. */
function fullSort(sort: Array<[string, 1 | -1]> | undefined): Array<[string, 1 | -1]> | undefined {
  if (!sort) return undefined;
  return sort.some(([f]) => f === '_id') ? sort : [...sort, ['_id', 1]];
}

export function runOnModel(model: Model, op: Op): Outcome {
  const c = model.colls[op.coll] as ModelCollection;
  try {
    switch (op.kind) {
      case 'insertOne':
        c.insert(op.doc);
        return { ok: 1 };
      case 'updateOne': {
        const r = c.updateOne(op.filter, op.update, op.upsert, undefined);
        return { ok: { matched: r.matched, modified: r.modified, upserted: r.upserted ? r.upserted['_id'] : null } };
      }
      case 'updateMany': {
        const r = c.updateMany(op.filter, op.update);
        return { ok: { matched: r.matched, modified: r.modified, upserted: null } };
      }
      case 'findOneAndUpdate': {
        const r = c.updateOne(op.filter, op.update, op.upsert, undefined);
        const doc = op.after ? r.after : r.before;
        return { ok: doc ? project(doc, op.projection) : null };
      }
      case 'deleteOne':
        return { ok: c.deleteOne(op.filter) ? 1 : 0 };
      case 'deleteMany':
        return { ok: c.deleteMany(op.filter) };
      case 'insertMany':
        // ordered: stops at the first error, what came before it stays
        for (const d of op.docs) c.insert(d);
        return { ok: op.docs.length };
      case 'find': {
        let docs = c.find(op.filter);
        const sort = fullSort(op.sort);
        if (sort) docs = sortDocs(docs, sort);
        docs = docs.slice(op.skip ?? 0);
        if (op.limit !== undefined) docs = docs.slice(0, op.limit);
        return { ok: docs.map((d) => project(d, op.projection)) };
      }
      case 'count':
        return { ok: c.find(op.filter).length };
      case 'distinct':
        return { ok: c.distinct(op.field, op.filter) };
    }
  } catch (err) {
    if (err instanceof ModelError) return { error: err.code };
    throw err;
  }
}

/** Runs `op` through the driver; a server error becomes its code. */
export async function runOnEngine(db: Db, op: Op): Promise<Outcome> {
  const coll = db.collection<Document>(op.coll);
  try {
    switch (op.kind) {
      case 'insertOne':
        await coll.insertOne(clone(op.doc));
        return { ok: 1 };
      case 'updateOne':
      case 'updateMany': {
        const r = op.kind === 'updateOne'
          ? await coll.updateOne(op.filter, op.update as UpdateFilter<Document>, { upsert: op.upsert, ...(op.unjournaled ? { writeConcern: { w: 1, j: false } } : {}) })
          : await coll.updateMany(op.filter, op.update as UpdateFilter<Document>);
        return { ok: { matched: r.matchedCount, modified: r.modifiedCount, upserted: r.upsertedId ?? null } };
      }
      case 'findOneAndUpdate': {
        const doc = await coll.findOneAndUpdate(op.filter, op.update as UpdateFilter<Document>, { upsert: op.upsert, returnDocument: op.after ? 'after' : 'before', ...(op.projection ? { projection: op.projection } : {}) });
        return { ok: doc };
      }
      case 'deleteOne':
        return { ok: (await coll.deleteOne(op.filter)).deletedCount };
      case 'deleteMany':
        return { ok: (await coll.deleteMany(op.filter)).deletedCount };
      case 'insertMany':
        return { ok: (await coll.insertMany(clone(op.docs))).insertedCount };
      case 'find': {
        let cursor = coll.find(op.filter, op.projection ? { projection: op.projection } : {});
        const sort = fullSort(op.sort);
        if (sort) cursor = cursor.sort(sort);
        if (op.skip !== undefined) cursor = cursor.skip(op.skip);
        if (op.limit !== undefined) cursor = cursor.limit(op.limit);
        // small batches take the getMore path, as volreg's listings over many documents do
        if (op.batchSize !== undefined) cursor = cursor.batchSize(op.batchSize);
        return { ok: await cursor.toArray() };
      }
      case 'count':
        return { ok: await coll.countDocuments(op.filter) };
      case 'distinct': {
        const values = (await coll.distinct(op.field, op.filter)) as Value[];
        return { ok: [...values].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) };
      }
    }
  } catch (err) {
    if (err instanceof MongoServerError && typeof err.code === 'number') return { error: err.code };
    throw err;
  }
}

/** The model's distinct sorts in BSON order; compare both in one canonical order. */
export function canonical(op: Op, outcome: Outcome): string {
  if (op.kind === 'distinct' && 'ok' in outcome) {
    return JSON.stringify({ ok: [...(outcome.ok as Value[])].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) });
  }
  return JSON.stringify(outcome);
}

/** Everything in the engine's collections, in natural order. */
export async function engineContents(db: Db): Promise<Record<string, Document[]>> {
  const out: Record<string, Document[]> = {};
  for (const name of NAMES) out[name] = await db.collection(name).find({}).toArray();
  return out;
}

export async function emptyCollections(db: Db): Promise<void> {
  for (const name of NAMES) await db.collection(name).deleteMany({});
}
