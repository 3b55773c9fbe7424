import { subscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import test from 'ava';
import { MongoClient } from 'mongodb';
import { watchDriverSockets } from '../../src/metadata/driver-sockets.ts';
import { startMongoProxy } from '../helpers/mongo-proxy.ts';
import { openTestMongo } from '../helpers/mongo.ts';

/**
 * The driver's connections as driver-sockets.ts watches them: a command that would wait forever
 * to be written on a connection the server closed is failed, so the server monitor goes on.
 */

test('a server monitor whose connection the server closed goes on checking: the client finds its server again', async (t) => {
  watchDriverSockets();
  const mongo = await openTestMongo('driver-sockets');
  const proxy = await startMongoProxy(mongo.uri);
  // the driver's sockets reach the proxy's unix socket; the proxy's own ones (TCP) have a port
  const driverSockets: Socket[] = [];
  subscribe('net.client.socket', (m) => {
    const { socket } = m as { socket: Socket };
    socket.once('connect', () => socket.remotePort === undefined && driverSockets.push(socket));
  });
  const client = new MongoClient(proxy.uri, { serverSelectionTimeoutMS: 4000 });
  t.teardown(async () => {
    await client.close();
    await proxy.close();
    await mongo.close();
  });
  await client.connect();
  await client.db('admin').command({ ping: 1 });
  // the monitor connects first (its immediate check), the ping's pool connection after it
  const [monitorSocket, poolSocket] = driverSockets;
  t.truthy(monitorSocket && poolSocket, `the monitor's and the pool's sockets (${driverSockets.length} seen)`);
  // past minHeartbeatFrequencyMS: a check requested now runs at once
  await new Promise((r) => setTimeout(r, 600));

  // a command in flight on the pool's connection
  proxy.answer((c) => c.find === 'in-flight', null);
  const answered = (p: Promise<unknown>): Promise<string> => p.then(
    () => 'answered',
    (err: Error) => `failed: ${err.message}`,
  );
  let pingAfterReset: Promise<string> | undefined;
  const inFlight = answered(
    client.db(mongo.dbName).command({ find: 'in-flight' }).finally(() => {
      // the next request at once, as a busy service makes one: its server selection requests a check
      pingAfterReset = answered(client.db('admin').command({ ping: 1 }));
    }),
  );
  await new Promise((r) => setTimeout(r, 100));
  // The database goes away: the monitor's connection reads EOF, the pool's is reset. The reset
  // is delivered just after Node destroyed the monitor's socket and before its 'close' event,
  // the moment a loaded machine hits now and then; here every time.
  let destroyedAtCheck: boolean | undefined;
  client.once('serverHeartbeatStarted', () => (destroyedAtCheck = monitorSocket!.destroyed));
  monitorSocket!.once('finish', () => process.nextTick(() => poolSocket!.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))));
  proxy.endMonitor();
  t.is(await inFlight, 'failed: read ECONNRESET');
  t.true(destroyedAtCheck, "the monitor checked while its socket was closed but its 'close' still to come");
  // the database still answers (the proxy takes new connections): the client finds it again
  t.is(await pingAfterReset, 'answered');
});
