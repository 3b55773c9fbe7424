import test from 'ava';
import { Double, Int32, Long, type Document } from 'mongodb';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** find / getMore / killCursors / count / distinct / findAndModify / aggregate through the driver. */

let m: TestMongo;
test.before(async () => {
  m = await openTestMongo('query_commands');
  const items = m.db.collection('items');
  await items.insertMany(
    Array.from({ length: 250 }, (_, i) => ({ _id: i as never, n: i, g: i % 5, tags: i % 2 ? ['odd', `t${i % 3}`] : ['even'], nested: { v: i % 7 } })),
  );
});
test.after.always(async () => {
  await m?.close();
});

// promoteLongs:false keeps cursor ids as Long even when they would fit a JS number
const run = (cmd: Document): Promise<Document> => m.db.command(cmd, { promoteLongs: false });

test('find applies filter, sort, skip, limit and projection', async (t) => {
  const docs = await m.db
    .collection('items')
    .find({ g: 2, n: { $gte: 100 } }, { projection: { n: 1, _id: 0 } })
    .sort({ n: -1 })
    .skip(2)
    .limit(3)
    .toArray();
  t.deepEqual(docs, [{ n: 237 }, { n: 232 }, { n: 227 }]);
});

test('hint is accepted and does not change results', async (t) => {
  await m.db.collection('items').createIndex({ g: 1 });
  const hinted = await m.db.collection('items').find({ g: 3, n: { $lt: 20 } }).hint({ g: 1 }).toArray();
  t.deepEqual(hinted.map((d) => d['n']), [3, 8, 13, 18]);
});

test('exclusion projection and dotted paths', async (t) => {
  const d = await m.db.collection('items').findOne({ _id: 7 as never }, { projection: { tags: 0, 'nested.v': 0 } });
  t.deepEqual(d, { _id: 7, n: 7, g: 2, nested: {} });
  const inc = await m.db.collection('items').findOne({ _id: 7 as never }, { projection: { 'nested.v': 1 } });
  t.deepEqual(inc, { _id: 7, nested: { v: 0 } });
  const sliced = await m.db.collection('items').findOne({ _id: 7 as never }, { projection: { tags: { $slice: 1 }, n: 1 } });
  t.deepEqual(sliced, { _id: 7, n: 7, tags: ['odd'] });
});

test('first batch is 101 by default; getMore returns the rest with int64 cursor ids', async (t) => {
  const first = await run({ find: 'items', filter: {} });
  t.is(first['cursor'].firstBatch.length, 101);
  const id = first['cursor'].id;
  t.true(id instanceof Long);
  t.false((id as Long).isZero());
  t.is(first['cursor'].ns, `${m.dbName}.items`);
  const more = await run({ getMore: id, collection: 'items', batchSize: 100 });
  t.is(more['cursor'].nextBatch.length, 100);
  const last = await run({ getMore: id, collection: 'items' });
  t.is(last['cursor'].nextBatch.length, 49);
  t.true((last['cursor'].id as Long).isZero());
  const gone = await t.throwsAsync(run({ getMore: id, collection: 'items' }));
  t.is((gone as unknown as { code: number }).code, 43);
});

test('batchSize, singleBatch and limit shape the cursor', async (t) => {
  const small = await run({ find: 'items', filter: {}, batchSize: 10 });
  t.is(small['cursor'].firstBatch.length, 10);
  t.false((small['cursor'].id as Long).isZero());
  await run({ killCursors: 'items', cursors: [small['cursor'].id] });
  const single = await run({ find: 'items', filter: {}, batchSize: 10, singleBatch: true });
  t.is(single['cursor'].firstBatch.length, 10);
  t.true((single['cursor'].id as Long).isZero());
  const limited = await run({ find: 'items', filter: {}, limit: 5 });
  t.is(limited['cursor'].firstBatch.length, 5);
  t.true((limited['cursor'].id as Long).isZero());
  const all = await m.db.collection('items').find({}).batchSize(7).toArray();
  t.is(all.length, 250);
});

test('killCursors reports killed and not-found ids', async (t) => {
  const c = await run({ find: 'items', filter: {}, batchSize: 1 });
  const id = c['cursor'].id as Long;
  const reply = await run({ killCursors: 'items', cursors: [id, Long.fromNumber(12345)] });
  t.deepEqual(reply['cursorsKilled'].map(String), [id.toString()]);
  t.deepEqual(reply['cursorsNotFound'].map(String), ['12345']);
  const err = await t.throwsAsync(run({ getMore: id, collection: 'items' }));
  t.is((err as unknown as { code: number }).code, 43);
});

