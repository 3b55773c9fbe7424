import test from 'ava';
import type { Document } from 'mongodb';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** createIndexes / listIndexes / dropIndexes and unique, sparse, partial, multikey semantics. */

let m: TestMongo;
test.before(async () => {
  m = await openTestMongo('index_commands');
});
test.after.always(async () => {
  await m?.close();
});

const code = (e: unknown): number | undefined => (e as { code?: number } | undefined)?.code;

test('createIndexes reply shape, idempotence and listIndexes', async (t) => {
  const first = await m.db.command({ createIndexes: 'ix', indexes: [{ key: { a: 1 }, name: 'a_1', unique: true }, { key: { b: 1, c: -1 }, name: 'b_1_c_-1' }] });
  t.is(first['numIndexesBefore'], 1);
  t.is(first['numIndexesAfter'], 3);
  t.is(first['createdCollectionAutomatically'], true);
  t.is(first['ok'], 1);
  const again = await m.db.command({ createIndexes: 'ix', indexes: [{ key: { a: 1 }, name: 'a_1', unique: true }] });
  t.is(again['numIndexesBefore'], 3);
  t.is(again['numIndexesAfter'], 3);
  t.is(again['note'], 'all indexes already exist');
  const list = await m.db.collection('ix').listIndexes().toArray();
  t.deepEqual(list, [
    { v: 2, key: { _id: 1 }, name: '_id_' },
    { v: 2, key: { a: 1 }, name: 'a_1', unique: true },
    { v: 2, key: { b: 1, c: -1 }, name: 'b_1_c_-1' },
  ]);
  t.is(await m.db.collection('ix').createIndex({ d: 1 }, { sparse: true, expireAfterSeconds: 3600 }), 'd_1');
});

test('index option and key conflicts: 85 IndexOptionsConflict, 86 IndexKeySpecsConflict', async (t) => {
  const c = m.db.collection('ixconflict');
  await c.createIndex({ a: 1 }, { name: 'by_a' });
  const sameKeyOtherName = await t.throwsAsync(c.createIndex({ a: 1 }, { name: 'other' }));
  t.is(code(sameKeyOtherName), 85);
  const sameNameOtherKey = await t.throwsAsync(c.createIndex({ b: 1 }, { name: 'by_a' }));
  t.is(code(sameNameOtherKey), 86);
  const sameNameOtherOptions = await t.throwsAsync(c.createIndex({ a: 1 }, { name: 'by_a', unique: true }));
  t.is(code(sameNameOtherOptions), 85);
});

test('listIndexes on a missing collection is NamespaceNotFound (26)', async (t) => {
  const err = await t.throwsAsync(m.db.collection('no_such_coll').listIndexes().toArray());
  t.is(code(err), 26);
});

test('dropIndexes by name, by key pattern, "*"; _id_ and unknown names refused', async (t) => {
  const c = m.db.collection('ixdrop');
  await c.createIndexes([{ key: { a: 1 } }, { key: { b: 1 } }, { key: { c: 1 } }]);
  const byName = await m.db.command({ dropIndexes: 'ixdrop', index: 'a_1' });
  t.is(byName['nIndexesWas'], 4);
  await c.dropIndex({ b: 1 } as never);
  t.deepEqual((await c.listIndexes().toArray()).map((i) => i['name']), ['_id_', 'c_1']);
  t.is(code(await t.throwsAsync(c.dropIndex('_id_'))), 72);
  t.is(code(await t.throwsAsync(c.dropIndex('nope_1'))), 27);
  await c.createIndex({ x: 1 });
  const all = await m.db.command({ dropIndexes: 'ixdrop', index: '*' });
  t.is(all['nIndexesWas'], 3);
  t.deepEqual((await c.listIndexes().toArray()).map((i) => i['name']), ['_id_']);
});

