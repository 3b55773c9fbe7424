import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Long, MongoClient } from 'mongodb';
import { crc32c } from '../../src/mongo-engine/crc32c.ts';
import { DbPathLockedError, startEngine } from '../../src/mongo-engine/index.ts';
import { STORAGE_FORMAT } from '../../src/mongo-engine/storage-format.ts';
import { engineTempDir, withDriver } from '../helpers/mongo.ts';
import { kill9, spawnEngineChild, uriOf } from './fixtures/child-process.ts';

/**
 * Fault tests for the embedded engine's storage: kill -9 during acknowledged writes, torn
 * journal tails, the dbPath lock, type preservation across restarts, compaction.
 * These exercise the engine directly (not through openTestMongo) because they restart it.
 */

function journalFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => /^journal-\d+\.log$/.test(f)).map((f) => path.join(dir, f));
}

test('kill -9 during a burst of writes loses no acknowledged write', async (t) => {
  const dir = engineTempDir(t);
  const child = await spawnEngineChild(dir);
  const acked: number[] = [];
  const client = new MongoClient(uriOf(child), { maxPoolSize: 16, serverSelectionTimeoutMS: 3000, retryWrites: false });
  await client.connect();
  const coll = client.db('fault').collection('burst');
  await coll.createIndex({ k: 1 }, { unique: true });
  let stop = false;
  let next = 0;
  const writers = Array.from({ length: 16 }, async () => {
    while (!stop) {
      const id = next++;
      try {
        await coll.insertOne({ _id: id as never, k: `key-${id}`, big: Long.fromString('9007199254740993') });
        acked.push(id);
      } catch {
        return; // the server died mid-request: not acknowledged
      }
    }
  });
  while (acked.length < 400) await new Promise((r) => setTimeout(r, 5));
  await kill9(child);
  stop = true;
  await Promise.all(writers);
  await client.close(true);
  t.true(acked.length >= 400);

  const again = await spawnEngineChild(dir);
  try {
    await withDriver(uriOf(again), async (c) => {
      const docs = await c.db('fault').collection('burst').find({}, { promoteLongs: false }).toArray();
      const present = new Set(docs.map((d) => d._id as unknown as number));
      const missing = acked.filter((id) => !present.has(id));
      t.deepEqual(missing, [], 'every acknowledged insert survived kill -9');
      const sample = docs.find((d) => d._id === (acked[0] as unknown));
      t.true(sample?.['big'] instanceof Long);
      t.is((sample?.['big'] as Long).toString(), '9007199254740993');
      // the unique index was rebuilt from the journal
      await t.throwsAsync(c.db('fault').collection('burst').insertOne({ k: `key-${acked[0]}` }), { message: /E11000/ });
    });
  } finally {
    await kill9(again);
  }
});

test('writeConcern j:false is acknowledged without waiting for the journal, and still reaches it in order', async (t) => {
  const dir = engineTempDir(t);
  const child = await spawnEngineChild(dir);
  await withDriver(uriOf(child), async (c) => {
    const coll = c.db('fault').collection('unjournaled');
    const r = await coll.insertMany(
      Array.from({ length: 50 }, (_, i) => ({ _id: i as never, n: i })),
      { writeConcern: { w: 1, j: false } },
    );
    t.is(r.insertedCount, 50);
    // A journaled write acknowledged after them covers them: the journal is one ordered log.
    await coll.insertOne({ _id: 'last' as never, n: -1 }, { writeConcern: { w: 1, j: true } });
  });
  await kill9(child);
  const again = await spawnEngineChild(dir);
  try {
    await withDriver(uriOf(again), async (c) => {
      t.is(await c.db('fault').collection('unjournaled').countDocuments(), 51);
    });
  } finally {
    await kill9(again);
  }
});

