import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { MongoClient, type Db } from 'mongodb';
import type { RunningEngine } from '../../src/mongo-engine/index.ts';
import {
  anyColl,
  anyRead,
  anyWrite,
  canonical,
  multiWriteOp,
  createIndexes,
  emptyCollections,
  engineContents,
  Model,
  runOnEngine,
  runOnModel,
  writeOp,
  type Op,
  type Outcome,
} from '../helpers/engine-model-ops.ts';
import { applyUpdate, matches, ModelError, type Doc, type ModelCollection, type Update } from '../helpers/engine-model.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { engineTempDir, startTestEngine } from '../helpers/mongo.ts';
import { kill9, spawnEngineChild, uriOf, type EngineChild } from './fixtures/child-process.ts';

/**
 * Model-based tests of the engine: random sequences of the operations volreg's metadata layer
 * sends, through the driver, each compared with engine-model.ts (MongoDB's documented
 * semantics), with clean restarts, kill -9 and racing clients in between. Seeds are fixed so a
 * failure reproduces; VOLREG_FUZZ_RUNS raises the number of runs (and VOLREG_FUZZ_SEED picks
 * another seed) for long runs by hand.
 */


type Step = { kind: 'op'; op: Op } | { kind: 'restart' } | { kind: 'race'; a: Op; b: Op };

/** Two writes on one collection, often on the same unique key. */
const race = anyColl.chain((coll) => fc.tuple(writeOp(coll), writeOp(coll))).map(([a, b]): Step => ({ kind: 'race', a, b }));

const steps = fc.array(
  fc.oneof(
    { weight: 10, arbitrary: anyWrite.map((op): Step => ({ kind: 'op', op })) },
    { weight: 6, arbitrary: anyRead.map((op): Step => ({ kind: 'op', op })) },
    { weight: 2, arbitrary: race },
    { weight: 1, arbitrary: fc.constant<Step>({ kind: 'restart' }) },
  ),
  { minLength: 1, maxLength: 40 },
);

function plain(x: unknown): string {
  return JSON.stringify(x);
}

class Harness {
  engine!: RunningEngine;
  clients: MongoClient[] = [];
  constructor(private readonly dir: string) {}
  get db(): Db {
    return (this.clients[0] as MongoClient).db('model');
  }
  get other(): Db {
    return (this.clients[1] as MongoClient).db('model');
  }
  async start(): Promise<void> {
    // a journal of any size is worth a new snapshot: compaction runs between the steps too
    this.engine = await startTestEngine(this.dir, { compactJournalBytes: 1 });
    this.clients = [new MongoClient(this.engine.uri), new MongoClient(this.engine.uri)];
    for (const c of this.clients) await c.connect();
  }
  async stop(): Promise<void> {
    for (const c of this.clients) await c.close(true);
    await this.engine.close();
  }
}

async function checkContents(db: Db, model: Model, when: string): Promise<void> {
  const actual = plain(await engineContents(db));
  const expected = plain(model.contents());
  if (actual !== expected) throw new Error(`${when}: collections differ\n engine: ${actual}\n model:  ${expected}`);
}

/** Runs two writes at once from two clients: the result must be one of the two orders. */
async function runRace(h: Harness, model: Model, a: Op, b: Op): Promise<Model> {
  const [ra, rb] = await Promise.all([runOnEngine(h.db, a), runOnEngine(h.other, b)]);
  const actual = [canonical(a, ra), canonical(b, rb)].join(' | ');
  const tried: string[] = [];
  for (const [first, second] of [[a, b], [b, a]] as const) {
    const m = model.copy();
    const out = new Map<Op, Outcome>();
    out.set(first, runOnModel(m, first));
    out.set(second, runOnModel(m, second));
    const expected = [canonical(a, out.get(a) as Outcome), canonical(b, out.get(b) as Outcome)].join(' | ');
    if (expected === actual) return m;
    tried.push(expected);
  }
  throw new Error(`racing writes ${plain(a)} and ${plain(b)}: engine answered ${actual}, no order gives that (${tried.join(' / ')})`);
}

