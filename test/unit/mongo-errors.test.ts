import net from 'node:net';
import test from 'ava';
import { MongoBulkWriteError, MongoClient, MongoClientClosedError, MongoError, MongoErrorLabel, MongoNetworkError, MongoServerClosedError, MongoServerError, MongoServerSelectionError, MongoWriteConcernError } from 'mongodb';
import { watchDriverSockets } from '../../src/metadata/driver-sockets.ts';
import { fromMongoFailure } from '../../src/metadata/mongo-errors.ts';
import { WRITES_STOPPED } from '../../src/mongo-engine/errors.ts';
import { commandOn, startMongoProxy, type MongoProxy } from '../helpers/mongo-proxy.ts';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/**
 * What a failure of the metadata store means to a client (fromMongoFailure), the driver's
 * unwrapped socket errors included, and only those: the same codes from another socket are not
 * the metadata store's.
 */

let mongo: TestMongo;
let proxy: MongoProxy;
let client: MongoClient;

test.before(async () => {
  watchDriverSockets();
  mongo = await openTestMongo('mongo-errors');
  proxy = await startMongoProxy(mongo.uri);
  // an idle connection is not reused: every command after a pause opens a new one
  client = new MongoClient(proxy.uri, { maxIdleTimeMS: 1, serverSelectionTimeoutMS: 5000 });
  await client.connect();
});

test.after.always(async () => {
  await client?.close();
  await proxy?.close();
  await mongo?.close();
});

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function failureOf(command: () => Promise<unknown>): Promise<unknown> {
  return command().then(
    () => {
      throw new Error('the command succeeded');
    },
    (err: unknown) => err,
  );
}

function isUnreachable(t: import('ava').ExecutionContext, err: unknown): void {
  const translated = fromMongoFailure(err);
  t.is(translated?.code, 'UNAVAILABLE', String(err));
  t.is(translated?.status, 503);
  t.regex(translated?.message ?? '', /the metadata store is unreachable/);
  // agents wait and send again (the host agent rides out a restarted database)
  t.is(translated?.headers['Retry-After'], '10');
}

test.serial('a new connection the server closes at once: the driver throws a raw write EPIPE, which is 503', async (t) => {
  await client.db(mongo.dbName).command({ ping: 1 });
  proxy.refuseNew = true;
  try {
    await pause(5);
    const err = await failureOf(() => client.db(mongo.dbName).collection('c').findOne({}));
    // the driver's own wrapping would be caught already: this is the case it does not wrap
    t.false(err instanceof MongoError, String(err));
    t.like(err, { code: 'EPIPE', syscall: 'write' });
    isUnreachable(t, err);
  } finally {
    proxy.refuseNew = false;
  }
  await pause(5);
  t.truthy(await client.db(mongo.dbName).command({ ping: 1 }), 'answers again');
});

test.serial('a large command cut while it is written: the raw socket error is 503', async (t) => {
  await client.db(mongo.dbName).command({ ping: 1 });
  proxy.cutAfterBytes = 64 * 1024;
  try {
    const err = await failureOf(() => client.db(mongo.dbName).collection('c').insertOne({ big: 'x'.repeat(8_000_000) }));
    t.false(err instanceof MongoError, String(err));
    t.regex(String((err as NodeJS.ErrnoException).code), /^(ECONNRESET|EPIPE)$/);
    isUnreachable(t, err);
  } finally {
    proxy.cutAfterBytes = Infinity;
  }
});

test.serial('insertMany wraps whatever stopped it in a bulk write error: it is judged by what it wraps', async (t) => {
  const docs = (): Array<{ n: number }> => [{ n: 1 }, { n: 2 }];
  const bulkFailure = async (c: MongoClient): Promise<MongoBulkWriteError> => {
    const err = await failureOf(() => c.db(mongo.dbName).collection('bulk').insertMany(docs(), { ordered: false }));
    t.true(err instanceof MongoBulkWriteError, String(err));
    return err as MongoBulkWriteError;
  };
  // a replica set electing a primary, and the metadata store out of disk space
  proxy.answer(commandOn('insert', 'bulk'), { ok: 0, code: 10107, codeName: 'NotWritablePrimary', errmsg: 'not primary' });
  t.like(fromMongoFailure(await bulkFailure(client)), { code: 'UNAVAILABLE', status: 503, headers: { 'Retry-After': '10' } });
  proxy.answer(commandOn('insert', 'bulk'), { ok: 0, code: 14031, codeName: 'OutOfDiskSpace', errmsg: 'out of disk space' });
  t.is(fromMongoFailure(await bulkFailure(client))?.code, 'STORAGE_FULL');
  // a new connection closed at once: the raw socket error, wrapped
  proxy.refuseNew = true;
  try {
    await pause(5);
    isUnreachable(t, await bulkFailure(client));
  } finally {
    proxy.refuseNew = false;
  }
  // the database gone: the write finds no server to send to (a database killed under a push)
  const gone = await startMongoProxy(mongo.uri);
  const stranded = new MongoClient(gone.uri, { serverSelectionTimeoutMS: 300, heartbeatFrequencyMS: 500 });
  try {
    await stranded.db(mongo.dbName).command({ ping: 1 });
    const lost = new Promise<void>((resolve) => stranded.on('serverDescriptionChanged', (e) => e.newDescription.type === 'Unknown' && resolve()));
    await gone.close();
    await lost;
    const err = await bulkFailure(stranded);
    t.true(err.errorResponse instanceof MongoServerSelectionError, String(err.errorResponse));
    isUnreachable(t, err);
  } finally {
    await stranded.close();
  }
});

