import test from 'ava';
import { Binary, BSONRegExp, Code, Decimal128, deserialize, Double, Int32, Long, MaxKey, MinKey, ObjectId, serialize, Timestamp, type Document } from 'bson';
import { Catalog } from '../../src/mongo-engine/collection-store.ts';
import { CursorManager } from '../../src/mongo-engine/cursor-manager.ts';
import { decodeRecords, encodeCommit, encodeDdl, encodePut } from '../../src/mongo-engine/journal-format.ts';
import { validateSchema } from '../../src/mongo-engine/json-schema.ts';
import { candidateRecords, distinctFromIndex, findRecords, planStats, sortRecords, parseSort } from '../../src/mongo-engine/query-executor.ts';
import { compileFilter } from '../../src/mongo-engine/matcher.ts';
import { OrderedEntries, type OrderedEntry } from '../../src/mongo-engine/ordered-entries.ts';
import { fieldNames, projectTopLevel } from '../../src/mongo-engine/raw-projection.ts';
import { crc32c } from '../../src/mongo-engine/crc32c.ts';
import { FrameReader } from '../../src/mongo-engine/wire-protocol.ts';

/**
 * Engine internals that the driver cannot observe directly.
 *
 * Indexed equality, compound-prefix and $in queries are answered from the hash indexes,
 * never by scanning: candidateRecords returns exactly the matching postings (undefined means
 * "scan"), and a unique-key lookup on 100,000 documents stays far below a millisecond.
 * Ranges after an equality prefix and sorts that follow an index walk the index's ordered
 * entries: planStats proves how many records a query examined and that nothing was scanned.
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

test('non-indexed predicates and non-prefix fields fall back to a scan', (t) => {
  t.is(candidateRecords(coll, { n: 5 }), undefined);
  t.is(candidateRecords(coll, { n: { $gt: 5 } }), undefined);
  t.is(candidateRecords(coll, { tag: 't1' }), undefined); // not a prefix of repo_1_tag_1
  t.is(candidateRecords(coll, { tag: { $gt: 't1' } }), undefined);
});

test('a range on an indexed field yields exactly the records in range, in natural order', (t) => {
  const expected = [...coll.records.values()].filter((r) => (r.view['key'] as string) > 'k99990');
  const got = candidateRecords(coll, { key: { $gt: 'k99990' } });
  t.deepEqual(got?.map((r) => r.view['n']), expected.map((r) => r.view['n']));
  // type bracketing: a string bound never reaches numbers, and a range after an equality prefix
  t.deepEqual(candidateRecords(coll, { key: { $lt: 5 } }), []);
  const span = candidateRecords(coll, { repo: 'r7', tag: { $gte: 't2', $lt: 't4' } }) ?? [];
  t.is(span.length, [...coll.records.values()].filter((r) => r.view['repo'] === 'r7' && ['t2', 't3'].includes(r.view['tag'] as string)).length);
  t.true(span.every((r, i) => i === 0 || (span[i - 1] as { seq: number }).seq < r.seq));
});

test('a $or whose branches each use an index is the union of their lookups, each match once, in natural order; one unindexed branch scans', (t) => {
  // a reference looked up in either of two fields, as garbage collection asks of manifests
  const filter = { $or: [{ key: { $in: ['k10', 'k20'] } }, { repo: 'r20', tag: 't6' }] };
  const expected = [...coll.records.values()].filter((r) => ['k10', 'k20'].includes(r.view['key'] as string) || (r.view['repo'] === 'r20' && r.view['tag'] === 't6'));
  t.true(expected.some((r) => r.view['key'] === 'k20' && r.view['repo'] === 'r20'), 'k20 matches both branches');
  const found = measured(() => findRecords(coll, filter));
  t.is(found.scans, 0);
  t.true(found.examined < 300, `examined ${found.examined}`);
  t.deepEqual(found.result.map((r) => r.view['n']), expected.map((r) => r.view['n']));
  // with a sort and a limit, the candidates are sorted like a scan's
  t.deepEqual(findRecords(coll, filter, { sort: { n: -1 }, limit: 2 }).map((r) => r.view['n']), expected.map((r) => r.view['n'] as number).sort((a, b) => b - a).slice(0, 2));
  const oneUnindexed = measured(() => findRecords(coll, { $or: [{ key: 'k10' }, { n: 20 }] }));
  t.is(oneUnindexed.scans, 1);
  t.deepEqual(oneUnindexed.result.map((r) => r.view['n']), [10, 20]);
});

/** units_docker_tag's shape: 10 repositories x 3,000 names, indexed by (repo_id, name). */
function tagCollection(): ReturnType<Catalog['ensureCollection']> {
  const catalog = new Catalog();
  const tags = catalog.ensureCollection('planner', 'tags');
  catalog.createIndex(tags, { v: new Int32(2), key: { name: new Int32(1), schema_version: new Int32(1), repo_id: new Int32(1) }, name: 'unit_key', unique: true });
  catalog.createIndex(tags, { v: new Int32(2), key: { repo_id: new Int32(1), name: new Int32(1) }, name: 'repo_id_1_name_1' });
  for (let i = 0; i < 3_000; i++) {
    for (let r = 0; r < 10; r++) tags.insert({ name: `v${String((i * 7919) % 3_000).padStart(5, '0')}`, schema_version: 2, repo_id: `repo${r}` });
  }
  return tags;
}

