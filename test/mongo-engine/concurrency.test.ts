import test from 'ava';
import { MongoClient, MongoServerError } from 'mongodb';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** Racing writers on separate connections must see unique indexes as atomic. */

let m: TestMongo;
let wide: MongoClient;
test.before(async () => {
  m = await openTestMongo('concurrency');
  wide = new MongoClient(m.uri, { maxPoolSize: 50, minPoolSize: 50 });
  await wide.connect();
});
test.after.always(async () => {
  await wide?.close();
  await m?.close();
});

test('50 racing upserts of one key give one document', async (t) => {
  const coll = wide.db(m.dbName).collection('race_upsert');
  await coll.createIndex({ key: 1 }, { unique: true });
  const results = await Promise.allSettled(
    Array.from({ length: 50 }, (_, i) => coll.updateOne({ key: 'the-one' }, { $inc: { hits: 1 }, $setOnInsert: { first: i } }, { upsert: true })),
  );
  // mongod may report a duplicate-key for an upsert that lost the race; the engine never does.
  const failures = results.filter((r) => r.status === 'rejected');
  for (const f of failures) t.is(((f as PromiseRejectedResult).reason as MongoServerError).code, 11000);
  const docs = await coll.find({ key: 'the-one' }).toArray();
  t.is(docs.length, 1);
  t.is(docs[0]?.['hits'], 50 - failures.length);
  const upserted = results.filter((r) => r.status === 'fulfilled' && r.value.upsertedCount === 1).length;
  t.is(upserted, 1);
});

test('50 racing inserts of one unique key give one success and 49 duplicate-key errors', async (t) => {
  const coll = wide.db(m.dbName).collection('race_insert');
  await coll.createIndex({ key: 1 }, { unique: true });
  const results = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => coll.insertOne({ key: 'same', i })));
  const ok = results.filter((r) => r.status === 'fulfilled');
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.is(ok.length, 1);
  t.is(failed.length, 49);
  for (const f of failed) {
    t.true(f.reason instanceof MongoServerError);
    t.is((f.reason as MongoServerError).code, 11000);
  }
  t.is(await coll.countDocuments({ key: 'same' }), 1);
});

test('concurrent findOneAndUpdate increments are all applied exactly once', async (t) => {
  const coll = wide.db(m.dbName).collection('race_counter');
  await coll.insertOne({ _id: 'counter' as never, n: 0 });
  const seen = await Promise.all(
    Array.from({ length: 50 }, () => coll.findOneAndUpdate({ _id: 'counter' as never }, { $inc: { n: 1 } }, { returnDocument: 'after' })),
  );
  const values = seen.map((d) => d?.['n'] as number).sort((a, b) => a - b);
  t.deepEqual(values, Array.from({ length: 50 }, (_, i) => i + 1));
});
