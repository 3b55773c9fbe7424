import test from 'ava';
import { Int32, Long, ObjectId, type Document, type UpdateFilter } from 'mongodb';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** insert / update / delete reply and error shapes, compared with what mongod 7 answers. */

let m: TestMongo;
test.before(async () => {
  m = await openTestMongo('write_commands');
});
test.after.always(async () => {
  await m?.close();
});

const run = (cmd: Document): Promise<Document> => m.db.command(cmd);
/** The driver's update typings reject some valid operator shapes on untyped collections. */
const upd = (u: Document): UpdateFilter<Document> => u as UpdateFilter<Document>;

test('insert reports n and generates an ObjectId _id placed first', async (t) => {
  const reply = await run({ insert: 'ins', documents: [{ a: 1 }, { b: 2 }] });
  t.is(reply['n'], 2);
  t.is(reply['ok'], 1);
  t.is(reply['writeErrors'], undefined);
  const docs = await m.db.collection('ins').find({}).toArray();
  t.is(docs.length, 2);
  for (const d of docs) {
    t.true(d._id instanceof ObjectId);
    t.is(Object.keys(d)[0], '_id');
  }
});

test('ordered insert stops at the first duplicate; unordered continues', async (t) => {
  await m.db.collection('ord').createIndex({ k: 1 }, { unique: true });
  const ordered = await run({ insert: 'ord', documents: [{ k: 1 }, { k: 1 }, { k: 2 }], ordered: true });
  t.is(ordered['ok'], 1);
  t.is(ordered['n'], 1);
  t.is(ordered['writeErrors'].length, 1);
  const we = ordered['writeErrors'][0];
  t.is(we.index, 1);
  t.is(we.code, 11000);
  t.is(we.errmsg, `E11000 duplicate key error collection: ${m.dbName}.ord index: k_1 dup key: { k: 1 }`);
  t.deepEqual(we.keyPattern, { k: 1 });
  t.deepEqual(we.keyValue, { k: 1 });
  t.is(await m.db.collection('ord').countDocuments({ k: 2 }), 0);

  const unordered = await run({ insert: 'ord', documents: [{ k: 1 }, { k: 3 }, { k: 2 }, { k: 3 }], ordered: false });
  t.is(unordered['n'], 2);
  t.deepEqual(unordered['writeErrors'].map((e: Document) => e['index']), [0, 3]);
});

test('E11000 on a string key and on _id read exactly like mongod', async (t) => {
  const c = m.db.collection('e11000');
  await c.createIndex({ name: 1 }, { unique: true });
  await c.insertOne({ _id: 'x' as never, name: 'dup' });
  const e1 = await t.throwsAsync(c.insertOne({ name: 'dup' }));
  t.is(e1?.message, `E11000 duplicate key error collection: ${m.dbName}.e11000 index: name_1 dup key: { name: "dup" }`);
  t.is((e1 as unknown as { code: number }).code, 11000);
  t.deepEqual((e1 as unknown as { keyValue: Document }).keyValue, { name: 'dup' });
  const e2 = await t.throwsAsync(c.insertOne({ _id: 'x' as never, name: 'other' }));
  t.is(e2?.message, `E11000 duplicate key error collection: ${m.dbName}.e11000 index: _id_ dup key: { _id: "x" }`);
  const oid = new ObjectId();
  await c.insertOne({ _id: oid, name: 'o' });
  const e3 = await t.throwsAsync(c.insertOne({ _id: oid, name: 'o2' }));
  t.is(e3?.message, `E11000 duplicate key error collection: ${m.dbName}.e11000 index: _id_ dup key: { _id: ObjectId('${oid.toHexString()}') }`);
});

test('compound unique index duplicate names every key field', async (t) => {
  const c = m.db.collection('compound_dup');
  await c.createIndex({ repo: 1, tag: 1 }, { unique: true });
  await c.insertOne({ repo: 'r', tag: 'latest' });
  await c.insertOne({ repo: 'r', tag: 'v1' });
  const err = await t.throwsAsync(c.insertOne({ repo: 'r', tag: 'latest' }));
  t.is(err?.message, `E11000 duplicate key error collection: ${m.dbName}.compound_dup index: repo_1_tag_1 dup key: { repo: "r", tag: "latest" }`);
  t.deepEqual((err as unknown as { keyPattern: Document }).keyPattern, { repo: 1, tag: 1 });
});