const tags = tagCollection();

function measured<T>(f: () => T): { result: T; examined: number; scans: number; walks: number } {
  const before = { ...planStats };
  const result = f();
  return {
    result,
    examined: planStats.recordsExamined - before.recordsExamined,
    scans: planStats.collectionScans - before.collectionScans,
    walks: planStats.orderedWalks - before.orderedWalks,
  };
}

test('a tags/list page (equality prefix, range, sort, limit) examines only the page', (t) => {
  const filter = { repo_id: 'repo3', name: { $gt: 'v01500' } };
  const page = measured(() => findRecords(tags, filter, { sort: { name: 1 }, limit: 202 }));
  t.is(page.scans, 0);
  t.is(page.walks, 1);
  t.is(page.examined, 202);
  t.deepEqual(
    page.result.map((r) => r.view['name']),
    Array.from({ length: 202 }, (_, i) => `v${String(1501 + i).padStart(5, '0')}`),
  );
  t.true(page.result.every((r) => r.view['repo_id'] === 'repo3'));
  // the first page (no range) and the last one
  const first = measured(() => findRecords(tags, { repo_id: 'repo0' }, { sort: { name: 1 }, limit: 3 }));
  t.deepEqual(first.result.map((r) => r.view['name']), ['v00000', 'v00001', 'v00002']);
  t.is(first.examined, 3);
  const last = measured(() => findRecords(tags, { repo_id: 'repo9', name: { $gt: 'v02998' } }, { sort: { name: 1 }, limit: 202 }));
  t.deepEqual(last.result.map((r) => r.view['name']), ['v02999']);
  t.is(last.scans, 0);
});

test('a reversed sort walks the index backwards; a sort alone walks it from one end', (t) => {
  const desc = measured(() => findRecords(tags, { repo_id: 'repo5', name: { $lte: 'v00100' } }, { sort: { name: -1 }, skip: 1, limit: 3 }));
  t.deepEqual(desc.result.map((r) => r.view['name']), ['v00099', 'v00098', 'v00097']);
  t.is(desc.examined, 4);
  t.is(desc.scans, 0);
  const byId = measured(() => findRecords(tags, {}, { sort: { _id: -1 }, limit: 5 }));
  t.is(byId.examined, 5);
  t.is(byId.scans, 0);
  // the five largest _ids (not the last five inserted: an ObjectId's counter starts anywhere and may wrap)
  const hex = (r: { view: Document }): string => (r.view['_id'] as ObjectId).toHexString();
  const newest = [...tags.records.values()].sort((a, b) => (hex(a) < hex(b) ? 1 : hex(a) > hex(b) ? -1 : 0)).slice(0, 5);
  t.deepEqual(byId.result.map((r) => r.rid), newest.map((r) => r.rid));
});

