import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Binary, type Document } from 'bson';
import { Catalog } from '../../src/mongo-engine/collection-store.ts';
import { startEngine } from '../../src/mongo-engine/index.ts';
import { openStorage } from '../../src/mongo-engine/persistence.ts';
import { encodeCommit, encodeDdl, encodePut } from '../../src/mongo-engine/journal-format.ts';
import { toBson } from '../../src/mongo-engine/bson-values.ts';
import { STORAGE_FORMAT } from '../../src/mongo-engine/storage-format.ts';
import { engineTempDir, withDriver } from '../helpers/mongo.ts';
import { kill9, spawnEngineChild, uriOf } from './fixtures/child-process.ts';

/**
 * The engine's files name their generation and their store, and snapshots end in a seal, so a
 * file that is missing, foreign or cut short is refused at start instead of being served as
 * if it were all the metadata there is (garbage collection would then delete every blob).
 */

const DOCS = 30;

/** A directory holding a sealed snapshot-1 (documents 0-29) and journal-1 with more writes (30-39), left by kill -9. */
async function reference(t: ExecutionContext): Promise<string> {
  const dir = engineTempDir(t);
  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => {
    for (let i = 0; i < DOCS; i++) await c.db('app').collection('tags').insertOne({ _id: i as never, v: `tag ${i}` });
  });
  await engine.close();
  const child = await spawnEngineChild(dir);
  await withDriver(uriOf(child), async (c) => {
    for (let i = DOCS; i < DOCS + 10; i++) await c.db('app').collection('tags').insertOne({ _id: i as never, v: `tag ${i}` });
  });
  await kill9(child);
  return dir;
}

function listing(dir: string): Array<[string, string]> {
  return fs
    .readdirSync(dir)
    .filter((f) => /\.(bson|log)$/.test(f))
    .sort()
    .map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('base64')]);
}

/** The start is refused with `message`, and no engine file was changed or removed. */
async function refused(t: ExecutionContext, dir: string, message: RegExp): Promise<void> {
  const before = listing(dir);
  const err = await t.throwsAsync(startEngine({ dbPath: dir }));
  t.regex(err?.message ?? '', message);
  t.regex(err?.message ?? '', /refusing to start/);
  t.deepEqual(listing(dir), before, 'nothing changed or removed');
}

test('the reference directory itself opens with every document', async (t) => {
  const dir = await reference(t);
  t.deepEqual(
    fs.readdirSync(dir).filter((f) => /\.(bson|log)$/.test(f)).sort(),
    ['journal-1.log', 'snapshot-1.bson'],
  );
  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => t.is(await c.db('app').collection('tags').countDocuments(), DOCS + 10));
  await engine.close();
});

test('what start-up loads holds no view into the files it read (a collection lives as long as the store, and would keep a whole file in memory)', async (t) => {
  const dir = await reference(t); // collection tags created in snapshot-1
  const child = await spawnEngineChild(dir);
  await withDriver(uriOf(child), async (c) => {
    await c.db('app').collection('more').insertOne({ _id: 1 as never, bytes: new Binary(Buffer.from('abc')), nested: { b: new Binary(Buffer.alloc(40, 1)) } });
  });
  await kill9(child); // collection more created in journal-1
  const catalog = new Catalog();
  const storage = await openStorage(dir, catalog, { durable: false, log: () => undefined });
  try {
    const owned = (b: Uint8Array): boolean => b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
    const names: string[] = [];
    for (const colls of catalog.dbs.values()) {
      for (const coll of colls.values()) {
        names.push(coll.ns);
        t.true(owned(coll.uuid.buffer), `${coll.ns}: uuid`);
        for (const rec of coll.records.values()) t.true(owned(rec.raw), `${coll.ns}: record bytes`);
      }
    }
    t.true(names.includes('app.tags') && names.includes('app.more'), names.join(','));
    const rec = catalog.getCollection('app', 'more')?.records.values().next().value;
    t.true(owned((rec?.view['bytes'] as Binary).buffer) && owned(((rec?.view['nested'] as Document)['b'] as Binary).buffer), 'binaries in a view');
  } finally {
    await storage.close();
  }
});

test('an empty or stray snapshot of a higher generation is refused, and the real one is not deleted', async (t) => {
  const dir = await reference(t);
  fs.writeFileSync(path.join(dir, 'snapshot-7.bson'), '');
  await refused(t, dir, /snapshot-7\.bson/);
});

test('a snapshot cut at a record boundary is refused as incomplete', async (t) => {
  const dir = await reference(t);
  const file = path.join(dir, 'snapshot-1.bson');
  const bytes = fs.readFileSync(file);
  // walk the frames (u32 length, u32 crc, payload) to a boundary about half way
  let off = 0;
  while (off < bytes.length / 2) off += 8 + bytes.readUInt32LE(off);
  fs.writeFileSync(file, bytes.subarray(0, off));
  await refused(t, dir, /snapshot-1\.bson is incomplete/);
});

