import test from 'ava';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { BSON, MongoClient, type Document } from 'mongodb';
import { startTestEngine } from '../helpers/mongo.ts';
import type { RunningEngine } from '../../src/mongo-engine/index.ts';
import { crc32c } from '../../src/mongo-engine/crc32c.ts';

/**
 * Wire-level behaviour of the engine, spoken with raw sockets: OP_MSG sections and checksum,
 * moreToCome, the legacy OP_QUERY handshake, OP_COMPRESSED refusal, framing across chunks,
 * size limits, unix sockets and cursor cleanup on disconnect.
 */

let engine: RunningEngine;
test.before(async () => {
  engine = await startTestEngine();
});
test.after.always(async () => {
  await engine?.close();
});

const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_COMPRESSED = 2012;
const OP_MSG = 2013;
let requestId = 100;

function header(length: number, opCode: number, reqId: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeInt32LE(length, 0);
  h.writeInt32LE(reqId, 4);
  h.writeInt32LE(0, 8);
  h.writeInt32LE(opCode, 12);
  return h;
}

interface MsgOptions {
  flags?: number;
  sequences?: Array<[string, Document[]]>;
  checksum?: boolean;
  corruptChecksum?: boolean;
}

function opMsg(body: Document, opts: MsgOptions = {}): { frame: Buffer; id: number } {
  const id = requestId++;
  const parts: Buffer[] = [Buffer.from([0]), Buffer.from(BSON.serialize(body))];
  for (const [name, docs] of opts.sequences ?? []) {
    const docBytes = docs.map((d) => Buffer.from(BSON.serialize(d)));
    const nameBytes = Buffer.from(name + '\0');
    const size = Buffer.alloc(4);
    size.writeInt32LE(4 + nameBytes.length + docBytes.reduce((a, b) => a + b.length, 0));
    parts.push(Buffer.from([1]), size, nameBytes, ...docBytes);
  }
  let flags = opts.flags ?? 0;
  if (opts.checksum) flags |= 1;
  const flagBuf = Buffer.alloc(4);
  flagBuf.writeUInt32LE(flags >>> 0);
  const payload = Buffer.concat([flagBuf, ...parts]);
  const total = 16 + payload.length + (opts.checksum ? 4 : 0);
  let frame = Buffer.concat([header(total, OP_MSG, id), payload]);
  if (opts.checksum) {
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE((crc32c(frame) ^ (opts.corruptChecksum ? 1 : 0)) >>> 0);
    frame = Buffer.concat([frame, crc]);
  }
  return { frame, id };
}

function opQuery(collection: string, query: Document): { frame: Buffer; id: number } {
  const id = requestId++;
  const body = Buffer.concat([
    Buffer.alloc(4), // flags
    Buffer.from(collection + '\0'),
    Buffer.alloc(4), // numberToSkip
    Buffer.from([0xff, 0xff, 0xff, 0xff]), // numberToReturn -1
    Buffer.from(BSON.serialize(query)),
  ]);
  return { frame: Buffer.concat([header(16 + body.length, OP_QUERY, id), body]), id };
}

interface Reply {
  opCode: number;
  responseTo: number;
  flags: number;
  doc: Document;
}

class RawClient {
  private buf = Buffer.alloc(0);
  private waiting: Array<(r: Reply) => void> = [];
  private unclaimed: Reply[] = [];
  readonly closed: Promise<void>;
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= this.buf.readInt32LE(0)) {
        const len = this.buf.readInt32LE(0);
        const frame = this.buf.subarray(0, len);
        this.buf = this.buf.subarray(len);
        const opCode = frame.readInt32LE(12);
        const responseTo = frame.readInt32LE(8);
        let reply: Reply;
        if (opCode === OP_MSG) reply = { opCode, responseTo, flags: frame.readUInt32LE(16), doc: BSON.deserialize(frame.subarray(21)) };
        else reply = { opCode, responseTo, flags: frame.readInt32LE(16), doc: BSON.deserialize(frame.subarray(36)) };
        const waiter = this.waiting.shift();
        if (waiter) waiter(reply);
        else this.unclaimed.push(reply);
      }
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }
  static connect(target: { port: number } | { path: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in target ? net.connect(target.path) : net.connect(target.port, '127.0.0.1');
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }
  next(timeoutMs = 2000): Promise<Reply | 'timeout'> {
    const ready = this.unclaimed.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = this.waiting.filter((f) => f !== done);
        resolve('timeout');
      }, timeoutMs);
      const done = (r: Reply): void => {
        clearTimeout(timer);
        resolve(r);
      };
      this.waiting.push(done);
    });
  }
  send(buf: Buffer): void {
    this.socket.write(buf);
  }
  async command(body: Document, opts?: MsgOptions): Promise<Document> {
    const { frame, id } = opMsg(body, opts);
    this.send(frame);
    const r = await this.next();
    if (r === 'timeout') throw new Error('no reply');
    if (r.responseTo !== id) throw new Error(`reply to ${r.responseTo}, expected ${id}`);
    return r.doc;
  }
  close(): void {
    this.socket.destroy();
  }
}