test('a torn journal tail is truncated and later writes survive another restart', async (t) => {
  const dir = engineTempDir(t);
  const first = await spawnEngineChild(dir);
  await withDriver(uriOf(first), async (c) => {
    await c.db('fault').collection('torn').insertMany([{ _id: 1 as never, v: 'a' }, { _id: 2 as never, v: 'b' }]);
  });
  await kill9(first);
  const [journal] = journalFiles(dir);
  t.truthy(journal);
  const sizeBefore = fs.statSync(journal as string).size;
  // A partial record: a header promising 200 bytes, followed by only a few.
  const garbage = Buffer.alloc(20);
  garbage.writeUInt32LE(200, 0);
  garbage.writeUInt32LE(0xdeadbeef, 4);
  fs.appendFileSync(journal as string, garbage);

  const second = await spawnEngineChild(dir);
  await withDriver(uriOf(second), async (c) => {
    const coll = c.db('fault').collection('torn');
    t.is(await coll.countDocuments({}), 2);
    await coll.insertOne({ _id: 3 as never, v: 'c' });
  });
  await kill9(second);
  const sizes = journalFiles(dir).map((f) => fs.statSync(f).size);
  t.true(sizes.some((s) => s > sizeBefore), 'the new record was appended after the truncated tail');

  // Also a complete-length record with a bad checksum at the tail.
  const [j2] = journalFiles(dir);
  const bad = Buffer.alloc(16);
  bad.writeUInt32LE(8, 0);
  bad.writeUInt32LE(0x12345678, 4);
  fs.appendFileSync(j2 as string, bad);

  const third = await spawnEngineChild(dir);
  try {
    await withDriver(uriOf(third), async (c) => {
      const ids = (await c.db('fault').collection('torn').find({}).sort({ _id: 1 }).toArray()).map((d) => d._id as unknown);
      t.deepEqual(ids, [1, 2, 3]);
    });
  } finally {
    await kill9(third);
  }
});

test('damage in acknowledged journal bytes (later writes follow it) refuses the start and keeps the file; damage in the last write is a torn tail', async (t) => {
  const dir = engineTempDir(t);
  const first = await spawnEngineChild(dir);
  await withDriver(uriOf(first), async (c) => {
    const coll = c.db('fault').collection('damaged');
    // one acknowledged write after the other: each its own journal batch
    for (let i = 0; i < 20; i++) await coll.insertOne({ _id: i as never, v: 'x'.repeat(100) });
  });
  await kill9(first);
  const [journal] = journalFiles(dir);
  const original = fs.readFileSync(journal as string);

  // a byte flipped a third of the way in: 2/3 of the acknowledged writes come after it
  const damaged = Buffer.from(original);
  const at = Math.floor(original.length / 3);
  damaged[at] = (damaged[at] as number) ^ 0xff;
  fs.writeFileSync(journal as string, damaged);
  const err = await t.throwsAsync(startEngine({ dbPath: dir }));
  t.regex(err?.message ?? '', /is damaged at byte \d+, and changes acknowledged after that point follow it; refusing to start/);
  t.is(fs.statSync(journal as string).size, original.length, 'nothing was truncated');
  t.true(fs.readFileSync(journal as string).equals(damaged));

  // the last write cut short (a crash in the middle of writing it): never acknowledged, discarded quietly
  const warnings: Array<{ msg: string; level: string | undefined; keptIn: unknown }> = [];
  const log = (msg: string, fields?: Record<string, unknown>, level?: string): void => void warnings.push({ msg, level, keptIn: fields?.['keptIn'] });
  fs.writeFileSync(journal as string, original.subarray(0, original.length - 30));
  const engine = await startEngine({ dbPath: dir, log });
  try {
    await withDriver(engine.uri, async (c) => t.is(await c.db('fault').collection('damaged').countDocuments(), 19));
  } finally {
    await engine.close();
  }
  const torn = warnings.find((w) => /a crash interrupted; discarding it/.test(w.msg));
  t.is(torn?.level, 'warn', warnings.map((w) => w.msg).join('; '));
  const kept = fs.readFileSync(torn!.keptIn as string);
  const cut = original.subarray(0, original.length - 30);
  t.true(kept.length > 0 && kept.equals(cut.subarray(cut.length - kept.length)), 'the cut bytes are kept beside the journal');
});

