import test from 'ava';
import { Int32, type Document } from 'bson';
import { Catalog } from '../../src/mongo-engine/collection-store.ts';
import { candidateRecords, findRecords } from '../../src/mongo-engine/query-executor.ts';

/**
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