const port = (): { port: number } => ({ port: engine.port as number });

test('hello over OP_MSG describes a standalone mongod 7.0', async (t) => {
  const c = await RawClient.connect(port());
  const hello = await c.command({ hello: 1, $db: 'admin' });
  t.is(hello['isWritablePrimary'], true);
  t.is(hello['maxWireVersion'], 21);
  t.is(hello['minWireVersion'], 0);
  t.is(hello['logicalSessionTimeoutMinutes'], 30);
  t.is(hello['maxBsonObjectSize'], 16777216);
  t.is(hello['maxMessageSizeBytes'], 48000000);
  t.is(hello['maxWriteBatchSize'], 100000);
  t.is(hello['readOnly'], false);
  t.true(hello['localTime'] instanceof Date);
  t.is(typeof hello['connectionId'], 'number');
  t.is(hello['setName'], undefined);
  t.is(hello['compression'], undefined);
  t.is(hello['ok'], 1);
  c.close();
});

test('legacy OP_QUERY isMaster on admin.$cmd is answered with OP_REPLY', async (t) => {
  const c = await RawClient.connect(port());
  const { frame, id } = opQuery('admin.$cmd', { isMaster: 1, helloOk: true, client: { driver: { name: 'raw', version: '0' } } });
  c.send(frame);
  const r = await c.next();
  t.not(r, 'timeout');
  if (r === 'timeout') return;
  t.is(r.opCode, OP_REPLY);
  t.is(r.responseTo, id);
  t.is(r.doc['ismaster'], true);
  t.is(r.doc['helloOk'], true);
  t.is(r.doc['maxWireVersion'], 21);
  c.close();
});

test('kind-1 document sequences are merged into the command', async (t) => {
  const c = await RawClient.connect(port());
  const reply = await c.command({ insert: 'seq', $db: 'wire' }, { sequences: [['documents', [{ _id: 1 }, { _id: 2 }, { _id: 3 }]]] });
  t.is(reply['n'], 3);
  const found = await c.command({ find: 'seq', filter: {}, $db: 'wire' });
  t.is(found['cursor'].firstBatch.length, 3);
  c.close();
});

test('a valid CRC-32C checksum is accepted; a wrong one closes the connection', async (t) => {
  const c = await RawClient.connect(port());
  const ok = await c.command({ ping: 1, $db: 'admin' }, { checksum: true });
  t.is(ok['ok'], 1);
  const { frame } = opMsg({ ping: 1, $db: 'admin' }, { checksum: true, corruptChecksum: true });
  c.send(frame);
  t.is(await c.next(1000), 'timeout');
  await c.closed;
  t.true(c.socket.destroyed);
});

test('moreToCome messages are executed but never answered', async (t) => {
  const c = await RawClient.connect(port());
  const { frame } = opMsg({ insert: 'w0', documents: [{ _id: 'silent' }], writeConcern: { w: 0 }, $db: 'wire' }, { flags: 2 });
  c.send(frame);
  // the next acknowledged command gets the first reply on the socket
  const found = await c.command({ find: 'w0', filter: { _id: 'silent' }, $db: 'wire' });
  t.is(found['cursor'].firstBatch.length, 1);
  c.close();
});

test('frames split across chunks and several frames in one chunk are both handled', async (t) => {
  const c = await RawClient.connect(port());
  const a = opMsg({ ping: 1, $db: 'admin' });
  const b = opMsg({ buildInfo: 1, $db: 'admin' });
  const both = Buffer.concat([a.frame, b.frame]);
  // byte-by-byte for the first few bytes, then the rest in one go
  for (let i = 0; i < 7; i++) {
    c.send(both.subarray(i, i + 1));
    await new Promise((r) => setTimeout(r, 2));
  }
  c.send(both.subarray(7));
  const r1 = await c.next();
  const r2 = await c.next();
  t.not(r1, 'timeout');
  t.not(r2, 'timeout');
  if (r1 === 'timeout' || r2 === 'timeout') return;
  t.is(r1.responseTo, a.id);
  t.is(r2.responseTo, b.id);
  t.regex(String(r2.doc['version']), /^7\.0\./);
  c.close();
});