test('a tags/list page over 30,000 tag units costs a small fraction of a scan', (t) => {
  const timePerQuery = (rounds: number, filterOf: (i: number) => Document): number => {
    // CPU time, not wall time: other processes on a loaded machine do not count
    const start = process.cpuUsage();
    for (let i = 0; i < rounds; i++) {
      const page = findRecords(tags, filterOf(i), { sort: { name: 1 }, limit: 202 });
      if (page.length !== 202) throw new Error(`page of ${page.length}`);
    }
    const used = process.cpuUsage(start);
    return (used.user + used.system) / 1000 / rounds;
  };
  const pageFilter = (i: number): Document => ({ repo_id: `repo${i % 10}`, name: { $gt: `v${String((i * 31) % 2_790).padStart(5, '0')}` } });
  const pageMs = timePerQuery(200, pageFilter);
  // the same query under an $or, which the planner does not look into: a scan and a sort
  const scanMs = timePerQuery(10, (i) => ({ $or: [pageFilter(i)] }));
  t.log(`tags page of 202: ${(pageMs * 1000).toFixed(0)} µs from the index, ${scanMs.toFixed(1)} ms by scanning`);
  t.true(pageMs * 5 < scanMs, `${pageMs} ms per page vs ${scanMs} ms per scan`);
});

/** A deterministic PRNG, so a failure can be replayed. */
function prng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
}

test('index-served ranges and sorts answer exactly like a scan and a stable sort', (t) => {
  const rand = prng(42);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const catalog = new Catalog();
  const indexed = catalog.ensureCollection('planner', 'indexed');
  catalog.createIndex(indexed, { v: new Int32(2), key: { a: new Int32(1), b: new Int32(-1) }, name: 'a_1_b_-1' });
  catalog.createIndex(indexed, { v: new Int32(2), key: { b: new Int32(1) }, name: 'b_1', sparse: true });
  catalog.createIndex(indexed, { v: new Int32(2), key: { c: new Int32(1) }, name: 'c_1' });
  const values = ['x', 'y', 'z', 'yy', 1, 2, 2.5, 10, new Date(5), new Date(7), null, new ObjectId('6500000000000000000000aa')];
  const doc = (i: number): Document => {
    const d: Document = { _id: i, a: pick(['p', 'q', 'r']) };
    if (rand() < 0.9) d['b'] = pick(values);
    d['c'] = rand() < 0.05 ? [pick(values), pick(values)] : pick(values); // sometimes multikey
    return d;
  };
  for (let i = 0; i < 400; i++) indexed.insert(doc(i));
  const filters: Document[] = [
    { a: 'q', b: { $gt: 'x' } },
    { a: 'p', b: { $gte: 2, $lt: 10 } },
    { b: { $lt: 'yy' } },
    { b: { $gte: new Date(5) } },
    { a: { $in: ['p', 'r'] }, b: { $lte: 2.5 } },
    { $and: [{ b: { $gt: 1 } }, { b: { $lt: 10 } }] },
    { c: { $gt: 'x' } },
    { c: { $gte: 2, $lte: 10 } },
    { a: 'r' },
    {},
  ];
  const sorts: Array<Document | undefined> = [undefined, { b: 1 }, { b: -1 }, { a: 1, b: -1 }, { a: -1, b: 1 }, { b: 1, a: 1 }, { c: 1 }, { _id: -1 }];
  const reference = (filter: Document, sort: Document | undefined, skip: number, limit: number): number[] => {
    const m = compileFilter(filter);
    let recs = [...indexed.records.values()].filter((r) => m.test(r.view));
    if (sort) recs = sortRecords(recs, parseSort(sort));
    return recs.slice(skip, limit ? skip + limit : undefined).map((r) => r.view['_id'] as number);
  };
  let checks = 0;
  for (let round = 0; round < 6; round++) {
    for (const filter of filters) {
      for (const sort of sorts) {
        const skip = pick([0, 0, 3]);
        const limit = pick([0, 1, 5, 50]);
        const got = findRecords(indexed, filter, { sort, skip, limit }).map((r) => r.view['_id'] as number);
        t.deepEqual(got, reference(filter, sort, skip, limit), `round ${round} ${JSON.stringify({ filter, sort, skip, limit })}`);
        checks++;
      }
    }
    // churn: updates that move keys, deletes, re-inserts
    for (let k = 0; k < 60; k++) {
      const id = Math.floor(rand() * 400);
      const rec = indexed.records.get(`n${id}`);
      if (rec && rand() < 0.3) indexed.delete(rec);
      else if (rec) indexed.replace(rec, doc(id));
      else indexed.insert(doc(id));
    }
  }
  t.is(checks, 6 * filters.length * sorts.length);
});