test('damage inside the last write batch, whose commit record is intact, is discarded loudly: it may have been acknowledged', async (t) => {
  const dir = engineTempDir(t);
  const first = await startEngine({ dbPath: dir });
  await withDriver(first.uri, async (c) => {
    for (let i = 0; i < 5; i++) await c.db('fault').collection('whole').insertOne({ _id: i as never, v: 'y'.repeat(100) });
  });
  // no clean close: the journal must keep the writes (a close may fold them into a snapshot)
  const [journal] = journalFiles(dir);
  const original = fs.readFileSync(journal as string);
  await first.close();
  for (const f of fs.readdirSync(dir)) if (/^(snapshot|journal)-/.test(f)) fs.rmSync(path.join(dir, f));
  const flipped = Buffer.from(original);
  flipped[original.length - 40] = (flipped[original.length - 40] as number) ^ 0xff;
  fs.writeFileSync(journal as string, flipped);
  const said: Array<{ msg: string; level: string | undefined }> = [];
  const engine = await startEngine({ dbPath: dir, log: (msg, _f, level) => void said.push({ msg, level }) });
  try {
    await withDriver(engine.uri, async (c) => t.is(await c.db('fault').collection('whole').countDocuments(), 4));
  } finally {
    await engine.close();
  }
  const loud = said.find((w) => /damaged although it was written whole/.test(w.msg));
  t.is(loud?.level, 'error', said.map((w) => w.msg).join('; '));
  t.true(fs.readdirSync(dir).some((f) => f.startsWith(`${path.basename(journal as string)}.discarded-`)));
});

test('FORMAT names the layout; a directory a newer engine wrote is refused, its files untouched', async (t) => {
  const dir = engineTempDir(t);
  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => {
    await c.db('fmt').collection('c').insertOne({ _id: 1 as never, v: 'kept' });
  });
  await engine.close();
  t.is(fs.readFileSync(path.join(dir, 'FORMAT'), 'utf8'), `volreg-engine-format ${STORAGE_FORMAT}\n`);

  // written by an older engine (no marker): read, and marked as this engine's from then on
  fs.rmSync(path.join(dir, 'FORMAT'));
  const older = await startEngine({ dbPath: dir });
  await withDriver(older.uri, async (c) => t.is((await c.db('fmt').collection('c').findOne({ _id: 1 as never }))?.['v'], 'kept'));
  await older.close();
  t.is(fs.readFileSync(path.join(dir, 'FORMAT'), 'utf8'), `volreg-engine-format ${STORAGE_FORMAT}\n`);

  const before = () => fs.readdirSync(dir).filter((f) => /\.(bson|log)$/.test(f)).map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('hex')]);
  const files = before();
  for (const marker of [`volreg-engine-format ${STORAGE_FORMAT + 1}\n`, 'something else\n']) {
    fs.writeFileSync(path.join(dir, 'FORMAT'), marker);
    const err = await t.throwsAsync(startEngine({ dbPath: dir }));
    t.regex(err?.message ?? '', marker.startsWith('volreg') ? /was written by a newer volreg \(storage format \d+; this version reads up to \d+\); refusing to start/ : /not a format marker this engine knows; refusing to start/);
    t.deepEqual(before(), files);
  }
});