test('query operators: $in, $nin, $exists, $regex, $elemMatch, $or, $expr, array membership', async (t) => {
  const items = m.db.collection('items');
  t.is(await items.countDocuments({ n: { $in: [1, 2, 3, 999] } }), 3);
  t.is(await items.countDocuments({ tags: 'even' }), 125);
  t.is(await items.countDocuments({ tags: { $all: ['odd', 't0'] } }), 42);
  t.is(await items.countDocuments({ missing: { $exists: false } }), 250);
  t.is(await items.countDocuments({ tags: { $regex: /^t\d$/ } }), 125);
  t.is(await items.countDocuments({ $or: [{ n: 1 }, { n: 2 }] }), 2);
  t.is(await items.countDocuments({ $expr: { $eq: ['$g', 0] } }), 50);
  t.is(await items.countDocuments({ 'nested.v': { $gt: 5 } }), 35);
  t.is(await items.countDocuments({ g: { $nin: [0, 1, 2, 3] } }), 50);
  const bad = await t.throwsAsync(items.countDocuments({ n: { $frob: 1 } }));
  t.is((bad as unknown as { code: number }).code, 2);
});

test('count command and estimatedDocumentCount', async (t) => {
  const reply = await run({ count: 'items', query: { g: 1 } });
  t.is(reply['n'], 50);
  t.is((await run({ count: 'items', query: { g: 1 }, skip: 45 }))['n'], 5);
  t.is((await run({ count: 'items', query: {}, limit: 10 }))['n'], 10);
  t.is(await m.db.collection('items').estimatedDocumentCount(), 250);
  t.is((await run({ count: 'nonexistent_coll' }))['n'], 0);
});

test('distinct answers strings and exact BSON number types side by side', async (t) => {
  const mixed = m.db.collection('distinct_types');
  await mixed.insertMany([{ v: 'a' }, { v: new Int32(1) }, { v: Long.fromNumber(2) }, { v: new Double(2.5) }, { v: ['b', new Int32(3), 'a'] }, {}]);
  const res = await m.db.command({ distinct: 'distinct_types', key: 'v' }, { promoteValues: false });
  const values = res['values'] as unknown[];
  t.deepEqual(values.filter((v) => typeof v === 'string'), ['a', 'b']);
  t.true(values.some((v) => v instanceof Int32 && v.value === 1));
  t.true(values.some((v) => v instanceof Long && v.toNumber() === 2));
  t.true(values.some((v) => v instanceof Double && v.value === 2.5));
  t.true(values.some((v) => v instanceof Int32 && v.value === 3));
  t.is(values.length, 6);
});

test('distinct flattens arrays and respects the query', async (t) => {
  const groups = await m.db.collection('items').distinct('g');
  t.deepEqual([...groups].sort(), [0, 1, 2, 3, 4]);
  const tags = await m.db.collection('items').distinct('tags', { n: { $lt: 4 } });
  t.deepEqual([...tags].sort(), ['even', 'odd', 't0', 't1']);
  t.deepEqual(await m.db.collection('nonexistent_coll').distinct('x'), []);
});

test('findAndModify: new, upsert, remove, fields and sort', async (t) => {
  const c = m.db.collection('fam');
  await c.insertMany([{ k: 'a', v: 1, p: 3 }, { k: 'a', v: 2, p: 1 }]);
  const before = await c.findOneAndUpdate({ k: 'a' }, { $inc: { v: 10 } }, { sort: { p: 1 }, returnDocument: 'before', projection: { v: 1, _id: 0 } });
  t.deepEqual(before, { v: 2 });
  const after = await c.findOneAndUpdate({ k: 'a', p: 1 }, { $inc: { v: 1 } }, { returnDocument: 'after' });
  t.is(after?.['v'], 13);
  const raw = await run({ findAndModify: 'fam', query: { k: 'b' }, update: { $set: { v: 0 } }, upsert: true, new: true });
  t.is(raw['lastErrorObject'].n, 1);
  t.is(raw['lastErrorObject'].updatedExisting, false);
  t.truthy(raw['lastErrorObject'].upserted);
  t.is(raw['value'].v, 0);
  const removed = await c.findOneAndDelete({ k: 'b' });
  t.is(removed?.['v'], 0);
  const none = await run({ findAndModify: 'fam', query: { k: 'zzz' }, remove: true });
  t.is(none['value'], null);
  t.is(none['lastErrorObject'].n, 0);
  const both = await t.throwsAsync(run({ findAndModify: 'fam', query: {}, remove: true, update: { $set: { a: 1 } } }));
  t.is((both as unknown as { code: number }).code, 9);
  const replaced = await c.findOneAndReplace({ k: 'a', p: 3 }, { k: 'a', p: 3, replaced: true }, { returnDocument: 'after' });
  t.is(replaced?.['replaced'], true);
});

