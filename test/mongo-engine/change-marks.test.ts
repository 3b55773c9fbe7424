import test from 'ava';
import { MongoClient } from 'mongodb';
import { changeMarkSlot, newChangeMarks, readChangeMarks, startEngine, type RunningEngine } from '../../src/mongo-engine/index.ts';

/**
 * The engine's change marks: which counters a write moves, whichever client sends it, so a
 * reader in the process can trust what it read while its marks stay put.
 */

const DB = 'marks';
let engine: RunningEngine;
let client: MongoClient;
const buffer = newChangeMarks();
const counters = new Int32Array(buffer);
test.before(async () => {
  engine = await startEngine({ changeMarks: { buffer, keys: { units: ['repo_id'], tags: ['repo_id', 'name'] } } });
  client = new MongoClient(engine.uri);
  await client.connect();
  await client.db(DB).createCollection('units');
  await client.db(DB).createCollection('other');
  await client.db(DB).createCollection('tags');
});
test.after.always(async () => {
  await client?.close();
  await engine?.close();
});

const mark = (coll: string, ...key: string[]): number => readChangeMarks(counters, [changeMarkSlot(`${DB}.${coll}`, key)]);

test.serial("a write moves the mark of its document's key and no other key's", async (t) => {
  const units = client.db(DB).collection('units');
  const a0 = mark('units', 'a');
  const b0 = mark('units', 'b');
  const otherA0 = mark('other', 'a');
  const whole0 = readChangeMarks(counters, [changeMarkSlot(`${DB}.units`)]);
  await units.insertOne({ _id: 'x' as never, repo_id: 'a', n: 1 });
  t.not(mark('units', 'a'), a0, 'insert into a');
  t.is(mark('units', 'b'), b0, 'b untouched');
  t.is(mark('other', 'a'), otherA0, 'another collection untouched');
  t.not(readChangeMarks(counters, [changeMarkSlot(`${DB}.units`)]), whole0, 'the whole collection moved');

  const a1 = mark('units', 'a');
  await units.updateOne({ _id: 'x' as never }, { $set: { n: 1 } });
  t.is(mark('units', 'a'), a1, 'an update that changes nothing moves nothing');
  await units.updateOne({ _id: 'x' as never }, { $set: { n: 2 } });
  t.not(mark('units', 'a'), a1, 'update in a');
  t.is(mark('units', 'b'), b0);

  const a2 = mark('units', 'a');
  await units.updateOne({ _id: 'x' as never }, { $set: { repo_id: 'b' } });
  t.not(mark('units', 'a'), a2, 'moved out of a');
  t.not(mark('units', 'b'), b0, 'moved into b');

  const b1 = mark('units', 'b');
  await units.deleteMany({ repo_id: 'b' });
  t.not(mark('units', 'b'), b1, 'delete in b');
});

test.serial('each change moves its key\'s mark by exactly one (a writer that sees its own write alone can tell)', async (t) => {
  const units = client.db(DB).collection('units');
  const c0 = mark('units', 'c');
  await units.insertOne({ _id: 'exact' as never, repo_id: 'c', n: 1 });
  t.is(mark('units', 'c'), c0 + 1, 'insert');
  await units.updateOne({ repo_id: 'c' }, { $set: { n: 2 } }, { upsert: true });
  t.is(mark('units', 'c'), c0 + 2, 'update');
  await units.updateOne({ repo_id: 'c' }, { $set: { n: 2 } }, { upsert: true });
  t.is(mark('units', 'c'), c0 + 2, 'an update that changes nothing');
  await units.findOneAndUpdate({ repo_id: 'c' }, { $inc: { n: 1 } });
  t.is(mark('units', 'c'), c0 + 3, 'findAndModify');
  await units.updateOne({ repo_id: 'c2' }, { $setOnInsert: { n: 0 } }, { upsert: true });
  t.is(mark('units', 'c'), c0 + 3, 'an upsert of another key');
  await units.deleteOne({ repo_id: 'c' });
  t.is(mark('units', 'c'), c0 + 4, 'delete');
});

test.serial('another client, a findAndModify and DDL all move the marks; reads do not', async (t) => {
  const other = new MongoClient(engine.uri);
  await other.connect();
  t.teardown(() => other.close());
  const units = other.db(DB).collection('units');
  const c0 = mark('units', 'c');
  await units.findOneAndUpdate({ repo_id: 'c', name: 't' }, { $set: { v: 1 } }, { upsert: true });
  t.not(mark('units', 'c'), c0, 'an upsert from another connection');

  const c1 = mark('units', 'c');
  await units.find({ repo_id: 'c' }).toArray();
  await units.countDocuments({ repo_id: 'c' });
  t.is(mark('units', 'c'), c1, 'reads move nothing');

  await other.db(DB).collection('scratch').insertOne({ repo_id: 'zz' });
  const c2 = mark('units', 'c');
  await other.db(DB).collection('scratch').drop();
  t.not(mark('units', 'c'), c2, 'a drop moves every reading (slot 0)');
});

test.serial('a key of several fields: a change to one tag name leaves the others of the repository alone', async (t) => {
  const tags = client.db(DB).collection('tags');
  const v1 = mark('tags', 'r', 'v1');
  const v2 = mark('tags', 'r', 'v2');
  await tags.updateOne({ repo_id: 'r', name: 'v1', schema_version: 2 }, { $set: { manifest_digest: 'sha256:1' } }, { upsert: true });
  t.not(mark('tags', 'r', 'v1'), v1);
  t.is(mark('tags', 'r', 'v2'), v2);
  const v1b = mark('tags', 'r', 'v1');
  await tags.insertOne({ repo_id: 'r', name: 'v1', schema_version: 1, manifest_digest: 'sha256:2' });
  t.not(mark('tags', 'r', 'v1'), v1b, 'a second unit of the name');
  const v1c = mark('tags', 'r', 'v1');
  await tags.deleteMany({ repo_id: 'r', name: 'v1' });
  t.not(mark('tags', 'r', 'v1'), v1c, 'deleted');
  t.is(mark('tags', 'r', 'v2'), v2);
});

test.serial("a key's leading part has a mark of its own: every change to a repository's tags moves it once, and no other repository's", async (t) => {
  const tags = client.db(DB).collection('tags');
  const repo = () => mark('tags', 'p');
  const elsewhere = mark('tags', 'q');
  const r0 = repo();
  await tags.insertOne({ _id: 'p-a' as never, repo_id: 'p', name: 'a', schema_version: 2 });
  t.is(repo(), r0 + 1, 'a new name');
  await tags.updateOne({ _id: 'p-a' as never }, { $set: { manifest_digest: 'sha256:1' } });
  t.is(repo(), r0 + 2, 'a tag moved');
  await tags.updateOne({ _id: 'p-a' as never }, { $set: { name: 'b' } });
  t.is(repo(), r0 + 3, 'renamed: the repository moves once, though both names move');
  t.is(mark('tags', 'q'), elsewhere, 'another repository is left alone');
  await tags.updateOne({ _id: 'p-a' as never }, { $set: { repo_id: 'q' } });
  t.is(repo(), r0 + 4, 'moved out of p');
  t.is(mark('tags', 'q'), elsewhere + 1, 'and into q');
  await tags.deleteOne({ _id: 'p-a' as never });
  t.is(repo(), r0 + 4, 'a change in q alone');
  t.is(mark('tags', 'q'), elsewhere + 2);
});
