import test from 'ava';
import { Int32, type Document } from 'bson';
import { Catalog } from '../../src/mongo-engine/collection-store.ts';
import { CursorManager } from '../../src/mongo-engine/cursor-manager.ts';
import { decodeRecords, encodeDdl, encodePut } from '../../src/mongo-engine/journal-format.ts';
import { validateSchema } from '../../src/mongo-engine/json-schema.ts';
import { candidateRecords, findRecords } from '../../src/mongo-engine/query-executor.ts';
import { crc32c } from '../../src/mongo-engine/crc32c.ts';
import { FrameReader } from '../../src/mongo-engine/wire-protocol.ts';

/**
 * Engine internals that the driver cannot observe directly.
 *
 * Indexed equality, compound-prefix and $in queries are answered from the hash indexes,
 * never by scanning: candidateRecords returns exactly the matching postings (undefined means
 * "scan"), and a unique-key lookup on 100,000 documents stays far below a millisecond.
 */

function big(n: number): { catalog: Catalog; coll: ReturnType<Catalog['ensureCollection']> } {
  const catalog = new Catalog();
  const coll = catalog.ensureCollection('planner', 'docs');
  catalog.createIndex(coll, { v: new Int32(2), key: { key: new Int32(1) }, name: 'key_1', unique: true });
  catalog.createIndex(coll, { v: new Int32(2), key: { repo: new Int32(1), tag: new Int32(1) }, name: 'repo_1_tag_1' });
  for (let i = 0; i < n; i++) coll.insert({ key: `k${i}`, repo: `r${i % 100}`, tag: `t${i % 7}`, n: i });
  return { catalog, coll };
}

const { coll } = big(100_000);

test('unique equality is one index lookup', (t) => {
  const c = candidateRecords(coll, { key: 'k4242' });
  t.is(c?.length, 1);
  t.is(c?.[0]?.view['n'], 4242);
});

test('compound prefix, full compound key and $in use the index', (t) => {
  t.is(candidateRecords(coll, { repo: 'r7' })?.length, 1000);
  const both = candidateRecords(coll, { repo: 'r7', tag: 't0' }) ?? [];
  t.true(both.length > 0 && both.length < 1000);
  t.true(both.every((r) => r.view['repo'] === 'r7' && r.view['tag'] === 't0'));
  t.is(candidateRecords(coll, { key: { $in: ['k1', 'k2', 'nope'] } })?.length, 2);
  t.is(candidateRecords(coll, { $and: [{ key: 'k9' }, { n: { $gt: 0 } }] })?.length, 1);
  t.is(candidateRecords(coll, { _id: 'missing' })?.length, 0);
});

test('non-indexed and range predicates fall back to a scan', (t) => {
  t.is(candidateRecords(coll, { n: 5 }), undefined);
  t.is(candidateRecords(coll, { key: { $gt: 'k5' } }), undefined);
  t.is(candidateRecords(coll, { tag: 't1' }), undefined); // not a prefix of repo_1_tag_1
});

test('a findOne by unique key on 100,000 documents takes well under a millisecond', (t) => {
  const filter: Document = { key: '' };
  const rounds = 2000;
  const start = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    filter['key'] = `k${(i * 7919) % 100_000}`;
    const [rec] = findRecords(coll, filter, { limit: 1 });
    if (!rec) throw new Error('not found');
  }
  const perOpMs = Number(process.hrtime.bigint() - start) / 1e6 / rounds;
  t.log(`unique-key findOne: ${(perOpMs * 1000).toFixed(1)} µs per lookup`);
  t.true(perOpMs < 0.5, `${perOpMs} ms per lookup`);
});

