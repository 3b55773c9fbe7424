import test from 'ava';
import { openTestMongo, type TestMongo } from '../helpers/mongo.ts';

/** Handshake and informational commands the driver and mongosh send. */

let m: TestMongo;
test.before(async () => {
  m = await openTestMongo('server_commands');
});
test.after.always(async () => {
  await m?.close();
});

test('hello / isMaster report a writable standalone with sessions', async (t) => {
  const admin = m.client.db('admin');
  const hello = await admin.command({ hello: 1 });
  t.is(hello['isWritablePrimary'], true);
  t.true(hello['maxWireVersion'] >= 21);
  t.is(hello['logicalSessionTimeoutMinutes'], 30);
  t.true(hello['localTime'] instanceof Date);
  const legacy = await admin.command({ isMaster: 1 });
  t.is(legacy['ismaster'], true);
  if (m.backend === 'engine') {
    t.is(hello['setName'], undefined);
    t.is(hello['maxWireVersion'], 21);
  }
});

test('ping, buildInfo, serverStatus, hostInfo, getParameter, getLog answer ok', async (t) => {
  const admin = m.client.db('admin');
  t.is((await admin.command({ ping: 1 }))['ok'], 1);
  const build = await admin.command({ buildInfo: 1 });
  t.regex(String(build['version']), /^\d+\.\d+\.\d+/);
  t.true(Array.isArray(build['versionArray']));
  if (m.backend === 'engine') t.regex(String(build['version']), /^7\.0\./);
  const status = await admin.command({ serverStatus: 1 });
  t.is(typeof status['uptime'], 'number');
  t.truthy(status['connections']);
  t.is((await admin.command({ hostInfo: 1 }))['ok'], 1);
  const fcv = await admin.command({ getParameter: 1, featureCompatibilityVersion: 1 });
  t.is(fcv['ok'], 1);
  t.is((await admin.command({ getLog: 'startupWarnings' }))['ok'], 1);
});

test('explicit sessions work for ordinary reads and writes; endSessions is accepted', async (t) => {
  const session = m.client.startSession();
  try {
    const c = m.db.collection('sessions');
    await c.insertOne({ a: 1 }, { session });
    t.is((await c.findOne({ a: 1 }, { session }))?.['a'], 1);
  } finally {
    await session.endSession();
  }
  t.is((await m.client.db('admin').command({ endSessions: [] }))['ok'], 1);
});

test('a transaction on a standalone fails like mongod does', async (t) => {
  const hello = await m.client.db('admin').command({ hello: 1 });
  const session = m.client.startSession();
  try {
    session.startTransaction();
    const attempt = m.db.collection('txn').insertOne({ a: 1 }, { session });
    if (hello['setName'] || hello['msg'] === 'isdbgrid') {
      await attempt;
      await session.abortTransaction();
      t.pass('replica sets support transactions');
      return;
    }
    const err = await t.throwsAsync(attempt);
    // The driver rewrites code 20 "Transaction numbers are only allowed..." into this hint.
    t.regex(err?.message ?? '', /Transaction numbers are only allowed|does not support retryable writes|Transaction/);
  } finally {
    await session.endSession().catch(() => undefined);
  }
  t.is(await m.db.collection('txn').countDocuments({}), 0);
});

test('dbStats counts this database', async (t) => {
  await m.db.collection('stats').insertMany([{ a: 1 }, { a: 2 }]);
  const stats = await m.db.command({ dbStats: 1 });
  t.is(stats['db'], m.dbName);
  t.true(stats['objects'] >= 2);
  t.true(stats['collections'] >= 1);
});