test('ordered entries stay sorted through inserts, removals and chunk splits; walks honour both ends', (t) => {
  const rand = prng(7);
  const o = new OrderedEntries([1, -1]);
  const live = new Map<string, OrderedEntry>();
  for (let i = 0; i < 6000; i++) {
    const ascending = i < 1500; // first an append-only stretch, then random keys and removals
    const rid = `r${i}`;
    const e: OrderedEntry = { vals: [ascending ? i : Math.floor(rand() * 300), Math.floor(rand() * 5)], rid };
    o.insert(e);
    live.set(rid, e);
    if (!ascending && rand() < 0.4) {
      const victims = [...live.keys()];
      const victim = victims[Math.floor(rand() * victims.length)] as string;
      t.true(o.remove(live.get(victim) as OrderedEntry));
      live.delete(victim);
    }
  }
  t.false(o.remove({ vals: [1, 1], rid: 'never' }));
  const expected = [...live.values()].sort((a, b) => o.compare(a, b));
  const all: string[] = [];
  o.each(o.seek(() => false), o.seek(() => true), false, (e) => {
    all.push(e.rid);
    return false;
  });
  t.is(o.size, live.size);
  t.deepEqual(all, expected.map((e) => e.rid));
  // a span: first field in [100, 200), walked both ways
  const before = (e: OrderedEntry): boolean => (e.vals[0] as number) < 100;
  const inSpan = expected.filter((e) => (e.vals[0] as number) >= 100 && (e.vals[0] as number) < 200).map((e) => e.rid);
  const fwd: string[] = [];
  const bwd: string[] = [];
  const from = o.seek(before);
  const to = o.seek((e) => (e.vals[0] as number) < 200);
  o.each(from, to, false, (e) => {
    fwd.push(e.rid);
    return false;
  });
  o.each(from, to, true, (e) => {
    bwd.push(e.rid);
    return false;
  });
  t.deepEqual(fwd, inSpan);
  t.deepEqual(bwd, [...inSpan].reverse());
  // stopping early
  let visited = 0;
  o.each(from, to, false, () => ++visited >= 3);
  t.is(visited, 3);
});

test('multikey indexes answer ranges and sorts by scanning candidates, never by walking', (t) => {
  const catalog = new Catalog();
  const c = catalog.ensureCollection('planner', 'multi');
  catalog.createIndex(c, { v: new Int32(2), key: { v: new Int32(1) }, name: 'v_1' });
  for (let i = 0; i < 50; i++) c.insert({ _id: i, v: i });
  const walked = measured(() => findRecords(c, { v: { $gt: 45 } }));
  t.is(walked.walks, 1);
  t.is(walked.examined, 4);
  const arr = c.insert({ _id: 'arr', v: [1, 100] });
  // mongod: {$gt: 5, $lt: 10} matches [1, 100] (each bound by some element)
  const both = measured(() => findRecords(c, { v: { $gt: 5, $lt: 10 } }, { sort: { v: -1 } }));
  t.is(both.walks, 0);
  t.deepEqual(both.result.map((r) => r.view['_id']), ['arr', 9, 8, 7, 6]);
  c.delete(arr);
  t.is(measured(() => findRecords(c, { v: { $gt: 5, $lt: 10 } })).walks, 1);
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
  const openedAt = performance.now();
  await new Promise((r) => setTimeout(r, 20));
  cursors.getMore(b.id, 'db.c', 1); // touches b 20 ms later
  const timeout = 10 * 60 * 1000;
  t.is(cursors.sweepIdle(openedAt + timeout + 10, timeout), 1); // only a has been idle long enough
  t.is(cursors.openCount, 1);
  t.is(cursors.getMore(b.id, 'db.c', 1).docs.length, 1);
  t.is(cursors.sweepIdle(performance.now() + timeout + 1, timeout), 1);
  t.is(cursors.openCount, 0);
  t.throws(() => cursors.getMore(a.id, 'db.c', 1), { message: /cursor id \d+ not found/ });
  const c = cursors.open('db.c', 7, [1, 2, 3], raw, 1, false);
  t.throws(() => cursors.getMore(c.id, 'db.other', 1), { message: /different namespace/ });
  cursors.closeForConnection(7);
  t.is(cursors.openCount, 0);
});