test.serial('commands cut off by the client closing (the watchdog reopening it) are 503', async (t) => {
  const closing = new MongoClient(proxy.uri, { serverSelectionTimeoutMS: 2000 });
  await closing.db(mongo.dbName).command({ ping: 1 });
  proxy.answer(commandOn('find', 'stalled'), null);
  const inFlight = failureOf(() => closing.db(mongo.dbName).collection('stalled').findOne({}));
  while (!proxy.answered.some((c) => c['find'] === 'stalled')) await pause(10);
  await closing.close();
  const err = await inFlight;
  t.true(err instanceof MongoClientClosedError, String(err));
  isUnreachable(t, err);
  isUnreachable(t, new MongoServerClosedError());
  isUnreachable(t, Object.assign(new Error('attempted to check out a connection from closed connection pool'), { name: 'MongoPoolClosedError' }));
});

test.serial('the same socket errors from a socket that is not the driver are not the metadata store', async (t) => {
  proxy.refuseNew = true;
  try {
    // a socket of this test's own, failing exactly as the driver's did
    const own = net.connect({ path: decodeURIComponent(/^mongodb:\/\/([^/?]+)/.exec(proxy.uri)![1]!), allowHalfOpen: true });
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
      own.on('error', resolve);
      own.on('connect', () => setTimeout(() => own.write(Buffer.alloc(64)), 20));
    });
    t.is(err.code, 'EPIPE');
    t.is(fromMongoFailure(err), null);
  } finally {
    proxy.refuseNew = false;
  }
  const lookalike = Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' });
  t.is(fromMongoFailure(lookalike), null);
});

test('the driver errors it wraps itself: unreachable is 503, out of disk space 507, anything else is not translated', (t) => {
  isUnreachable(t, new MongoNetworkError('connection 1 to /x/engine.sock closed'));
  t.is(fromMongoFailure(new MongoServerError({ code: 14031, errmsg: 'out of disk space', ok: 0 }))?.code, 'STORAGE_FULL');
  t.is(fromMongoFailure(new MongoServerError({ code: 11000, errmsg: 'duplicate key', ok: 0 })), null);
  // the embedded engine refusing writes after its journal failed for another reason than space
  const stopped = fromMongoFailure(
    new MongoServerError({ code: 1, codeName: 'InternalError', errmsg: `journal write failed (EIO: i/o error, write); ${WRITES_STOPPED}`, ok: 0 }),
  );
  t.like(stopped, { code: 'UNAVAILABLE', status: 503 });
  t.regex(stopped?.message ?? '', /accepts no writes until volreg is restarted/);
  t.is(fromMongoFailure(new MongoServerError({ code: 1, codeName: 'InternalError', errmsg: 'some other internal error', ok: 0 })), null);
  t.is(fromMongoFailure(new Error('something else')), null);
});

test('a replica set electing a primary, by code, write concern error or retryable label, is 503 with Retry-After; its other errors are not', (t) => {
  const failover = (err: unknown, what: string): void => {
    const translated = fromMongoFailure(err);
    t.like(translated, { code: 'UNAVAILABLE', status: 503 }, what);
    t.regex(translated?.message ?? '', /the metadata store is changing its primary/, what);
    t.is(translated?.headers['Retry-After'], '10', what);
  };
  for (const [code, codeName] of [
    [10107, 'NotWritablePrimary'],
    [11602, 'InterruptedDueToReplStateChange'],
    [11600, 'InterruptedAtShutdown'],
    [189, 'PrimarySteppedDown'],
    [91, 'ShutdownInProgress'],
    [13435, 'NotPrimaryNoSecondaryOk'],
    [13436, 'NotPrimaryOrSecondary'],
  ] as const) {
    failover(new MongoServerError({ ok: 0, code, codeName, errmsg: codeName }), codeName);
  }
  // the write applied on the primary, and its replication was not confirmed
  const timedOut = { ok: 1, n: 1, writeConcernError: { code: 64, codeName: 'WriteConcernFailed', errmsg: 'waiting for replication timed out' } };
  failover(new MongoWriteConcernError(timedOut as never), 'write concern timeout');
  // a server labels an error retryable whatever its code
  failover(new MongoServerError({ ok: 0, code: 262, codeName: 'ExceededTimeLimit', errmsg: 'x', errorLabels: [MongoErrorLabel.RetryableWriteError] }), 'labelled');
  failover(new MongoServerError({ ok: 0, code: 99999, errmsg: 'x', errorLabels: [MongoErrorLabel.RetryableWriteError] }), 'labelled, unknown code');
  // not a failover: a duplicate key, a document the validator refused, an unknown command
  for (const [code, codeName] of [
    [11000, 'DuplicateKey'],
    [121, 'DocumentValidationFailure'],
    [59, 'CommandNotFound'],
  ] as const) {
    t.is(fromMongoFailure(new MongoServerError({ ok: 0, code, codeName, errmsg: codeName })), null, codeName);
  }
});