async function runSteps(h: Harness, list: Step[]): Promise<void> {
  let model = new Model();
  await emptyCollections(h.db);
  for (const [i, step] of list.entries()) {
    if (step.kind === 'restart') {
      await h.stop();
      await h.start();
      await checkContents(h.db, model, `after restart at step ${i}`);
      continue;
    }
    if (step.kind === 'race') {
      model = await runRace(h, model, step.a, step.b);
      await checkContents(h.db, model, `after race at step ${i}`);
      continue;
    }
    const expected = canonical(step.op, runOnModel(model, step.op));
    const actual = canonical(step.op, await runOnEngine(h.db, step.op));
    if (actual !== expected) throw new Error(`step ${i} ${plain(step.op)}\n engine: ${actual}\n model:  ${expected}`);
    if (!['find', 'count', 'distinct'].includes(step.op.kind)) await checkContents(h.db, model, `after step ${i}`);
  }
}

function fcOptions(numRuns: number): fc.Parameters<[Step[]]> {
  return { numRuns: fuzzRuns(numRuns), seed: fuzzSeed(0x5eed_0001), endOnFailure: false, includeErrorInReport: true };
}

test('random metadata operations, racing clients and clean restarts agree with the model', async (t) => {
  const h = new Harness(engineTempDir(t));
  await h.start();
  t.teardown(() => h.stop());
  await createIndexes(h.db);
  await t.notThrowsAsync(fc.assert(fc.asyncProperty(steps, (list) => runSteps(h, list)), fcOptions(60)));
});

// ---------------------------------------------------------------- kill -9

type CrashStep = { kind: 'op'; op: Op } | { kind: 'crash' } | { kind: 'crashDuring'; op: Op; delayMs: number };
const crashSteps = fc.array(
  fc.oneof(
    { weight: 8, arbitrary: anyWrite.map((op): CrashStep => ({ kind: 'op', op })) },
    { weight: 1, arbitrary: fc.constant<CrashStep>({ kind: 'crash' }) },
    { weight: 1, arbitrary: fc.record({ op: anyColl.chain(multiWriteOp), delayMs: fc.integer({ min: 0, max: 12 }) }).map((r): CrashStep => ({ kind: 'crashDuring', ...r })) },
  ),
  { minLength: 1, maxLength: 30 },
);

function unjournaled(op: Op): boolean {
  return op.kind === 'updateOne' && op.unjournaled;
}

/**
 * The state a write of many documents cut off by a crash may leave on top of `base`, if
 * `actual` is one: MongoDB makes each document's write atomic, not the command, so an ordered
 * insertMany may leave any prefix of its documents, and an updateMany any of its documents
 * updated and the others not.
 */
function partialWrite(base: Model, op: Op, actual: string): Model | undefined {
  if (op.kind === 'insertMany') {
    for (let n = 0; n <= op.docs.length; n++) {
      const m = base.copy();
      const out = runOnModel(m, { ...op, docs: op.docs.slice(0, n) });
      if (plain(m.contents()) === actual) return m;
      if ('error' in out) break;
    }
    return undefined;
  }
  if (op.kind !== 'updateMany') throw new Error(`not a write of many documents: ${op.kind}`);
  const found = JSON.parse(actual) as Record<string, Doc[]>;
  const m = base.copy();
  const coll = m.colls[op.coll] as ModelCollection;
  const mine = found[op.coll] ?? [];
  if (plain({ ...found, [op.coll]: [] }) !== plain({ ...m.contents(), [op.coll]: [] }) || mine.length !== coll.docs.length) return undefined;
  for (const [i, before] of coll.docs.entries()) {
    const now = mine[i] as Doc;
    if (plain(now) === plain(before)) continue;
    let after: Doc | undefined;
    try {
      after = matches(before, op.filter) ? applyUpdate(before, op.update as Update, false) : undefined;
    } catch (err) {
      if (!(err instanceof ModelError)) throw err;
    }
    if (!after || plain(after) !== plain(now)) return undefined;
  }
  coll.docs = mine;
  return m;
}