test('update reports n, nModified and upserted [{index, _id}]', async (t) => {
  await m.db.collection('upd').insertMany([{ k: 'a', v: 1 }, { k: 'b', v: 1 }]);
  const reply = await run({
    update: 'upd',
    updates: [
      { q: { k: 'a' }, u: { $set: { v: 2 } } },
      { q: { k: 'b' }, u: { $set: { v: 1 } } }, // matches, changes nothing
      { q: { k: 'c' }, u: { $set: { v: 3 } }, upsert: true },
      { q: { k: 'zzz' }, u: { $set: { v: 4 } } },
    ],
  });
  t.is(reply['ok'], 1);
  t.is(reply['n'], 3);
  t.is(reply['nModified'], 1);
  t.is(reply['upserted'].length, 1);
  t.is(reply['upserted'][0].index, 2);
  t.true(reply['upserted'][0]._id instanceof ObjectId);
  const up = await m.db.collection('upd').findOne({ k: 'c' });
  t.is(up?.['v'], 3);
});

test('multi update touches every match; replacement keeps _id', async (t) => {
  const c = m.db.collection('multi');
  await c.insertMany([{ g: 1, v: 0 }, { g: 1, v: 0 }, { g: 2, v: 0 }]);
  const res = await c.updateMany({ g: 1 }, { $inc: { v: 5 } });
  t.is(res.matchedCount, 2);
  t.is(res.modifiedCount, 2);
  const before = await c.findOne({ g: 2 });
  await c.replaceOne({ g: 2 }, { g: 2, replaced: true });
  const after = await c.findOne({ g: 2 });
  t.deepEqual(after?._id, before?._id);
  t.is(after?.['replaced'], true);
  t.is(after?.['v'], undefined);
});

test('upsert builds the new document from equality fields and $setOnInsert', async (t) => {
  const c = m.db.collection('upsert_build');
  await c.updateOne(
    { repo: 'r1', 'meta.kind': 'x', n: { $gt: 5 } },
    { $set: { seen: true }, $setOnInsert: { created: 'now' }, $inc: { hits: 1 } },
    { upsert: true },
  );
  const doc = await c.findOne({ repo: 'r1' });
  t.is(doc?.['seen'], true);
  t.is(doc?.['created'], 'now');
  t.is(doc?.['hits'], 1);
  t.deepEqual(doc?.['meta'], { kind: 'x' });
  t.is(doc?.['n'], undefined);
  await c.updateOne({ repo: 'r1' }, { $set: { seen: false }, $setOnInsert: { created: 'later' } }, { upsert: true });
  t.is((await c.findOne({ repo: 'r1' }))?.['created'], 'now');
  const withId = await c.updateOne({ _id: 'given' as never }, { $set: { a: 1 } }, { upsert: true });
  t.is(withId.upsertedId as unknown, 'given');
});

test('update operators: $unset $min $max $mul $rename $currentDate $addToSet $pop $pullAll', async (t) => {
  const c = m.db.collection('ops');
  await c.insertOne({ _id: 1 as never, a: 5, b: 5, c: 2, old: 'x', gone: 1, set: [1, 2], q: [1, 2, 3], pa: [1, 2, 1, 3] });
  await c.updateOne(
    { _id: 1 as never },
    upd({
      $unset: { gone: '' },
      $min: { a: 3 },
      $max: { b: 9 },
      $mul: { c: 4 },
      $rename: { old: 'renamed' },
      $currentDate: { touched: true, ts: { $type: 'timestamp' } },
      $addToSet: { set: { $each: [2, 3, 3] } },
      $pop: { q: -1 },
      $pullAll: { pa: [1] },
    }),
  );
  const d = await c.findOne({ _id: 1 as never });
  t.is(d?.['gone'], undefined);
  t.is(d?.['a'], 3);
  t.is(d?.['b'], 9);
  t.is(d?.['c'], 8);
  t.is(d?.['renamed'], 'x');
  t.is(d?.['old'], undefined);
  t.true(d?.['touched'] instanceof Date);
  t.is(d?.['ts']?._bsontype, 'Timestamp');
  t.deepEqual(d?.['set'], [1, 2, 3]);
  t.deepEqual(d?.['q'], [2, 3]);
  t.deepEqual(d?.['pa'], [2, 3]);
});

