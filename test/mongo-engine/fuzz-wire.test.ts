import test from 'ava';
import fc from 'fast-check';
import fs from 'node:fs';
import net from 'node:net';
import { Binary, BSON, BSONRegExp, BSONSymbol, Code, DBRef, Decimal128, Double, Int32, Long, MaxKey, MinKey, MongoClient, MongoServerError, ObjectId, Timestamp, type Document } from 'mongodb';
import { crc32c } from '../../src/mongo-engine/crc32c.ts';
import type { RunningEngine } from '../../src/mongo-engine/index.ts';
import { fuzzRuns, fuzzSeed } from '../helpers/fuzz-settings.ts';
import { engineTempDir, startTestEngine } from '../helpers/mongo.ts';
import { kill9, spawnEngineChild, uriOf } from './fixtures/child-process.ts';

/**
 * Hostile wire input, generated: frames with wrong lengths, unknown opcodes, bad OP_MSG
 * sections and flags, bad checksums, truncated and corrupt BSON, deep nesting, OP_QUERY and
 * OP_COMPRESSED, many connections at once. Whatever arrives, the engine answers with
 * well-formed error replies or closes that one connection; it neither crashes nor hangs, and
 * other clients' data and operations are untouched. Fixed seeds; VOLREG_FUZZ_RUNS raises the
 * number of runs, VOLREG_FUZZ_SEED picks another seed.
 */


const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_COMPRESSED = 2012;
const OP_MSG = 2013;

function frame(opCode: number, payload: Buffer, requestId = 7): Buffer {
  const h = Buffer.alloc(16);
  h.writeInt32LE(16 + payload.length, 0);
  h.writeInt32LE(requestId, 4);
  h.writeInt32LE(0, 8);
  h.writeInt32LE(opCode, 12);
  return Buffer.concat([h, payload]);
}

function opMsgPayload(body: Document, sequences: Array<[string, Document[]]> = [], flags = 0): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from([0]), Buffer.from(BSON.serialize(body))];
  (parts[0] as Buffer).writeUInt32LE(flags >>> 0);
  for (const [name, docs] of sequences) {
    const docBytes = docs.map((d) => Buffer.from(BSON.serialize(d)));
    const nameBytes = Buffer.from(name + '\0');
    const size = Buffer.alloc(4);
    size.writeInt32LE(4 + nameBytes.length + docBytes.reduce((a, b) => a + b.length, 0));
    parts.push(Buffer.from([1]), size, nameBytes, ...docBytes);
  }
  return Buffer.concat(parts);
}

function withChecksum(f: Buffer): Buffer {
  const out = Buffer.concat([f, Buffer.alloc(4)]);
  out.writeInt32LE(out.length, 0);
  out.writeUInt32LE(out.readUInt32LE(16) | 1, 16);
  out.writeUInt32LE(crc32c(out, 0, out.length - 4), out.length - 4);
  return out;
}

/** A document nested `depth` levels deep, written byte by byte (no serializer recursion). */
function nestedBson(depth: number): Buffer {
  // level: 0x03 'a' 0x00 <int32 len> ... 0x00
  const inner = Buffer.from(BSON.serialize({ v: 1 }));
  let size = inner.length;
  const sizes: number[] = [];
  for (let i = 0; i < depth; i++) {
    size = 4 + 3 + size + 1;
    sizes.push(size);
  }
  const out = Buffer.alloc(size);
  let pos = 0;
  for (let i = depth - 1; i >= 0; i--) {
    out.writeInt32LE(sizes[i] as number, pos);
    out[pos + 4] = 0x03;
    out[pos + 5] = 0x61;
    out[pos + 6] = 0;
    pos += 7;
  }
  inner.copy(out, pos);
  pos += inner.length;
  out.fill(0, pos);
  return out;
}