async function runCrashSteps(t: ExecutionContext, list: CrashStep[]): Promise<void> {
  const dir = engineTempDir(t);
  const spawn = (): Promise<EngineChild> => spawnEngineChild(dir, 'engine', { COMPACT_BYTES: '1' });
  let child: EngineChild = await spawn();
  let client = new MongoClient(uriOf(child), { serverSelectionTimeoutMS: 5000, retryWrites: false });
  const restart = async (): Promise<string> => {
    await kill9(child);
    await client.close(true);
    child = await spawn();
    client = new MongoClient(uriOf(child), { serverSelectionTimeoutMS: 5000, retryWrites: false });
    return plain(await engineContents(client.db('model')));
  };
  try {
    await createIndexes(client.db('model'));
    let model = new Model();
    // what a crash may leave: the state of the last journaled write, then each unjournaled one after it
    let durable: Model[] = [model.copy()];
    const acknowledged = (op: Op): void => {
      // a write that changed nothing appended nothing, so it flushed nothing either
      if (plain(model.contents()) === plain(durable[durable.length - 1]?.contents())) return;
      if (unjournaled(op)) durable.push(model.copy());
      else durable = [model.copy()];
    };
    for (const [i, step] of [...list, { kind: 'crash' } as CrashStep].entries()) {
      if (step.kind === 'crash') {
        const actual = await restart();
        const match = durable.find((m) => plain(m.contents()) === actual);
        if (!match) throw new Error(`after kill -9 at step ${i}: ${actual}\n is none of the states the acknowledged writes allow:\n ${durable.map((m) => plain(m.contents())).join('\n ')}`);
        model = match.copy();
        durable = [model.copy()];
        continue;
      }
      if (step.kind === 'crashDuring') {
        let answer: Outcome | undefined;
        const pending = runOnEngine(client.db('model'), step.op).then(
          (out) => void (answer = out),
          () => undefined, // the connection died with the engine: not acknowledged
        );
        await new Promise((r) => setTimeout(r, step.delayMs));
        const actual = await restart();
        await pending;
        let match: Model | undefined;
        if (answer) {
          // acknowledged before the kill: all of it is there
          const expected = canonical(step.op, runOnModel(model, step.op));
          if (canonical(step.op, answer) !== expected) throw new Error(`step ${i} ${plain(step.op)}\n engine: ${canonical(step.op, answer)}\n model:  ${expected}`);
          acknowledged(step.op);
          match = durable.find((m) => plain(m.contents()) === actual);
        } else {
          for (const base of durable) match ??= partialWrite(base, step.op, actual);
        }
        if (!match) throw new Error(`after kill -9 during step ${i} ${plain(step.op)} (${answer ? 'acknowledged' : 'not acknowledged'}): ${actual}\n is no state it may leave on top of:\n ${durable.map((m) => plain(m.contents())).join('\n ')}`);
        model = match.copy();
        durable = [model.copy()];
        continue;
      }
      const expected = canonical(step.op, runOnModel(model, step.op));
      const actual = canonical(step.op, await runOnEngine(client.db('model'), step.op));
      if (actual !== expected) throw new Error(`step ${i} ${plain(step.op)}\n engine: ${actual}\n model:  ${expected}`);
      acknowledged(step.op);
    }
  } finally {
    await client.close(true);
    await kill9(child);
  }
}

test('every write acknowledged before a kill -9 is there after the restart, and of one cut off only whole documents', async (t) => {
  t.timeout(Math.max(120_000, fuzzRuns(0) * 60_000));
  await t.notThrowsAsync(fc.assert(fc.asyncProperty(crashSteps, (list) => runCrashSteps(t, list)), { numRuns: fuzzRuns(4), seed: fuzzSeed(0x5eed_0002), endOnFailure: false, includeErrorInReport: true }));
});

// ---------------------------------------------------------------- counterexamples found

test('an upsert appends the fields of $set and $setOnInsert in the order of their names, as mongod 5.0+ does', async (t) => {
  const dir = engineTempDir(t);
  const engine = await startTestEngine(dir);
  t.teardown(() => engine.close());
  const c = new MongoClient(engine.uri);
  await c.connect();
  t.teardown(() => c.close(true));
  const snaps = c.db('model').collection('snaps');
  await snaps.updateOne({ repo_id: 'a', tag: 't1' }, { $set: { updated: 1 }, $setOnInsert: { created: 0, _id: 0 as never } }, { upsert: true });
  t.deepEqual(Object.keys((await snaps.findOne({ _id: 0 as never })) ?? {}), ['_id', 'repo_id', 'tag', 'created', 'updated']);
  await snaps.updateOne({ _id: 0 as never }, { $set: { z: 1, b: 1 }, $inc: { m: 1 } });
  t.deepEqual(Object.keys((await snaps.findOne({ _id: 0 as never })) ?? {}), ['_id', 'repo_id', 'tag', 'created', 'updated', 'b', 'm', 'z']);
});