test('unique index treats a missing field as null; sparse skips it', async (t) => {
  const u = m.db.collection('ixnull');
  await u.createIndex({ email: 1 }, { unique: true });
  await u.insertOne({ name: 'no email' });
  const err = await t.throwsAsync(u.insertOne({ name: 'also no email' }));
  t.is(code(err), 11000);
  t.regex(err?.message ?? '', /dup key: \{ email: null \}/);
  const s = m.db.collection('ixsparse');
  await s.createIndex({ email: 1 }, { unique: true, sparse: true });
  await s.insertMany([{ name: 'a' }, { name: 'b' }, { email: 'x' }]);
  t.is(code(await t.throwsAsync(s.insertOne({ email: 'x' }))), 11000);
  t.is(await s.countDocuments({ email: null }), 2);
});

test('partial unique index only constrains matching documents', async (t) => {
  const c = m.db.collection('ixpartial');
  await c.createIndex({ name: 1 }, { unique: true, partialFilterExpression: { active: true } });
  await c.insertMany([{ name: 'a', active: false }, { name: 'a', active: false }, { name: 'a', active: true }]);
  t.is(code(await t.throwsAsync(c.insertOne({ name: 'a', active: true }))), 11000);
  t.is(await c.countDocuments({ name: 'a' }), 3);
});

test('multikey unique index rejects a value already present in another document array', async (t) => {
  const c = m.db.collection('ixmulti');
  await c.createIndex({ tags: 1 }, { unique: true });
  await c.insertOne({ tags: ['a', 'b'] });
  await c.insertOne({ tags: ['c', 'c'] }); // repeats inside one document are fine
  const err = await t.throwsAsync(c.insertOne({ tags: ['x', 'b'] }));
  t.is(code(err), 11000);
  t.deepEqual((err as unknown as { keyValue: Document }).keyValue, { tags: 'b' });
  t.is(await c.countDocuments({ tags: 'c' }), 1);
});

test('building a unique index over duplicates fails with 11000 and leaves no index', async (t) => {
  const c = m.db.collection('ixbuild');
  await c.insertMany([{ k: 1 }, { k: 1 }]);
  const err = await t.throwsAsync(c.createIndex({ k: 1 }, { unique: true }));
  t.is(code(err), 11000);
  t.deepEqual((await c.listIndexes().toArray()).map((i) => i['name']), ['_id_']);
});

test('updates that would violate a unique index fail and leave the document unchanged', async (t) => {
  const c = m.db.collection('ixupdate');
  await c.createIndex({ k: 1 }, { unique: true });
  await c.insertMany([{ _id: 1 as never, k: 'a' }, { _id: 2 as never, k: 'b' }]);
  t.is(code(await t.throwsAsync(c.updateOne({ _id: 2 as never }, { $set: { k: 'a' } }))), 11000);
  t.is((await c.findOne({ _id: 2 as never }))?.['k'], 'b');
  // an upsert that collides with an existing key
  t.is(code(await t.throwsAsync(c.updateOne({ k: 'a', other: 1 }, { $set: { x: 1 } }, { upsert: true }))), 11000);
});

test('compound index prefix, $in and equality lookups return the right documents', async (t) => {
  const c = m.db.collection('ixlookup');
  await c.createIndex({ repo: 1, tag: 1, host: 1 });
  await c.insertMany(Array.from({ length: 60 }, (_, i) => ({ repo: `r${i % 3}`, tag: `t${i % 4}`, host: `h${i % 5}`, i })));
  t.is(await c.countDocuments({ repo: 'r1' }), 20);
  t.is(await c.countDocuments({ repo: 'r1', tag: 't1' }), 5);
  t.is(await c.countDocuments({ repo: { $in: ['r0', 'r2'] }, tag: 't0' }), 10);
  t.is(await c.countDocuments({ repo: 'r1', tag: 't1', host: 'h0' }), 1);
  t.is(await c.countDocuments({ repo: 'r1', i: { $gt: 30 } }), 10);
  const sorted = await c.find({ repo: 'r2', tag: 't3' }).sort({ i: -1 }).toArray();
  t.deepEqual(sorted.map((d) => d['i']), [59, 47, 35, 23, 11]);
});

test('index types the engine cannot build are refused, not ignored', async (t) => {
  if (m.backend !== 'engine') {
    t.pass('real servers support text indexes');
    return;
  }
  const err = await t.throwsAsync(m.db.collection('ixtext').createIndex({ body: 'text' }));
  t.is(code(err), 67);
});