test('findAndModify surfaces a duplicate key as a command error', async (t) => {
  const c = m.db.collection('fam_dup');
  await c.createIndex({ u: 1 }, { unique: true });
  await c.insertMany([{ u: 1 }, { u: 2 }]);
  const err = await t.throwsAsync(c.findOneAndUpdate({ u: 2 }, { $set: { u: 1 } }));
  t.is((err as unknown as { code: number }).code, 11000);
  t.deepEqual((err as unknown as { keyValue: Document }).keyValue, { u: 1 });
});

test('aggregate: $match, $group, $sort, $project, $count, $facet, $lookup', async (t) => {
  const items = m.db.collection('items');
  const grouped = await items.aggregate([{ $match: { n: { $lt: 50 } } }, { $group: { _id: '$g', total: { $sum: '$n' }, c: { $sum: 1 } } }, { $sort: { _id: 1 } }]).toArray();
  t.is(grouped.length, 5);
  t.deepEqual(grouped[0], { _id: 0, total: 225, c: 10 });
  const counted = await items.aggregate([{ $match: { g: 3 } }, { $count: 'n' }]).toArray();
  t.deepEqual(counted, [{ n: 50 }]);
  const projected = await items.aggregate([{ $match: { _id: 3 } }, { $project: { _id: 0, double: { $multiply: ['$n', 2] } } }]).toArray();
  t.deepEqual(projected, [{ double: 6 }]);
  const faceted = await items.aggregate([{ $facet: { low: [{ $match: { n: { $lt: 3 } } }, { $count: 'c' }], high: [{ $match: { n: { $gte: 248 } } }, { $project: { _id: 1 } }] } }]).toArray();
  t.deepEqual(faceted, [{ low: [{ c: 3 }], high: [{ _id: 248 }, { _id: 249 }] }]);
  await m.db.collection('groups').insertMany([{ _id: 0 as never, name: 'zero' }, { _id: 1 as never, name: 'one' }]);
  const joined = await items.aggregate([{ $match: { _id: { $in: [5, 6] } } }, { $lookup: { from: 'groups', localField: 'g', foreignField: '_id', as: 'grp' } }, { $project: { grp: '$grp.name' } }, { $sort: { _id: 1 } }]).toArray();
  t.deepEqual(joined, [{ _id: 5, grp: ['zero'] }, { _id: 6, grp: ['one'] }]);
});

test('aggregate returns cursor batches and countDocuments works on top', async (t) => {
  const first = await run({ aggregate: 'items', pipeline: [{ $sort: { n: 1 } }], cursor: { batchSize: 20 } });
  t.is(first['cursor'].firstBatch.length, 20);
  t.false((first['cursor'].id as Long).isZero());
  const rest = await run({ getMore: first['cursor'].id, collection: 'items' });
  t.is(rest['cursor'].nextBatch.length, 230);
  t.is(await m.db.collection('items').countDocuments({ g: 4 }), 50);
  const noCursor = await t.throwsAsync(run({ aggregate: 'items', pipeline: [] }));
  t.is((noCursor as unknown as { code: number }).code, 9);
  const badStage = await t.throwsAsync(m.db.collection('items').aggregate([{ $frobnicate: {} }]).toArray());
  t.is((badStage as unknown as { code: number }).code, 40324);
});

test('unknown commands get CommandNotFound (59) with mongod wording', async (t) => {
  const err = await t.throwsAsync(run({ frobnicate: 1 }));
  t.is((err as unknown as { code: number }).code, 59);
  t.is(err?.message, "no such command: 'frobnicate'");
  t.is((err as unknown as { codeName: string }).codeName, 'CommandNotFound');
});