test('an upsert whose filter is a one-clause $or inserts that clause\'s equality, as mongod does', async (t) => {
  const engine = await startTestEngine();
  t.teardown(() => engine.close());
  const c = new MongoClient(engine.uri);
  await c.connect();
  t.teardown(() => c.close(true));
  const coll = c.db('model').collection('or_upsert');
  const r = await coll.updateOne({ $or: [{ digest: 'd0' }] }, { $set: { size: 1 } }, { upsert: true });
  t.deepEqual(await coll.findOne({ _id: r.upsertedId as never }, { projection: { _id: 0 } }), { digest: 'd0', size: 1 });
  // two clauses say nothing about the fields: none is inserted
  const r2 = await coll.updateOne({ $or: [{ digest: 'd1' }, { digest: 'd2' }] }, { $set: { size: 2 } }, { upsert: true });
  t.deepEqual(await coll.findOne({ _id: r2.upsertedId as never }, { projection: { _id: 0 } }), { size: 2 });
});

test('racing writers of one unique key from several clients: exactly one creates it, the others meet it', async (t) => {
  const engine = await startTestEngine();
  const clients = await Promise.all(
    Array.from({ length: 4 }, async () => {
      const c = new MongoClient(engine.uri);
      await c.connect();
      return c;
    }),
  );
  t.teardown(async () => {
    for (const c of clients) await c.close(true);
    await engine.close();
  });
  await createIndexes((clients[0] as MongoClient).db('race'));
  const writer = fc.record({ client: fc.nat(clients.length - 1), kind: fc.constantFrom('insert', 'upsert', 'findOneAndUpdate') });
  await t.notThrowsAsync(fc.assert(
    fc.asyncProperty(fc.array(writer, { minLength: 2, maxLength: 12 }), async (writers) => {
      const db = (i: number): Db => (clients[i] as MongoClient).db('race');
      await db(0).collection('tags').deleteMany({});
      const key = { name: 'x', schema_version: 1, repo_id: 'a' };
      const outcomes = await Promise.all(
        writers.map(async (w, i): Promise<'created' | 'met' | 'duplicate'> => {
          const tags = db(w.client).collection('tags');
          try {
            if (w.kind === 'insert') {
              await tags.insertOne({ _id: i as never, ...key, manifest_digest: `d${i}` });
              return 'created';
            }
            if (w.kind === 'upsert') {
              const r = await tags.updateOne(key, { $set: { manifest_digest: `d${i}` }, $setOnInsert: { _id: i as never } }, { upsert: true });
              return r.upsertedCount === 1 ? 'created' : 'met';
            }
            const before = await tags.findOneAndUpdate(key, { $set: { manifest_digest: `d${i}` }, $setOnInsert: { _id: i as never } }, { upsert: true, returnDocument: 'before' });
            return before === null ? 'created' : 'met';
          } catch (err) {
            if ((err as { code?: unknown }).code === 11000) return 'duplicate';
            throw err;
          }
        }),
      );
      const docs = await db(0).collection('tags').find({}).toArray();
      const creators = outcomes.flatMap((o, i) => (o === 'created' ? [i] : []));
      if (docs.length !== 1 || creators.length !== 1 || (docs[0]?.['_id'] as unknown) !== creators[0]) {
        throw new Error(`outcomes ${JSON.stringify(outcomes)}, stored ${JSON.stringify(docs)}`);
      }
      // only a plain insert meets an existing key with E11000; upserts update it
      if (outcomes.some((o, i) => o === 'duplicate' && writers[i]?.kind !== 'insert')) throw new Error(`an upsert failed: ${JSON.stringify(outcomes)}`);
    }),
    { numRuns: fuzzRuns(40), seed: fuzzSeed(0x5eed_0003), endOnFailure: false, includeErrorInReport: true },
  ));
});
