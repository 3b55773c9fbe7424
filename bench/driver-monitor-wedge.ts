/**
 * The MongoDB driver's server monitor stopping for good (driver 7.9, Node 20), reproduced with
 * the driver alone: a minimal wire-protocol server and one MongoClient.
 *
 *   node --import=tsx bench/driver-monitor-wedge.ts [port] [--watch]
 *
 * --watch: volreg's watch of the driver's sockets (src/metadata/driver-sockets.ts) is on, as in
 * `volreg serve`; the monitor then goes on.
 *
 * How it happens (node_modules/mongodb/lib):
 * 1. The server goes away. The monitor's idle connection reads EOF; Node (allowHalfOpen false)
 *    ends the write side and, once the shutdown is done, destroys the socket. Its 'close' event,
 *    which sets Connection.closed, comes only with the handle's close callback, later in the
 *    event-loop turn.
 * 2. In that window an application connection reports its network error (read ECONNRESET):
 *    Server.handleError marks the server Unknown (sdam/server.js), and the next operation's
 *    server selection finds no server and requests a check (sdam/topology.js).
 * 3. checkServer (sdam/monitor.js) sees `connection && !connection.closed` and sends hello on
 *    it. Connection.writeCommand (cmap/connection.js): `socket.write` on the destroyed socket
 *    returns false and emits nothing (the socket is already destroyed, so no 'error'), and
 *    `socket.setTimeout` on a destroyed socket does nothing; it waits for 'drain' or 'error'
 *    forever. The later 'close' sets closed = true but wakes no one.
 * 4. The check never ends, so the monitor stays "monitoring": requestCheck and its timer are
 *    no-ops from then on. The server stays Unknown with the error of step 2; every operation
 *    waits serverSelectionTimeoutMS and fails, while a new client is answered at once.
 *
 * Step 2 must land inside the window of step 1, which on an idle machine it rarely does. Here
 * the application connection's reset is delivered at that moment on purpose (it is destroyed
 * with an ECONNRESET error when the monitor's socket finishes its write side): that is the
 * only help given; the rest is the driver's own path.
 */
import { subscribe } from 'node:diagnostics_channel';
import { createServer, type Socket } from 'node:net';
import { BSON, MongoClient } from 'mongodb';
import { watchDriverSockets } from '../src/metadata/driver-sockets.ts';

const port = Number(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 22901);
if (process.argv.includes('--watch')) watchDriverSockets();
const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_MSG = 2013;

// ---------------------------------------------------------------------------- a tiny server

const HELLO = { ok: 1, isWritablePrimary: true, ismaster: true, helloOk: true, maxBsonObjectSize: 16777216, maxMessageSizeBytes: 48000000, maxWriteBatchSize: 100000, minWireVersion: 0, maxWireVersion: 21, localTime: new Date(), connectionId: 1 };

function reply(doc: Record<string, unknown>): Record<string, unknown> | undefined {
  const name = Object.keys(doc)[0];
  if (name === 'hello' || name === 'ismaster' || name === 'isMaster') return HELLO;
  if (name === 'hang') return undefined; // never answered: an operation in flight
  return { ok: 1 };
}