test('distinct gives the same answer with and without an index that covers it', async (t) => {
  const docs = [
    { repo: 'a', name: 't2', sv: 1 },
    { repo: 'a', name: 't1', sv: 2 },
    { repo: 'a', name: 't2', sv: 2 },
    { repo: 'b', name: 't9', sv: 2 },
    { repo: 'b', name: null, sv: 2 },
    { repo: 'b', sv: 2 },
  ];
  const plain = m.db.collection('distinct_plain');
  const indexed = m.db.collection('distinct_indexed');
  await indexed.createIndex({ repo: 1, name: 1 });
  await plain.insertMany(docs.map((d) => ({ ...d })));
  await indexed.insertMany(docs.map((d) => ({ ...d })));
  for (const repo of ['a', 'b', 'none']) {
    const want = [...(await plain.distinct('name', { repo }))].sort();
    t.deepEqual([...(await indexed.distinct('name', { repo }))].sort(), want, repo);
  }
  t.deepEqual([...(await indexed.distinct('name', { repo: 'a' }))].sort(), ['t1', 't2']);
  t.deepEqual([...(await indexed.distinct('name', { repo: 'b' }))].sort((x, y) => String(x).localeCompare(String(y))), [null, 't9']);
});

// mongod takes a command document of at most 16 MiB + 16 KiB (BSONObjMaxInternalSize); a longer
// one is refused with BSONObjectTooLarge (10334), and the connection keeps serving.
test('a command over 16 MiB + 16 KiB is refused with BSONObjectTooLarge (10334)', async (t) => {
  const items = m.db.collection('items');
  // 350,000 ids of 40 characters: about 17 MB of $in (the driver itself refuses past 17 MiB)
  const ids = Array.from({ length: 350_000 }, (_, i) => `${String(i).padStart(8, '0')}-0000-0000-0000-000000000000`);
  const err = await t.throwsAsync(items.find({ _id: { $in: ids as never[] } }).toArray());
  t.is((err as { code?: number }).code, 10334);
  t.regex(err?.message ?? '', /BSONObj size: \d+ \(0x[0-9A-F]+\) is invalid\. Size must be between 0 and 16793600\(16MB\) First element: find/);
  const del = await t.throwsAsync(items.deleteMany({ _id: { $in: ids as never[] } }));
  t.is((del as { code?: number }).code, 10334);
  t.is(await items.countDocuments({}), 250, 'nothing was deleted');
  // just under the limit still goes through
  t.deepEqual(await items.find({ _id: { $in: ids.slice(0, 330_000) as never[] } }).toArray(), []);
});

test('distinct over 16 MB answers mongod code 17217', async (t) => {
  const big = m.db.collection('distinct_big');
  const long = 'x'.repeat(1000);
  for (let batch = 0; batch < 18; batch++) {
    await big.insertMany(Array.from({ length: 1000 }, (_, i) => ({ v: `${batch}-${i}-${long}` })));
  }
  const err = await t.throwsAsync(big.distinct('v'));
  t.is((err as { code?: number }).code, 17217);
  t.regex(err?.message ?? '', /distinct too big, 16mb cap/);
  await big.drop();
});

test('strings sort and compare in UTF-8 byte order, as mongod: a code point above U+FFFF after U+FF5E', async (t) => {
  const names = ['\u{1F600}', '\uFF5E', 'z', '\u00E9', '\uD7FF'];
  const expected = ['z', '\u00E9', '\uD7FF', '\uFF5E', '\u{1F600}'];
  const plain = m.db.collection('utf8_order');
  const indexed = m.db.collection('utf8_order_indexed');
  await indexed.createIndex({ s: 1 });
  for (const c of [plain, indexed]) {
    await c.insertMany(names.map((s) => ({ s })));
    const asc = await c.find({}, { projection: { _id: 0 } }).sort({ s: 1 }).toArray();
    t.deepEqual(asc.map((d) => d['s']), expected);
    const desc = await c.find({}, { projection: { _id: 0 } }).sort({ s: -1 }).toArray();
    t.deepEqual(desc.map((d) => d['s']), [...expected].reverse());
    const above = await c.find({ s: { $gt: '\uFF5E' } }, { projection: { _id: 0 } }).toArray();
    t.deepEqual(above.map((d) => d['s']), ['\u{1F600}']);
    const below = await c.find({ s: { $lt: '\u{1F600}' } }, { projection: { _id: 0 } }).sort({ s: 1 }).toArray();
    t.deepEqual(below.map((d) => d['s']), expected.slice(0, 4));
  }
});