test('OP_COMPRESSED is refused with an error and the connection is closed', async (t) => {
  const c = await RawClient.connect(port());
  const inner = opMsg({ ping: 1, $db: 'admin' }).frame.subarray(16);
  const body = Buffer.alloc(9);
  body.writeInt32LE(OP_MSG, 0);
  body.writeInt32LE(inner.length, 4);
  body[8] = 0; // noop compressor
  const id = requestId++;
  const payload = Buffer.concat([body, inner]);
  c.send(Buffer.concat([header(16 + payload.length, OP_COMPRESSED, id), payload]));
  const r = await c.next();
  t.not(r, 'timeout');
  if (r !== 'timeout') {
    t.is(r.doc['ok'], 0);
    t.regex(String(r.doc['errmsg']), /compress/i);
  }
  // the server ends the connection: `closed` settles only on the socket's close event
  t.is(await Promise.race([c.closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open'), 5000))]), 'closed');
});

test('a message larger than maxMessageSizeBytes closes the connection', async (t) => {
  const c = await RawClient.connect(port());
  c.send(header(48_000_001, OP_MSG, requestId++));
  await c.closed;
  t.true(c.socket.destroyed);
});

test('commands without $db and unknown commands get error replies, not crashes', async (t) => {
  const c = await RawClient.connect(port());
  const noDb = await c.command({ ping: 1 });
  t.is(noDb['ok'], 0);
  const unknown = await c.command({ nope: 1, $db: 'admin' });
  t.is(unknown['code'], 59);
  t.is(unknown['codeName'], 'CommandNotFound');
  t.is(unknown['errmsg'], "no such command: 'nope'");
  const stillAlive = await c.command({ ping: 1, $db: 'admin' });
  t.is(stillAlive['ok'], 1);
  c.close();
});

test('cursors opened on a connection are killed when it closes', async (t) => {
  const c = await RawClient.connect(port());
  await c.command({ insert: 'cur', documents: Array.from({ length: 10 }, (_, i) => ({ i })), $db: 'wire' });
  const first = await c.command({ find: 'cur', filter: {}, batchSize: 2, $db: 'wire' }, {});
  const id = first['cursor'].id;
  t.truthy(id);
  c.close();
  await c.closed;
  await new Promise((r) => setTimeout(r, 50));
  const d = await RawClient.connect(port());
  const more = await d.command({ getMore: BSON.Long.fromValue(id), collection: 'cur', $db: 'wire' });
  t.is(more['ok'], 0);
  t.is(more['code'], 43);
  d.close();
});

test('the engine listens on a unix socket and the driver connects through it', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'volreg-sock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'engine.sock');
  const sockEngine = await startTestEngine(undefined, { socketPath });
  try {
    t.is(sockEngine.uri, `mongodb://${encodeURIComponent(socketPath)}`);
    t.is(sockEngine.port, undefined);
    const client = new MongoClient(sockEngine.uri);
    await client.connect();
    await client.db('s').collection('c').insertOne({ via: 'socket' });
    t.is((await client.db('s').collection('c').findOne({}))?.['via'], 'socket');
    await client.close();
    const raw = await RawClient.connect({ path: socketPath });
    t.is((await raw.command({ ping: 1, $db: 'admin' }))['ok'], 1);
    raw.close();
    // a live socket is never taken over by another engine
    await t.throwsAsync(startTestEngine(undefined, { socketPath }), { message: /in use by another process/ });
  } finally {
    await sockEngine.close();
  }
  t.false(fs.existsSync(socketPath));
});

test('transactions are refused like a standalone (IllegalOperation 20)', async (t) => {
  const c = await RawClient.connect(port());
  const lsid = { id: new BSON.UUID() };
  const r = await c.command({ insert: 'txn', documents: [{ a: 1 }], lsid, txnNumber: BSON.Long.fromNumber(1), startTransaction: true, autocommit: false, $db: 'wire' });
  t.is(r['ok'], 0);
  t.is(r['code'], 20);
  t.is(r['codeName'], 'IllegalOperation');
  t.is(r['errmsg'], 'Transaction numbers are only allowed on a replica set member or mongos');
  // sessions themselves are fine
  const plain = await c.command({ insert: 'txn', documents: [{ a: 2 }], lsid, $db: 'wire' });
  t.is(plain['n'], 1);
  const end = await c.command({ endSessions: [lsid], $db: 'admin' });
  t.is(end['ok'], 1);
  c.close();
});