/** Well-formed messages the mutations below start from. */
const BASES: Buffer[] = [
  frame(OP_MSG, opMsgPayload({ ping: 1, $db: 'admin' })),
  frame(OP_MSG, opMsgPayload({ insert: 'victims', $db: 'fuzz' }, [['documents', [{ _id: 'fuzz-1', a: 'x' }, { _id: 'fuzz-2', b: [1, 2, { c: null }] }]]])),
  frame(OP_MSG, opMsgPayload({ find: 'sentinel', filter: { n: { $gte: 0 } }, $db: 'fuzz' })),
  frame(OP_MSG, opMsgPayload({ update: 'victims', updates: [{ q: { _id: 'fuzz-1' }, u: { $set: { a: 'y' } }, upsert: true }], $db: 'fuzz' })),
  frame(OP_MSG, opMsgPayload({ ping: 1, $db: 'admin' }, [], 2)),
  withChecksum(frame(OP_MSG, opMsgPayload({ hello: 1, $db: 'admin' }))),
  frame(OP_QUERY, Buffer.concat([Buffer.alloc(4), Buffer.from('admin.$cmd\0'), Buffer.alloc(4), Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from(BSON.serialize({ isMaster: 1 }))])),
  frame(OP_COMPRESSED, Buffer.concat([Buffer.from([0xdd, 0x07, 0, 0]), Buffer.from([0x40, 0, 0, 0]), Buffer.from([2]), Buffer.alloc(12)])),
  frame(OP_MSG, Buffer.concat([Buffer.alloc(4), Buffer.from([0]), nestedBson(40)])),
];

type Mutation =
  | { kind: 'length'; value: number }
  | { kind: 'opcode'; value: number }
  | { kind: 'flags'; value: number }
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'int32'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'sectionKind'; value: number };

const interesting32 = fc.oneof(fc.constantFrom(0, -1, 1, 4, 5, 15, 16, 17, 20, 21, 0x7fffffff, -0x80000000, 48_000_000, 47_999_999, 16 * 1024 * 1024), fc.integer({ min: -0x80000000, max: 0x7fffffff }));
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  interesting32.map((value): Mutation => ({ kind: 'length', value })),
  fc.oneof(fc.constantFrom(0, 1, 2001, 2002, 2004, 2005, 2006, 2010, 2011, 2012, 2013, 2014), fc.integer()).map((value): Mutation => ({ kind: 'opcode', value })),
  fc.oneof(fc.constantFrom(1, 2, 3, 1 << 16, 4, 0x80000000), fc.integer({ min: 0, max: 0xffffffff })).map((value): Mutation => ({ kind: 'flags', value })),
  fc.record({ at: fc.nat(400), value: fc.integer({ min: 0, max: 255 }) }).map((r): Mutation => ({ kind: 'byte', ...r })),
  fc.record({ at: fc.nat(400), value: interesting32 }).map((r): Mutation => ({ kind: 'int32', ...r })),
  fc.nat(400).map((at): Mutation => ({ kind: 'truncate', at })),
  fc.record({ at: fc.nat(400), bytes: fc.uint8Array({ minLength: 1, maxLength: 24 }) }).map((r): Mutation => ({ kind: 'insert', ...r })),
  fc.integer({ min: 0, max: 255 }).map((value): Mutation => ({ kind: 'sectionKind', value })),
);

function mutate(base: Buffer, m: Mutation): Buffer {
  const f = Buffer.from(base);
  const at = (n: number): number => n % Math.max(1, f.length);
  switch (m.kind) {
    case 'length':
      if (f.length >= 4) f.writeInt32LE(m.value, 0);
      return f;
    case 'opcode':
      if (f.length >= 16) f.writeInt32LE(m.value | 0, 12);
      return f;
    case 'flags':
      if (f.length >= 20) f.writeUInt32LE(m.value >>> 0, 16);
      return f;
    case 'byte':
      f[at(m.at)] = m.value;
      return f;
    case 'int32': {
      const p = Math.min(at(m.at), f.length - 4);
      if (p >= 0) f.writeInt32LE(m.value, p);
      return f;
    }
    case 'truncate':
      return f.subarray(0, at(m.at));
    case 'insert':
      return Buffer.concat([f.subarray(0, at(m.at)), m.bytes, f.subarray(at(m.at))]);
    case 'sectionKind':
      if (f.length > 20) f[20] = m.value;
      return f;
  }
}

/** What a client sends on one connection: messages (each a base, mutated), cut into chunks. */
const sending = fc.record({
  messages: fc.array(
    fc.record({
      // an index into BASES, or a nesting depth for a command that deep (numbers keep reports short)
      base: fc.oneof(fc.nat(BASES.length - 1), fc.integer({ min: 60, max: 3000 }).map((depth) => ({ depth }))),
      mutations: fc.array(mutation, { maxLength: 3 }),
      fixLength: fc.boolean(),
    }),
    { minLength: 1, maxLength: 4 },
  ),
  chunk: fc.integer({ min: 1, max: 4096 }),
});