test("a missing journal, a missing snapshot and another store's journal are refused", async (t) => {
  const dir = await reference(t);
  const journal = path.join(dir, 'journal-1.log');
  const kept = fs.readFileSync(journal);

  fs.rmSync(journal);
  await refused(t, dir, /snapshot-1\.bson is there but not journal-1\.log, which continues it/);
  fs.writeFileSync(journal, kept);

  const snapshot = path.join(dir, 'snapshot-1.bson');
  const snapshotBytes = fs.readFileSync(snapshot);
  fs.rmSync(snapshot);
  await refused(t, dir, /journal-1\.log is there but not snapshot-1\.bson, which it continues/);
  fs.writeFileSync(snapshot, snapshotBytes);

  const other = await reference(t);
  fs.copyFileSync(path.join(other, 'journal-1.log'), path.join(dir, 'journal-2.log'));
  await refused(t, dir, /journal-2\.log does not start as generation 2's journal/);
  fs.rmSync(path.join(dir, 'journal-2.log'));
  fs.copyFileSync(path.join(other, 'journal-1.log'), path.join(dir, 'journal-1.log'));
  await refused(t, dir, /journal-1\.log belongs to another store/);
  fs.writeFileSync(journal, kept);

  fs.writeFileSync(path.join(dir, 'journal-3.log'), '');
  await refused(t, dir, /journal-2\.log is missing between journal-1\.log and journal-3\.log/);
  fs.rmSync(path.join(dir, 'journal-3.log'));

  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => t.is(await c.db('app').collection('tags').countDocuments(), DOCS + 10, 'all there once the files are'));
  await engine.close();
});

test("only the engine's own temporary files are removed at start", async (t) => {
  const dir = await reference(t);
  fs.writeFileSync(path.join(dir, 'notes.tmp'), 'an operator wrote this');
  fs.writeFileSync(path.join(dir, 'snapshot-9.tmp'), 'a snapshot being written when the process died');
  const engine = await startEngine({ dbPath: dir });
  await engine.close();
  t.true(fs.existsSync(path.join(dir, 'notes.tmp')));
  t.false(fs.existsSync(path.join(dir, 'snapshot-9.tmp')));
});

test('a directory of format 2 (no heads, no seals) is read, then cut into a sealed generation and marked as format 3', async (t) => {
  const dir = engineTempDir(t);
  const ns = 'app.tags';
  const journal = Buffer.concat([
    encodeDdl('create', { db: 'app', name: 'tags', options: {} }),
    encodePut(ns, toBson({ _id: 1, v: 'from format 2' })),
    encodeCommit(0),
  ]);
  fs.writeFileSync(path.join(dir, 'journal-0.log'), journal);
  fs.writeFileSync(path.join(dir, 'FORMAT'), 'volreg-engine-format 2\n');
  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => t.is((await c.db('app').collection('tags').findOne({ _id: 1 as never }))?.['v'], 'from format 2'));
  t.is(fs.readFileSync(path.join(dir, 'FORMAT'), 'utf8'), `volreg-engine-format ${STORAGE_FORMAT}\n`);
  t.deepEqual(fs.readdirSync(dir).filter((f) => /\.(bson|log)$/.test(f)).sort(), ['journal-1.log', 'snapshot-1.bson']);
  await engine.close();
  // and the sealed files open under the checks of format 3
  const again = await startEngine({ dbPath: dir });
  await withDriver(again.uri, async (c) => t.is(await c.db('app').collection('tags').countDocuments(), 1));
  await again.close();
});

test("the remedy a damaged journal's refusal gives works: the journal cut where the damage starts keeps all before it", async (t) => {
  const dir = await reference(t);
  const journal = path.join(dir, 'journal-1.log');
  const bytes = fs.readFileSync(journal);
  bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
  fs.writeFileSync(journal, bytes);
  const err = await t.throwsAsync(startEngine({ dbPath: dir }));
  const cut = /`truncate -s (\d+) (\S+)`/.exec(err?.message ?? '');
  t.truthy(cut, err?.message);
  t.is(cut![2], journal);
  fs.truncateSync(journal, Number(cut![1]));
  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => {
    const n = await c.db('app').collection('tags').countDocuments();
    t.true(n >= DOCS && n < DOCS + 10, `the snapshot's ${DOCS} and the journal's writes before the damage: ${n}`);
  });
  await engine.close();
});

test("the snapshot's own journal cut to nothing is refused, also with FORMAT gone (the files' heads say format 3)", async (t) => {
  const dir = await reference(t);
  const journal = path.join(dir, 'journal-1.log');
  fs.writeFileSync(journal, '');
  await refused(t, dir, /journal-1\.log does not start as generation 1's journal/);
  fs.rmSync(journal);
  fs.rmSync(path.join(dir, 'FORMAT'));
  await refused(t, dir, /snapshot-1\.bson is there but not journal-1\.log/);
});

test('a journal a rotation had just created, left empty or with its head cut short by a power loss, is started afresh', async (t) => {
  for (const left of [Buffer.alloc(0), Buffer.alloc(98), Buffer.from('partial head')]) {
    const dir = await reference(t);
    fs.writeFileSync(path.join(dir, 'journal-2.log'), left);
    const engine = await startEngine({ dbPath: dir });
    await withDriver(engine.uri, async (c) => {
      const tags = c.db('app').collection('tags');
      t.is(await tags.countDocuments(), DOCS + 10);
      await tags.insertOne({ _id: 'after' as never });
    });
    await engine.close();
    const again = await startEngine({ dbPath: dir });
    await withDriver(again.uri, async (c) => t.is(await c.db('app').collection('tags').countDocuments(), DOCS + 11));
    await again.close();
  }
});
