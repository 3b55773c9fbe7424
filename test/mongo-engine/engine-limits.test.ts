import test from 'ava';
import { MongoClient, type Document } from 'mongodb';
import { startTestEngine } from '../helpers/mongo.ts';
import type { RunningEngine } from '../../src/mongo-engine/index.ts';

/**
 * What the embedded engine deliberately does not do answers with a clear error and the
 * server keeps serving. TTL expiry runs on a short interval here. These tests talk to a
 * dedicated engine because a real mongod supports these features.
 */

let engine: RunningEngine;
let client: MongoClient;
test.before(async () => {
  engine = await startTestEngine(undefined, { ttlIntervalMs: 100 });
  client = new MongoClient(engine.uri);
  await client.connect();
  await client.db('limits').collection('c').insertMany([{ a: 1, body: 'hello world' }, { a: 2 }]);
});
test.after.always(async () => {
  await client?.close();
  await engine?.close();
});

const code = (e: unknown): number | undefined => (e as { code?: number } | undefined)?.code;
const coll = () => client.db('limits').collection('c');

const cases: Array<[string, () => Promise<unknown>, number, RegExp]> = [
  ['$changeStream', () => coll().aggregate([{ $changeStream: {} }]).toArray(), 40573, /only supported on replica sets/],
  ['$out', () => coll().aggregate([{ $out: 'other' }]).toArray(), 115, /\$out is not supported/],
  ['$merge', () => coll().aggregate([{ $merge: { into: 'other' } }]).toArray(), 115, /\$merge is not supported/],
  ['$text', () => coll().find({ $text: { $search: 'hello' } }).toArray(), 27, /text index required/],
  ['$where', () => coll().find({ $where: 'this.a == 1' }).toArray(), 115, /\$where is not supported/],
  ['$where in $match', () => coll().aggregate([{ $match: { $where: 'true' } }]).toArray(), 115, /\$where is not supported/],
  ['$near', () => coll().find({ loc: { $near: [0, 0] } }).toArray(), 115, /\$near is not supported/],
  ['views', () => client.db('limits').createCollection('v', { viewOn: 'c', pipeline: [] }), 115, /views are not supported/],
  ['explain', () => client.db('limits').command({ aggregate: 'c', pipeline: [], explain: true }), 115, /explain is not supported/],
];

for (const [name, run, expected, message] of cases) {
  test(`${name} is refused with code ${expected}`, async (t) => {
    const err = await t.throwsAsync(run());
    t.is(code(err), expected);
    t.regex(err?.message ?? '', message);
    t.is((await client.db('admin').command({ ping: 1 }))['ok'], 1);
  });
}

test('the change stream helper fails cleanly', async (t) => {
  const stream = coll().watch();
  const err = await t.throwsAsync(stream.tryNext());
  t.is(code(err), 40573);
  await stream.close();
});

test('TTL indexes remove expired documents in the background', async (t) => {
  const c = client.db('limits').collection('ttl');
  await c.createIndex({ at: 1 }, { expireAfterSeconds: 1 });
  await c.insertMany([
    { name: 'old', at: new Date(Date.now() - 60_000) },
    { name: 'old-array', at: [new Date(Date.now() + 600_000), new Date(Date.now() - 60_000)] },
    { name: 'fresh', at: new Date(Date.now() + 600_000) },
    { name: 'no-date', at: 'not a date' },
  ]);
  const deadline = Date.now() + 5000;
  let left: Document[] = [];
  while (Date.now() < deadline) {
    left = await c.find({}).toArray();
    if (left.length === 2) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.deepEqual(left.map((d) => d['name']).sort(), ['fresh', 'no-date']);
  const [ix] = (await c.listIndexes().toArray()).filter((i) => i['name'] === 'at_1');
  t.is(ix?.['expireAfterSeconds'], 1);
  const mod = await client.db('limits').command({ collMod: 'ttl', index: { name: 'at_1', expireAfterSeconds: 3600 } });
  t.is(mod['expireAfterSeconds_old'], 1);
  t.is(mod['expireAfterSeconds_new'], 3600);
});