test('$push with $each, $position, $sort and $slice; $pull with a condition', async (t) => {
  const c = m.db.collection('push');
  await c.insertOne({ _id: 1 as never, xs: [5, 1], items: [{ n: 1, k: 'a' }, { n: 2, k: 'b' }, { n: 3, k: 'a' }] });
  await c.updateOne({ _id: 1 as never }, upd({ $push: { xs: { $each: [9, 3], $sort: 1, $slice: 3 } } }));
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['xs'], [1, 3, 5]);
  await c.updateOne({ _id: 1 as never }, upd({ $push: { xs: { $each: [0], $position: 0 } } }));
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['xs'], [0, 1, 3, 5]);
  await c.updateOne({ _id: 1 as never }, upd({ $push: { xs: { $each: [7, 8], $slice: -2 } } }));
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['xs'], [7, 8]);
  await c.updateOne({ _id: 1 as never }, upd({ $pull: { items: { k: 'a' } } }));
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['items'], [{ n: 2, k: 'b' }]);
  await c.updateOne({ _id: 1 as never }, upd({ $pull: { xs: { $gte: 8 } } }));
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['xs'], [7]);
});

test('positional $, $[] and $[id] with arrayFilters', async (t) => {
  const c = m.db.collection('positional');
  await c.insertOne({ _id: 1 as never, grades: [80, 95, 70], kids: [{ n: 'a', s: 1 }, { n: 'b', s: 5 }] });
  await c.updateOne({ _id: 1 as never, grades: 95 }, { $set: { 'grades.$': 96 } });
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['grades'], [80, 96, 70]);
  await c.updateOne({ _id: 1 as never, 'kids.n': 'b' }, { $inc: { 'kids.$.s': 10 } });
  t.is((await c.findOne({ _id: 1 as never }))?.['kids'][1].s, 15);
  await c.updateOne({ _id: 1 as never }, { $inc: { 'grades.$[]': 1 } });
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['grades'], [81, 97, 71]);
  await c.updateOne({ _id: 1 as never }, { $set: { 'grades.$[low]': 0 } }, { arrayFilters: [{ low: { $lt: 80 } }] });
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['grades'], [81, 97, 0]);
  await c.updateOne({ _id: 1 as never }, { $set: { 'kids.$[k].s': -1 } }, { arrayFilters: [{ 'k.n': 'a' }] });
  t.deepEqual((await c.findOne({ _id: 1 as never }))?.['kids'], [{ n: 'a', s: -1 }, { n: 'b', s: 15 }]);
  const noMatch = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $set: { 'grades.$': 1 } }));
  t.is((noMatch as unknown as { code: number }).code, 2);
  const unused = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $set: { x: 1 } }, { arrayFilters: [{ q: 1 }] }));
  t.is((unused as unknown as { code: number }).code, 9);
});

test('pipeline-style update computes from existing fields', async (t) => {
  const c = m.db.collection('pipeline_update');
  await c.insertOne({ _id: 1 as never, a: 2, b: 3 });
  await c.updateOne({ _id: 1 as never }, [{ $set: { sum: { $add: ['$a', '$b'] } } }, { $unset: 'b' }]);
  const d = await c.findOne({ _id: 1 as never });
  t.is(d?.['sum'], 5);
  t.is(d?.['b'], undefined);
  t.is(d?.['a'], 2);
});