function serve(socket: Socket, onSocket: (s: Socket) => void): void {
  onSocket(socket);
  let buf = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 16 && buf.length >= buf.readInt32LE(0)) {
      const msg = buf.subarray(0, buf.readInt32LE(0));
      buf = buf.subarray(msg.length);
      const requestId = msg.readInt32LE(4);
      const opCode = msg.readInt32LE(12);
      if (opCode === OP_QUERY) {
        const nameEnd = msg.indexOf(0, 20);
        const doc = BSON.deserialize(msg.subarray(nameEnd + 9));
        const out = reply(doc);
        if (!out) continue;
        const body = BSON.serialize(out);
        const head = Buffer.alloc(36);
        head.writeInt32LE(36 + body.length, 0);
        head.writeInt32LE(requestId, 8);
        head.writeInt32LE(OP_REPLY, 12);
        head.writeInt32LE(1, 32); // numberReturned
        socket.write(Buffer.concat([head, body]));
      } else if (opCode === OP_MSG) {
        const doc = BSON.deserialize(msg.subarray(21, 21 + msg.readInt32LE(21)));
        const out = reply(doc);
        if (!out) continue;
        const body = BSON.serialize(out);
        const head = Buffer.alloc(21);
        head.writeInt32LE(21 + body.length, 0);
        head.writeInt32LE(requestId, 8);
        head.writeInt32LE(OP_MSG, 12);
        socket.write(Buffer.concat([head, body]));
      }
    }
  });
}

// ---------------------------------------------------------------------------- the client

const serverSide = new Map<number, Socket>(); // client's local port -> the server's socket
const server = createServer((s) => serve(s, (x) => serverSide.set(x.remotePort!, x)));
await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));

const clientSockets: Socket[] = [];
subscribe('net.client.socket', (m) => clientSockets.push((m as { socket: Socket }).socket));

const uri = `mongodb://127.0.0.1:${port}/?directConnection=true`;
const client = new MongoClient(uri, { serverSelectionTimeoutMS: 3000 });
const heartbeats: string[] = [];
client.on('serverHeartbeatStarted', () => heartbeats.push('started'));
client.on('serverHeartbeatSucceeded', () => heartbeats.push('succeeded'));
client.on('serverHeartbeatFailed', (e) => heartbeats.push(`failed (${e.failure.message})`));
await client.connect();
await client.db('admin').command({ ping: 1 });

// the monitor connects first (its immediate check), the ping's pool connection after it
const [monitorSocket, poolSocket] = clientSockets;
if (!monitorSocket || !poolSocket) throw new Error(`expected two client sockets, saw ${clientSockets.length}`);
await new Promise((r) => setTimeout(r, 600)); // past minHeartbeatFrequencyMS: a requested check runs at once

const outcome = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (err: Error) => `failed: ${err.message}`);
let ping: Promise<string> | undefined;
const inFlight = outcome(
  client.db('admin').command({ hang: 1 }).finally(() => {
    // the next operation at once, as a busy service makes one: its server selection requests a check
    ping = outcome(client.db('admin').command({ ping: 1 }));
  }),
);
await new Promise((r) => setTimeout(r, 100));

let window = '';
monitorSocket.once('finish', () =>
  process.nextTick(() => {
    window = `monitor socket destroyed=${monitorSocket.destroyed}, its 'close' still to come`;
    poolSocket.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
  }),
);
serverSide.get(monitorSocket.localPort!)!.end(); // the server side closes: EOF on the monitor's connection
console.log(`in-flight operation: ${await inFlight}`);
console.log(window);

// the server is still listening and answering: the monitor should find it again
const heartbeatsBefore = heartbeats.length;
const pinged = await ping!;
const fresh = new MongoClient(uri, { serverSelectionTimeoutMS: 3000 });
const freshPing = await outcome(fresh.db('admin').command({ ping: 1 }));
await fresh.close();
await new Promise((r) => setTimeout(r, 11_000)); // more than heartbeatFrequencyMS (10 s)
console.log(`the client's ping after the reset: ${pinged}`);
console.log(`a new client's ping: ${freshPing}`);
console.log(`heartbeats: ${heartbeats.slice(0, heartbeatsBefore).join(', ')} | then, over 11 s: ${heartbeats.slice(heartbeatsBefore).join(', ') || 'none'}`);
const wedged = heartbeats[heartbeats.length - 1] === 'started' && pinged !== 'ok' && freshPing === 'ok';
console.log(wedged ? 'WEDGED: the last heartbeat started and never ended; the client no longer finds its server' : 'not wedged');
process.exit(wedged ? 1 : 0);