test('an intact journal record of a kind this engine does not know is refused, never truncated as a torn tail', async (t) => {
  const dir = engineTempDir(t);
  const engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, async (c) => {
    for (let i = 0; i < 3; i++) await c.db('fmt').collection('c').insertOne({ _id: i as never });
  });
  await engine.close();
  // a clean close may leave everything in a snapshot: write the future record to the journal it reads next
  const [journal] = journalFiles(dir).sort();
  const payload = Buffer.concat([Buffer.from([99]), Buffer.from([0, 0]), Buffer.from('future')]);
  const header = Buffer.alloc(8);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32c(payload, 0, payload.length), 4);
  fs.appendFileSync(journal as string, Buffer.concat([header, payload]));
  const written = fs.readFileSync(journal as string);
  const err = await t.throwsAsync(startEngine({ dbPath: dir }));
  t.regex(err?.message ?? '', /written by a newer volreg \(a record of kind 99\); refusing to start/);
  t.true(fs.readFileSync(journal as string).equals(written), 'nothing was truncated');
});

test('a second process on the same dbPath is refused with a clear message; a killed owner does not block', async (t) => {
  const dir = engineTempDir(t);
  const owner = await spawnEngineChild(dir);
  t.true(owner.line.startsWith('READY '));
  const err = await t.throwsAsync(startEngine({ dbPath: dir }));
  t.true(err instanceof DbPathLockedError);
  t.regex(err?.message ?? '', /already in use by another running volreg process \(volreg serve with its embedded database, or volreg db;/);
  const second = await spawnEngineChild(dir);
  t.regex(second.line, /^ERROR dbPath .* is already in use/);
  t.is(await second.exited, 3);
  await kill9(owner);
  // The owner died without cleanup; its lock socket file is stale and must not block.
  t.true(fs.existsSync(path.join(dir, 'engine.lock.sock')));
  const engine = await startEngine({ dbPath: dir });
  try {
    await withDriver(engine.uri, async (c) => {
      t.is((await c.db('admin').command({ ping: 1 }))['ok'], 1);
    });
  } finally {
    await engine.close();
  }
});

test('removing the lock socket file (a tmp cleaner, an operator) does not let a second process in', async (t) => {
  const dir = engineTempDir(t);
  const owner = await spawnEngineChild(dir);
  t.teardown(() => kill9(owner));
  for (const f of fs.readdirSync(dir)) if (f.endsWith('.sock')) fs.rmSync(path.join(dir, f));
  const err = await t.throwsAsync(startEngine({ dbPath: dir }));
  t.true(err instanceof DbPathLockedError, err?.message);
  await kill9(owner);
  const engine = await startEngine({ dbPath: dir });
  await engine.close();
});

test('a lock guard left by a process killed while holding it does not block the next start', async (t) => {
  // a pid that ran here and is gone
  const child = spawnSync(process.execPath, ['-e', '0']);
  const deadPid = child.pid!;
  const cases: Array<[string, string, number]> = [
    ['its owner, named in it, no longer runs on this host', `${os.hostname()} ${fs.readlinkSync('/proc/self/ns/pid')} ${deadPid}`, 0],
    ['left half written, and older than its ten seconds', '', 11_000],
  ];
  // the same pid in another pid namespace (a container sharing the host name) is not looked up:
  // that guard is waited for until its ten seconds are over
  {
    const dir = engineTempDir(t);
    const guard = path.join(dir, 'engine.lock.guard');
    fs.writeFileSync(guard, `${os.hostname()} pid:[1] ${deadPid}`);
    const then = new Date(Date.now() - 9000);
    fs.utimesSync(guard, then, then);
    const started = Date.now();
    const engine = await startEngine({ dbPath: dir });
    await engine.close();
    t.true(Date.now() - started >= 800, `another namespace's guard was broken after ${Date.now() - started} ms, before its time`);
  }
  for (const [why, content, ageMs] of cases) {
    const dir = engineTempDir(t);
    const guard = path.join(dir, 'engine.lock.guard');
    fs.writeFileSync(guard, content);
    const then = new Date(Date.now() - ageMs);
    fs.utimesSync(guard, then, then);
    const started = Date.now();
    const engine = await startEngine({ dbPath: dir });
    try {
      t.true(Date.now() - started < 3000, `${why}: started after ${Date.now() - started} ms`);
      t.false(fs.existsSync(guard), why);
    } finally {
      await engine.close();
    }
  }
});

test('int32, int64 and double keep their BSON types across a clean restart and a journal replay', async (t) => {
  const dir = engineTempDir(t);
  const doc = { _id: 'types', i: 7, l: Long.fromNumber(7), big: Long.fromString('1234567890123456789'), d: 2.5 };
  let engine = await startEngine({ dbPath: dir });
  await withDriver(engine.uri, (c) => c.db('types').collection('t').insertOne(doc as never));
  await engine.close(); // clean close: snapshot path
  engine = await startEngine({ dbPath: dir });
  const raw = await withDriver(engine.uri, (c) => c.db('types').collection('t').findOne({ _id: 'types' as never }, { promoteValues: false }));
  await engine.close();
  t.is(raw?.['i']?._bsontype, 'Int32');
  t.is(raw?.['l']?._bsontype, 'Long');
  t.is(raw?.['big']?.toString(), '1234567890123456789');
  t.is(raw?.['d']?._bsontype, 'Double');

  // journal replay path: the child is killed, so nothing is snapshotted at close
  const child = await spawnEngineChild(dir);
  await withDriver(uriOf(child), (c) => c.db('types').collection('t').updateOne({ _id: 'types' as never }, { $inc: { l: 1, i: 1 } }));
  await kill9(child);
  engine = await startEngine({ dbPath: dir });
  const after = await withDriver(engine.uri, (c) => c.db('types').collection('t').findOne({ _id: 'types' as never }, { promoteValues: false }));
  await engine.close();
  t.is(after?.['l']?._bsontype, 'Long');
  t.is(after?.['l']?.toString(), '8');
  t.is(after?.['i']?._bsontype, 'Int32');
  t.is(after?.['i']?.valueOf(), 8);
});

test('compaction writes a snapshot, starts a new journal and keeps every document', async (t) => {
  const dir = engineTempDir(t);
  const engine = await startEngine({ dbPath: dir, compactJournalBytes: 32 * 1024 });
  await withDriver(engine.uri, async (c) => {
    const coll = c.db('compact').collection('c');
    await coll.createIndex({ n: 1 }, { unique: true });
    for (let i = 0; i < 20; i++) {
      await coll.insertMany(Array.from({ length: 50 }, (_, j) => ({ n: i * 50 + j, pad: 'x'.repeat(64) })));
    }
    await coll.deleteMany({ n: { $lt: 100 } });
  });
  const files = fs.readdirSync(dir);
  t.true(files.some((f) => /^snapshot-\d+\.bson$/.test(f)), `a snapshot exists: ${files.join(',')}`);
  await engine.close();
  const again = await startEngine({ dbPath: dir });
  await withDriver(again.uri, async (c) => {
    const coll = c.db('compact').collection('c');
    t.is(await coll.countDocuments({}), 900);
    t.is((await coll.findOne({ n: 999 }))?.['n'], 999);
    await t.throwsAsync(coll.insertOne({ n: 500 }), { message: /E11000/ });
  });
  await again.close();
  // after a clean close only one generation is left
  const left = fs.readdirSync(dir).filter((f) => /\.(bson|log)$/.test(f));
  t.is(left.filter((f) => f.startsWith('snapshot-')).length, 1);
});

test('runStandalone prints one line and exits 0 on SIGTERM', async (t) => {
  const dir = engineTempDir(t);
  const child = await spawnEngineChild(dir, 'standalone');
  t.regex(child.line, /^volreg db listening on mongodb:\/\/127\.0\.0\.1:\d+$/);
  const uri = child.line.replace('volreg db listening on ', '');
  await withDriver(`${uri}/?directConnection=true`, async (c) => {
    t.is((await c.db('admin').command({ ping: 1 }))['ok'], 1);
  });
  child.proc.kill('SIGTERM');
  t.is(await child.exited, 0);
});