test('idle cursors are swept after the timeout; active ones stay', async (t) => {
  const cursors = new CursorManager();
  const raw = (n: number): Buffer => Buffer.from([n]);
  const a = cursors.open('db.c', 1, [1, 2, 3], raw, 1, false);
  const b = cursors.open('db.c', 1, [1, 2, 3, 4, 5], raw, 1, false);
  t.is(cursors.openCount, 2);
  const openedAt = Date.now();
  await new Promise((r) => setTimeout(r, 20));
  cursors.getMore(b.id, 'db.c', 1); // touches b 20 ms later
  const timeout = 10 * 60 * 1000;
  t.is(cursors.sweepIdle(openedAt + timeout + 10, timeout), 1); // only a has been idle long enough
  t.is(cursors.openCount, 1);
  t.is(cursors.getMore(b.id, 'db.c', 1).docs.length, 1);
  t.is(cursors.sweepIdle(Date.now() + timeout + 1, timeout), 1);
  t.is(cursors.openCount, 0);
  t.throws(() => cursors.getMore(a.id, 'db.c', 1), { message: /cursor id \d+ not found/ });
  const c = cursors.open('db.c', 7, [1, 2, 3], raw, 1, false);
  t.throws(() => cursors.getMore(c.id, 'db.other', 1), { message: /different namespace/ });
  cursors.closeForConnection(7);
  t.is(cursors.openCount, 0);
});

test('crc32c matches the Castagnoli check value', (t) => {
  t.is(crc32c(Buffer.from('123456789')), 0xe3069283);
});

test('journal records decode back; a truncated or corrupted tail is reported, not returned', (t) => {
  const a = encodePut('db.c', Buffer.from([5, 0, 0, 0, 0]));
  const b = encodeDdl('create', { db: 'db', name: 'c', options: {} });
  const good = Buffer.concat([a, b]);
  const ok = decodeRecords(good);
  t.is(ok.records.length, 2);
  t.false(ok.torn);
  const cut = decodeRecords(good.subarray(0, good.length - 3));
  t.is(cut.records.length, 1);
  t.true(cut.torn);
  t.is(cut.goodLength, a.length);
  const flipped = Buffer.from(good);
  flipped[a.length + 12] = (flipped[a.length + 12] as number) ^ 0xff;
  const bad = decodeRecords(flipped);
  t.is(bad.records.length, 1);
  t.true(bad.torn);
});

test('FrameReader reassembles frames split anywhere and separates coalesced frames', (t) => {
  const frame = (n: number): Buffer => {
    const f = Buffer.alloc(16 + n, n);
    f.writeInt32LE(16 + n, 0);
    return f;
  };
  const stream = Buffer.concat([frame(3), frame(10), frame(0)]);
  for (let cut = 1; cut < stream.length; cut++) {
    const r = new FrameReader();
    r.push(stream.subarray(0, cut));
    r.push(stream.subarray(cut));
    const lengths: number[] = [];
    for (let f = r.next(); f; f = r.next()) lengths.push(f.length);
    t.deepEqual(lengths, [19, 26, 16], `cut at ${cut}`);
  }
  const bad = new FrameReader();
  bad.push(Buffer.from([1, 0, 0, 0]));
  t.throws(() => bad.next(), { message: /invalid message length/ });
});

test('$jsonSchema evaluator covers combinators and reports the failing keyword', (t) => {
  const schema: Document = {
    bsonType: 'object',
    properties: {
      v: { anyOf: [{ bsonType: 'string' }, { bsonType: 'int' }] },
      w: { oneOf: [{ minimum: 0 }, { maximum: 10 }] },
      x: { not: { enum: ['forbidden'] } },
      y: { bsonType: 'string', minLength: 2, maxLength: 3 },
      z: { bsonType: 'array', uniqueItems: true },
    },
  };
  t.deepEqual(validateSchema(schema, { v: 'a', w: -1, x: 'ok', y: 'ab', z: [1, 2] }), []);
  const failed = (doc: Document): string[] => validateSchema(schema, doc).map((f) => f.operatorName);
  t.deepEqual(failed({ v: true }), ['anyOf']);
  t.deepEqual(failed({ w: 5 }), ['oneOf']);
  t.deepEqual(failed({ x: 'forbidden' }), ['not']);
  t.deepEqual(failed({ y: 'a' }), ['minLength']);
  t.deepEqual(failed({ z: [1, 1] }), ['uniqueItems']);
  t.deepEqual(failed({ y: new Int32(1) }), ['bsonType']);
});
