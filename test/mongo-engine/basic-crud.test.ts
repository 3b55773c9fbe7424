import test from 'ava';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

let m: TestMongo;
test.before(async () => {
  m = await openTestMongo('basic_crud');
});
test.after.always(async () => {
  await m?.close();
});

test('insertOne then findOne returns the document', async (t) => {
  const c = m.db.collection('basic');
  const res = await c.insertOne({ name: 'alpha', size: 3 });
  t.true(res.acknowledged);
  const doc = await c.findOne({ name: 'alpha' });
  t.is(doc?.['size'], 3);
  t.deepEqual(doc?._id, res.insertedId);
});

test('updateOne with upsert inserts, then updates', async (t) => {
  const c = m.db.collection('upserts');
  const first = await c.updateOne({ key: 'k' }, { $set: { v: 1 } }, { upsert: true });
  t.is(first.upsertedCount, 1);
  t.is(first.matchedCount, 0);
  const second = await c.updateOne({ key: 'k' }, { $inc: { v: 1 } }, { upsert: true });
  t.is(second.matchedCount, 1);
  t.is(second.modifiedCount, 1);
  t.is((await c.findOne({ key: 'k' }))?.['v'], 2);
});

test('deleteMany removes only matching documents', async (t) => {
  const c = m.db.collection('deletes');
  await c.insertMany([{ g: 1 }, { g: 1 }, { g: 2 }]);
  const res = await c.deleteMany({ g: 1 });
  t.is(res.deletedCount, 2);
  t.is(await c.countDocuments({}), 1);
});