test('TypeMismatch (14) for $inc on a string and for a non-numeric $inc argument', async (t) => {
  const c = m.db.collection('mismatch');
  await c.insertOne({ _id: 1 as never, s: 'text', arr: 'notarray' });
  const e1 = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $inc: { s: 1 } }));
  t.is((e1 as unknown as { code: number }).code, 14);
  t.regex(e1?.message ?? '', /Cannot apply \$inc to a value of non-numeric type/);
  const e2 = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $inc: { n: 'one' as never } }));
  t.is((e2 as unknown as { code: number }).code, 14);
  t.regex(e2?.message ?? '', /Cannot increment with non-numeric argument/);
  // $push onto a non-array: mongod answers BadValue (2)
  const e3 = await t.throwsAsync(c.updateOne({ _id: 1 as never }, upd({ $push: { arr: 1 } })));
  t.is((e3 as unknown as { code: number }).code, 2);
  t.regex(e3?.message ?? '', /must be an array but is of type string/);
  t.is((await c.findOne({ _id: 1 as never }))?.['s'], 'text');
});

test('ImmutableField (66) when an update would change _id', async (t) => {
  const c = m.db.collection('immutable');
  await c.insertOne({ _id: 1 as never, v: 1 });
  const e1 = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $set: { _id: 2 } }));
  t.is((e1 as unknown as { code: number }).code, 66);
  const e2 = await t.throwsAsync(c.replaceOne({ _id: 1 as never }, { _id: 3, v: 2 }));
  t.is((e2 as unknown as { code: number }).code, 66);
  // setting _id to its current value is allowed
  const ok = await c.updateOne({ _id: 1 as never }, { $set: { _id: 1, v: 9 } });
  t.is(ok.matchedCount, 1);
});

test('conflicting update paths give ConflictingUpdateOperators (40); unknown modifier FailedToParse (9)', async (t) => {
  const c = m.db.collection('conflict');
  await c.insertOne({ _id: 1 as never, a: { b: 1 } });
  const e1 = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $set: { a: 1 }, $inc: { 'a.b': 1 } }));
  t.is((e1 as unknown as { code: number }).code, 40);
  const e2 = await t.throwsAsync(run({ update: 'conflict', updates: [{ q: {}, u: { $frobnicate: { a: 1 } } }] }).then((r) => {
    if (r['writeErrors']) throw Object.assign(new Error(r['writeErrors'][0].errmsg), { code: r['writeErrors'][0].code });
  }));
  t.is((e2 as unknown as { code: number }).code, 9);
});

test('an upsert inserts its fields in path order, names compared by their UTF-8 bytes; a name that only starts like another is no conflict', async (t) => {
  const c = m.db.collection('applyorder');
  // in UTF-16 code units the emoji (a surrogate pair) sorts before U+E000; in UTF-8 bytes, after
  await c.updateOne({ _id: 1 as never }, { $set: { '\u{1F600}': 1, '\uE000': 1, é: 1, b: 1 }, $setOnInsert: { 'a.z': 1, ab: 1, 'a.y': 1 } }, { upsert: true });
  const doc = (await c.findOne({ _id: 1 as never }))!;
  t.deepEqual(Object.keys(doc), ['_id', 'a', 'ab', 'b', 'é', '\uE000', '\u{1F600}']);
  t.deepEqual(Object.keys(doc['a'] as Document), ['y', 'z']);
  const res = await c.updateOne({ _id: 1 as never }, { $set: { a: 2, 'a-b.c': 3, ab: 4 } });
  t.is(res.modifiedCount, 1);
});

test('PathNotViable (28) when creating a field inside a scalar', async (t) => {
  const c = m.db.collection('pathnotviable');
  await c.insertOne({ _id: 1 as never, a: 5 });
  const err = await t.throwsAsync(c.updateOne({ _id: 1 as never }, { $set: { 'a.b': 1 } }));
  t.is((err as unknown as { code: number }).code, 28);
});

test('delete honours limit 0 and 1', async (t) => {
  const c = m.db.collection('del');
  await c.insertMany([{ g: 1 }, { g: 1 }, { g: 1 }, { g: 2 }]);
  const one = await run({ delete: 'del', deletes: [{ q: { g: 1 }, limit: 1 }] });
  t.is(one['n'], 1);
  const all = await run({ delete: 'del', deletes: [{ q: { g: 1 }, limit: 0 }] });
  t.is(all['n'], 2);
  t.is(await c.countDocuments({}), 1);
});

test('write batches above maxWriteBatchSize are refused', async (t) => {
  const docs = Array.from({ length: 100_001 }, () => ({}));
  const err = await t.throwsAsync(run({ insert: 'toomany', documents: docs }));
  t.is((err as unknown as { code: number }).code, 16);
});