function baseFrame(base: number | { depth: number }): Buffer {
  if (typeof base === 'number') return BASES[base] as Buffer;
  return frame(OP_MSG, Buffer.concat([Buffer.alloc(4), Buffer.from([0]), nestedBson(base.depth)]));
}

function bytesOf(s: { messages: Array<{ base: number | { depth: number }; mutations: Mutation[]; fixLength: boolean }> }): Buffer {
  return Buffer.concat(
    s.messages.map(({ base, mutations, fixLength }) => {
      let f = mutations.reduce(mutate, baseFrame(base));
      // keep the claimed length honest now and then, so the corruption reaches the parser
      if (fixLength && f.length >= 4 && !mutations.some((m) => m.kind === 'length')) {
        f = Buffer.from(f);
        f.writeInt32LE(f.length, 0);
      }
      return f;
    }),
  );
}

interface Exchange {
  replies: Buffer;
  closedBy: 'server' | 'eof';
}

/**
 * Sends `bytes` in chunks, then half-closes: the engine must answer what it can and close the
 * connection (end of input) within the deadline.
 */
function exchange(port: number, bytes: Buffer, chunk: number, deadlineMs = 10_000): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let serverClosed = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the engine neither answered nor closed within ${deadlineMs} ms`));
    }, deadlineMs);
    socket.on('data', (d) => got.push(d));
    socket.on('error', () => {
      serverClosed = true;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ replies: Buffer.concat(got), closedBy: serverClosed ? 'server' : 'eof' });
    });
    socket.on('connect', () => {
      for (let i = 0; i < bytes.length; i += chunk) socket.write(bytes.subarray(i, i + chunk));
      socket.end();
    });
  });
}

/** Every reply is a whole, well-formed OP_MSG or OP_REPLY whose document says ok. */
function checkReplies(buf: Buffer): void {
  let pos = 0;
  while (pos < buf.length) {
    if (buf.length - pos < 16) throw new Error(`a reply cut short: ${buf.length - pos} bytes`);
    const len = buf.readInt32LE(pos);
    if (len < 16 || pos + len > buf.length) throw new Error(`a reply with length ${len} (${buf.length - pos} bytes left)`);
    const op = buf.readInt32LE(pos + 12);
    let doc: Document;
    if (op === OP_MSG) doc = BSON.deserialize(buf.subarray(pos + 21, pos + len));
    else if (op === OP_REPLY) doc = BSON.deserialize(buf.subarray(pos + 36, pos + len));
    else throw new Error(`a reply with opCode ${op}`);
    if (!('ok' in doc)) throw new Error(`a reply without ok: ${JSON.stringify(doc)}`);
    pos += len;
  }
}

let engine: RunningEngine;
let client: MongoClient;
const SENTINEL = Array.from({ length: 50 }, (_, n) => ({ _id: n, n, text: `row ${n}`, nested: { list: [n, String(n)] } }));

test.before(async () => {
  engine = await startTestEngine();
  client = new MongoClient(engine.uri);
  await client.connect();
  await client.db('fuzz').collection('sentinel').insertMany(SENTINEL.map((d) => ({ ...d })) as never[]);
});
test.after.always(async () => {
  await client?.close();
  await engine?.close();
});

async function sentinelIntact(): Promise<void> {
  const docs = await client.db('fuzz').collection('sentinel').find({}).sort({ _id: 1 }).toArray();
  if (JSON.stringify(docs) !== JSON.stringify(SENTINEL)) throw new Error('another client\'s data changed');
}

async function connectionsNow(): Promise<number> {
  const status = await client.db('admin').command({ serverStatus: 1 });
  return (status['connections'] as Document)['current'] as number;
}

test.serial('whatever one connection sends, the engine answers well-formed replies or closes it, and stays up', async (t) => {
  const connections = await connectionsNow();
  await fc.assert(
    fc.asyncProperty(sending, async (s) => {
      const { replies } = await exchange(engine.port as number, bytesOf(s), s.chunk);
      checkReplies(replies);
      await client.db('admin').command({ ping: 1 });
      await sentinelIntact();
    }),
    { numRuns: fuzzRuns(300), seed: fuzzSeed(0x5eed_0101), endOnFailure: false, includeErrorInReport: true },
  );
  // every connection the garbage opened is gone again
  t.is(await connectionsNow(), connections);
});

test.serial('many connections sending garbage at once leave the others working', async (t) => {
  await t.notThrowsAsync(fc.assert(
    fc.asyncProperty(fc.array(sending, { minLength: 8, maxLength: 24 }), async (all) => {
      const writer = client.db('fuzz').collection('concurrent');
      const stamp = `${Date.now()}-${Math.random()}`;
      const [results] = await Promise.all([
        Promise.all(all.map((s) => exchange(engine.port as number, bytesOf(s), s.chunk))),
        (async () => {
          for (let i = 0; i < 20; i++) await writer.insertOne({ stamp, i });
        })(),
      ]);
      for (const r of results) checkReplies(r.replies);
      const mine = await writer.find({ stamp }).sort({ i: 1 }).toArray();
      if (mine.map((d) => d['i']).join() !== Array.from({ length: 20 }, (_, i) => i).join()) throw new Error('a concurrent writer lost a write');
      await sentinelIntact();
    }),
    { numRuns: fuzzRuns(15, 0.1), seed: fuzzSeed(0x5eed_0102), endOnFailure: false, includeErrorInReport: true },
  ));
});

/** Resident memory of a process, from /proc (Linux). */
function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

test.serial('lengths that claim much and deliver little allocate nothing of what they claim', async (t) => {
  const dir = engineTempDir(t);
  const child = await spawnEngineChild(dir);
  t.teardown(() => kill9(child));
  const port = Number(/:(\d+)\//.exec(uriOf(child))?.[1]);
  const pid = child.proc.pid as number;
  const before = rssBytes(pid);
  const claims = [
    // a frame claiming the largest message allowed
    (() => {
      const f = frame(OP_MSG, opMsgPayload({ ping: 1, $db: 'admin' }));
      f.writeInt32LE(47_999_999, 0);
      return f;
    })(),
    // a body section claiming 16 MiB, and a document sequence claiming 2 GiB, in honest frames
    (() => {
      const f = frame(OP_MSG, opMsgPayload({ ping: 1, $db: 'admin' }));
      f.writeInt32LE(16 * 1024 * 1024, 21);
      return f;
    })(),
    frame(OP_MSG, Buffer.concat([opMsgPayload({ ping: 1, $db: 'admin' }), Buffer.from([1, 0xff, 0xff, 0xff, 0x7f]), Buffer.from('documents\0')])),
  ];
  const sockets: net.Socket[] = [];
  for (let i = 0; i < 60; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    await new Promise((resolve) => s.once('connect', resolve));
    s.write(claims[i % claims.length] as Buffer);
    sockets.push(s);
  }
  await new Promise((r) => setTimeout(r, 500));
  const grown = rssBytes(pid) - before;
  // 20 connections each claiming 48 MB would be 960 MB
  t.true(grown < 100 * 1024 * 1024, `the engine grew by ${grown} bytes`);
  await withPing(uriOf(child), t);
  for (const s of sockets) s.destroy();
});

async function withPing(uri: string, t: { is(a: unknown, b: unknown): void }): Promise<void> {
  const c = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
  try {
    const r = await c.db('admin').command({ ping: 1 });
    t.is(r['ok'], 1);
  } finally {
    await c.close(true);
  }
}

test.serial('a client that sends requests without reading the replies holds back the engine, not its memory', async (t) => {
  const dir = engineTempDir(t);
  const child = await spawnEngineChild(dir);
  t.teardown(() => kill9(child));
  const uri = uriOf(child);
  const c = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
  await c.connect();
  t.teardown(() => c.close(true));
  await c.db('fuzz').collection('big').insertMany(Array.from({ length: 10 }, (_, i) => ({ _id: i, blob: 'x'.repeat(100_000) })) as never[]);
  const pid = child.proc.pid as number;
  const before = rssBytes(pid);
  // 300 finds of 60 bytes each, every reply 1 MB
  const find = frame(OP_MSG, opMsgPayload({ find: 'big', filter: {}, $db: 'fuzz' }));
  const s = net.connect(Number(/:(\d+)\//.exec(uri)?.[1]), '127.0.0.1');
  await new Promise((resolve) => s.once('connect', resolve));
  s.pause();
  for (let i = 0; i < 300; i++) s.write(find);
  await new Promise((r) => setTimeout(r, 2000));
  const grown = rssBytes(pid) - before;
  t.true(grown < 100 * 1024 * 1024, `the engine grew by ${grown} bytes`);
  // other clients are served meanwhile, and the reader still gets every reply once it reads
  await withPing(uri, t);
  let bytes = 0;
  s.on('data', (d: Buffer) => (bytes += d.length));
  s.resume();
  // every reply is over 1 MB: wait for all 300 of them, 30 s at most
  for (const until = Date.now() + 30_000; bytes < 300 * 1_000_000 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
  s.destroy();
  t.true(bytes >= 300 * 1_000_000, `only ${bytes} bytes of replies arrived`);
});

/** `{a: {a: ... {v: 1}}}` with `levels` levels of `a`: its `v` is at depth `levels + 1`. */
function nestedDoc(levels: number): Document {
  let d: Document = { v: 1 };
  for (let i = 0; i < levels; i++) d = { a: d };
  return d;
}

test.serial('documents nested deeper than mongod stores are refused with Overflow, and nothing of them is stored', async (t) => {
  const coll = client.db('fuzz').collection('deep');
  await coll.insertOne({ _id: 'base' as never, d: 1 });
  const MAX = 180;
  await t.notThrowsAsync(fc.assert(
    fc.asyncProperty(fc.oneof(fc.integer({ min: MAX - 3, max: MAX + 2 }), fc.integer({ min: 1, max: 4000 })), fc.boolean(), async (levels, viaUpdate) => {
      // stored as the value of field `d` (depth 1), so `v` lands at depth levels + 2
      const deepest = levels + 2;
      const before = await coll.find({}).sort({ _id: 1 }).toArray();
      let code: unknown;
      try {
        if (viaUpdate) await coll.updateOne({ _id: 'base' as never }, { $set: { d: nestedDoc(levels) } });
        else await coll.insertOne({ _id: `deep-${levels}` as never, d: nestedDoc(levels) });
      } catch (err) {
        code = (err as { code?: unknown }).code;
      }
      if (deepest <= MAX) {
        if (code !== undefined) throw new Error(`depth ${deepest} refused (${String(code)})`);
        await coll.deleteMany({ _id: { $ne: 'base' as never } });
        await coll.updateOne({ _id: 'base' as never }, { $set: { d: 1 } });
      } else {
        if (code !== 15) throw new Error(`depth ${deepest}: expected Overflow (15), got ${String(code)}`);
        const after = await coll.find({}).sort({ _id: 1 }).toArray();
        if (JSON.stringify(after) !== JSON.stringify(before)) throw new Error(`depth ${deepest}: a refused write changed the collection`);
      }
    }),
    { numRuns: fuzzRuns(40, 0.1), seed: fuzzSeed(0x5eed_0103), endOnFailure: false, includeErrorInReport: true },
  ));
});

test.serial('commands nested deeper than mongod takes are refused with Overflow, however deep, and the connection serves on', async (t) => {
  const coll = client.db('fuzz').collection('deep-commands');
  await coll.insertOne({ _id: 'x' as never, a: 1 });
  const MAX = 200;
  const codeOf = (run: Promise<unknown>): Promise<unknown> =>
    run.then(
      () => undefined,
      (err: unknown) => (err as { code?: unknown }).code,
    );
  // a find's filter `{a: {a: {a: ... {v: 1}}}}`, `levels` levels below the filter's own: `v` sits at
  // depth levels + 3 of the command (filter 1, its `a` 2, ...)
  for (const levels of [MAX - 5, MAX - 4, MAX - 3, MAX - 2]) {
    t.is(await codeOf(coll.find({ a: nestedDoc(levels) }).toArray()), levels + 3 > MAX ? 15 : undefined, `find nested to depth ${levels + 3}`);
  }
  // other commands, well within the limit and far past it (where recursion would overflow the stack)
  for (const levels of [150, MAX + 50, 5000, 9000]) {
    const runs: Array<[string, Promise<unknown>]> = [
      ['aggregate', coll.aggregate([{ $match: { a: nestedDoc(levels) } }]).toArray()],
      ['count', coll.countDocuments({ $and: [nestedDoc(levels)] })],
      ['update', coll.updateOne({ _id: 'x' as never }, { $set: { b: 1 }, $setOnInsert: { c: nestedDoc(levels) } })],
      ['delete', coll.deleteMany({ a: nestedDoc(levels) })],
    ];
    for (const [what, run] of runs) t.is(await codeOf(run), levels > MAX ? 15 : undefined, `${what} with ${levels} levels`);
  }
  t.is((await client.db('fuzz').command({ ping: 1 })).ok, 1);
  t.deepEqual(await coll.find({}).toArray(), [{ _id: 'x', a: 1, b: 1 }]);
});

/** Values of every BSON type, edge numbers, operator-like and dotted names, empty containers. */
const oddValue = fc.constantFrom<unknown>(
  new MinKey(), new MaxKey(), new Code('x'), new Code('x', { a: 1 }), new DBRef('odd', 1 as never), Decimal128.fromString('1.5'), new Double(NaN), new Double(-0),
  Long.fromNumber(2 ** 53 + 2), new Int32(7), new Timestamp({ t: 1, i: 1 }), new Binary(Buffer.from('ab'), 4), new BSONRegExp('a', 'i'), new BSONSymbol('s'),
  new ObjectId('000000000000000000000001'), new Date(0), new Date(NaN), null, undefined, [], {}, [[]], { $x: 1 }, '', 'a.b', '$a', true, Infinity, -1, 2 ** 31, 1e308,
);
const oddTree: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    oddValue,
    fc.array(tie('v'), { maxLength: 2 }),
    fc.dictionary(
      fc.constantFrom('a', 'b', '$in', '$gt', '$exists', '$set', '$inc', '$push', '$each', '$elemMatch', '$size', '$type', '$ne', '$or', '$and', 'o.p', 'arr.0', '_id', '$', '$[]', '$pull', '$max', '$slice', '$sort'),
      tie('v'),
      { maxKeys: 3 },
    ),
  ),
})).v;
const oddCommand = fc.oneof(
  fc.record({ find: fc.constant('odd'), filter: oddTree, sort: oddTree, projection: oddTree, skip: oddTree, limit: oddTree, batchSize: oddTree }, { requiredKeys: ['find'] }),
  fc.record({ update: fc.constant('odd'), updates: fc.array(fc.record({ q: oddTree, u: oddTree, upsert: oddTree, multi: oddTree }, { requiredKeys: ['q', 'u'] }), { maxLength: 2 }) }),
  fc.record({ insert: fc.constant('odd'), documents: fc.array(oddTree, { maxLength: 2 }) }),
  fc.record({ delete: fc.constant('odd'), deletes: fc.array(fc.record({ q: oddTree, limit: oddTree }), { maxLength: 2 }) }),
  fc.record({ findAndModify: fc.constant('odd'), query: oddTree, update: oddTree, remove: oddTree, new: oddTree, upsert: oddTree, fields: oddTree, sort: oddTree }, { requiredKeys: ['findAndModify'] }),
  fc.record({ count: fc.constant('odd'), query: oddTree }, { requiredKeys: ['count'] }),
  fc.record({ distinct: fc.constant('odd'), key: oddTree, query: oddTree }, { requiredKeys: ['distinct'] }),
  fc.record({ aggregate: fc.constant('odd'), pipeline: oddTree, cursor: fc.constant({}) }),
  fc.record({ createIndexes: fc.constant('odd'), indexes: oddTree }),
  fc.record({ getMore: oddTree, collection: fc.constant('odd') }),
);

test.serial('well-framed commands full of unusual BSON values get an answer or a specific error, never an internal one', async (t) => {
  const db = client.db('fuzz');
  await db.collection('odd').insertMany([{ _id: 1, a: 1, b: 'x', arr: [1, 2], o: { p: 1 } }, { _id: 2, a: 'y' }] as never[]);
  await db.collection('odd').createIndex({ a: 1 });
  await t.notThrowsAsync(fc.assert(
    fc.asyncProperty(oddCommand, async (command) => {
      try {
        await db.command(command as Document);
      } catch (err) {
        if (!(err instanceof MongoServerError) || err.code === 1 || err.code === undefined) throw err;
      }
      await sentinelIntact();
    }),
    { numRuns: fuzzRuns(300), seed: fuzzSeed(0x5eed_0104), endOnFailure: false, includeErrorInReport: true },
  ));
});