test('top-level projections copied from the BSON bytes equal deserialize, pick, serialize', (t) => {
  const doc: Document = {
    _id: new ObjectId(),
    d: new Double(1.5),
    s: 'text é',
    o: { a: 1, b: [1, 'x'] },
    a: [new Int32(1), { z: null }],
    bin: new Binary(Buffer.from([1, 2, 3]), 4),
    t: true,
    date: new Date(12345),
    nil: null,
    re: new BSONRegExp('a+b', 'i'),
    i: new Int32(7),
    ts: new Timestamp({ t: 5, i: 6 }),
    l: Long.fromString('9007199254740993'),
    dec: Decimal128.fromString('1.25'),
    min: new MinKey(),
    max: new MaxKey(),
    code: new Code('x = 1'),
    'ünï': 'non-ascii name',
  };
  const raw = Buffer.from(serialize(doc));
  const names = Object.keys(doc);
  const typed = { promoteValues: false } as const;
  const rand = prng(3);
  for (let round = 0; round < 40; round++) {
    const fields = new Set(names.filter(() => rand() < 0.4));
    const include = rand() < 0.5;
    const got = projectTopLevel(raw, fieldNames(fields), include);
    const full = deserialize(raw, typed);
    const picked: Document = {};
    for (const k of Object.keys(full)) if (fields.has(k) === include) picked[k] = full[k];
    t.deepEqual(got, Buffer.from(serialize(picked)), `${include ? 'include' : 'exclude'} ${[...fields].join(',')}`);
  }
  // an unknown element type is left to the general path
  const bad = Buffer.from(raw);
  bad[4] = 0x42;
  t.is(projectTopLevel(bad, fieldNames(['_id']), true), undefined);
});

test('stored records never pin pooled memory: their bytes and binary values own their buffers', (t) => {
  const catalog = new Catalog();
  const c = catalog.ensureCollection('memory', 'docs');
  const owns = (b: Uint8Array): boolean => b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
  for (let i = 0; i < 50; i++) c.insert({ i, content: new Binary(Buffer.alloc(300, i)), nested: [{ b: new Binary(Buffer.from('x')) }] });
  const first = [...c.records.values()][0];
  if (first) c.replace(first, { _id: first.view['_id'], i: -1, content: new Binary(Buffer.alloc(10, 1)) });
  c.putUnchecked(Buffer.concat([Buffer.alloc(16), serialize({ _id: 'replayed', content: new Binary(Buffer.alloc(20)) })]).subarray(16));
  for (const rec of c.records.values()) {
    t.true(owns(rec.raw));
    t.true(owns((rec.view['content'] as Binary).buffer));
    const nested = rec.view['nested'] as Array<{ b: Binary }> | undefined;
    if (nested) t.true(owns((nested[0] as { b: Binary }).b.buffer));
  }
  t.is(c.size, 51);
});