test('unacknowledged writes (w:0) get no reply and do not disturb the connection', async (t) => {
  const c = m.db.collection('w0');
  for (let i = 0; i < 20; i++) await c.insertOne({ i }, { writeConcern: { w: 0 } });
  // An acknowledged command on the same pool afterwards proves no stray replies were queued.
  await c.insertOne({ i: 'acked' });
  t.is(await c.countDocuments({}), 21);
});

test('numbers keep their BSON types; $inc overflows int32 into int64 like mongod', async (t) => {
  const c = m.db.collection('numtypes');
  await c.insertOne({ _id: 1 as never, i: new Int32(2147483647), l: Long.fromNumber(1), d: 1.5, whole: 3 });
  await c.updateOne({ _id: 1 as never }, { $inc: { i: 1, l: 1, d: 0.5 } });
  const d = await c.findOne({ _id: 1 as never }, { promoteValues: false });
  t.is(d?.['i']?._bsontype, 'Long');
  t.is(d?.['i']?.toString(), '2147483648');
  t.is(d?.['l']?._bsontype, 'Long');
  t.is(d?.['l']?.toString(), '2');
  t.is(d?.['d']?._bsontype, 'Double');
  t.is(d?.['d']?.valueOf(), 2);
  t.is(d?.['whole']?._bsontype, 'Int32');
  // numeric equality crosses types
  t.is(await c.countDocuments({ l: 2 }), 1);
  t.is(await c.countDocuments({ d: Long.fromNumber(2) }), 1);
});

test('a field named __proto__ is an ordinary field: kept by inserts, upserts, $set, replacements and findAndModify', async (t) => {
  const c = m.db.collection('proto');
  // as JSON.parse gives it: an own property named __proto__
  const sub = JSON.parse('{"__proto__":"x","b":"c"}') as Document;
  const fields = (d: Document | null): string[] => Object.keys((d?.['sub'] as Document | undefined) ?? {});
  await c.insertOne({ _id: 'insert' as never, sub });
  await c.updateOne({ _id: 'upsert' as never }, { $setOnInsert: { sub } }, { upsert: true });
  await c.updateOne({ _id: 'set' as never }, upd({ $set: { 'sub.b': 'c', 'sub.__proto__': 'x' } }), { upsert: true });
  await c.replaceOne({ _id: 'replace' as never }, { sub }, { upsert: true });
  await c.findOneAndUpdate({ _id: 'fam' as never }, { $setOnInsert: { sub } }, { upsert: true });
  for (const id of ['insert', 'upsert', 'replace', 'fam']) {
    const d = await c.findOne({ _id: id as never });
    t.deepEqual(fields(d), ['__proto__', 'b'], id);
    t.is((d!['sub'] as Document)['__proto__'], 'x', id);
  }
  t.deepEqual(fields(await c.findOne({ _id: 'set' as never })).sort(), ['__proto__', 'b']);
  t.is(await c.countDocuments({ 'sub.__proto__': 'x' }), 5);
  // a path through __proto__ of a document that has no such field reaches nothing (no prototype)
  await c.updateOne({ _id: 'insert' as never }, upd({ $set: { 'other.__proto__.polluted': 1 } }));
  t.is(({} as Record<string, unknown>)['polluted'], undefined);
  t.deepEqual((await c.findOne({ _id: 'insert' as never }))!['other'], JSON.parse('{"__proto__":{"polluted":1}}'));
  // an insert whose _id is not first (the engine moves it first), and projections through it
  await c.insertOne(JSON.parse('{"a":1,"__proto__":"x","_id":"late-id"}') as Document);
  t.deepEqual(Object.keys((await c.findOne({ _id: 'late-id' as never }))!), ['_id', 'a', '__proto__']);
  t.deepEqual(Object.entries((await c.findOne({ _id: 'upsert' as never }, { projection: { 'sub.__proto__': 1 } }))!['sub'] as Document), [['__proto__', 'x']]);
  t.deepEqual(Object.keys((await c.findOne({ _id: 'upsert' as never }, { projection: { 'sub.b': 0 } }))!['sub'] as Document), ['__proto__']);
});