test('records handed over as decoded: in order, none kept, and what the receiver throws is its own failure, never damage to cut', (t) => {
  const a = encodePut('db.c', Buffer.from([5, 0, 0, 0, 0]));
  const b = encodeDdl('create', { db: 'db', name: 'c', options: {} });
  const file = Buffer.concat([a, b, a]);
  const seen: number[] = [];
  const streamed = decodeRecords(file, (rec) => seen.push(rec.kind));
  t.deepEqual(seen, [1, 3, 1]);
  t.is(streamed.count, 3);
  t.is(streamed.records.length, 0);
  t.false(streamed.torn);
  const refusal = new Error('this version cannot apply it');
  let calls = 0;
  t.is(
    t.throws(() =>
      decodeRecords(file, () => {
        if (++calls === 2) throw refusal;
      }),
    ),
    refusal,
  );
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

test('damage followed by a batch that began after it is acknowledged damage; inside the last batch it is a torn tail', (t) => {
  // two batches as the journal writes them: records, then a commit naming where the batch began
  const batch1 = Buffer.concat([encodePut('db.c', Buffer.from([5, 0, 0, 0, 0])), encodePut('db.c', Buffer.from([5, 0, 0, 0, 0]))]);
  const first = Buffer.concat([batch1, encodeCommit(0)]);
  const batch2 = encodePut('db.c', Buffer.from([5, 0, 0, 0, 0]));
  const file = Buffer.concat([first, batch2, encodeCommit(first.length)]);
  const clean = decodeRecords(file);
  t.is(clean.records.length, 3, 'commit records are not records');
  t.false(clean.torn);

  // a byte flipped in the first batch: the second began after it, so the first had been synced
  const early = Buffer.from(file);
  early[12] = (early[12] as number) ^ 0xff;
  const r1 = decodeRecords(early);
  t.true(r1.torn);
  t.true(r1.acknowledgedAfter);
  t.is(r1.goodLength, 0);

  // a byte flipped in the last batch (its own commit intact): the write a crash interrupted
  const late = Buffer.from(file);
  late[first.length + 12] = (late[first.length + 12] as number) ^ 0xff;
  const r2 = decodeRecords(late);
  t.true(r2.torn);
  t.false(r2.acknowledgedAfter);
  t.is(r2.goodLength, first.length);

  // the last batch cut short
  const cut = decodeRecords(file.subarray(0, file.length - 5));
  t.true(cut.torn);
  t.false(cut.acknowledgedAfter);
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

test('distinct of the field after string equalities is read from the index alone, each value once', (t) => {
  const all = measured(() => distinctFromIndex(tags, { repo_id: 'repo3' }, 'name'));
  t.is(all.examined, 0);
  t.is(all.scans, 0);
  t.is(all.walks, 1);
  t.deepEqual(all.result, Array.from({ length: 3_000 }, (_, i) => `v${String(i).padStart(5, '0')}`));

  const catalog = new Catalog();
  const c = catalog.ensureCollection('planner', 'distinct');
  catalog.createIndex(c, { v: new Int32(2), key: { repo_id: new Int32(1), name: new Int32(1) }, name: 'repo_id_1_name_1' });
  // a name with a unit per schema version comes once
  for (const [name, sv] of [['b', 1], ['a', 2], ['b', 2], ['c', 1]] as const) c.insert({ repo_id: 'r', name, schema_version: sv });
  c.insert({ repo_id: 'other', name: 'z', schema_version: 2 });
  t.deepEqual(distinctFromIndex(c, { repo_id: 'r' }, 'name'), ['a', 'b', 'c']);
  t.deepEqual(distinctFromIndex(c, { repo_id: 'nobody' }, 'name'), []);
  t.deepEqual(distinctFromIndex(c, {}, 'repo_id'), ['other', 'r']);

  // not answerable from the index: the caller reads the records
  t.is(distinctFromIndex(c, { repo_id: { $in: ['r'] } }, 'name'), undefined);
  t.is(distinctFromIndex(c, { repo_id: 'r', schema_version: 2 }, 'name'), undefined);
  t.is(distinctFromIndex(c, { repo_id: 'r' }, 'schema_version'), undefined);
  t.is(distinctFromIndex(c, { name: 'a' }, 'repo_id'), undefined);
  // a missing or null value in the span needs the records (distinct skips missing, keeps null)
  c.insert({ repo_id: 'r', schema_version: 2 });
  t.is(distinctFromIndex(c, { repo_id: 'r' }, 'name'), undefined);
  t.deepEqual(distinctFromIndex(c, { repo_id: 'other' }, 'name'), ['z']);
  // array values make the index multikey: its entries are no longer one per document
  c.insert({ repo_id: 'other', name: ['x', 'y'], schema_version: 2 });
  t.is(distinctFromIndex(c, { repo_id: 'other' }, 'name'), undefined);
});
