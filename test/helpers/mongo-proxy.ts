import { deserialize, serialize, type Document } from 'bson';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A unix socket in front of a test MongoDB (test/helpers/mongo.ts), for faults of the connection
 * itself, as the embedded engine shows them when it runs out of file descriptors:
 *
 * - `refuseNew`: each new connection is accepted and closed at once (what libuv does with a
 *   connection it cannot take), while those already open go on (the driver's monitor among
 *   them, so the server stays selectable). The driver's next command on a new connection then
 *   fails with a raw `write EPIPE`.
 * - `cutAfterBytes`: a connection that sends more than this many bytes from now on is cut on
 *   both sides (a large command meets `read ECONNRESET` or `write EPIPE`).
 * - `wedgeMonitor()`: the connections open now that have only ever carried handshakes (the
 *   driver's server monitor's) pass nothing more and stay open, the others are cut when they
 *   next send a command (which fails with a network error); new ones work. The driver then
 *   marks the server unknown and its monitor never hears back: a client that has lost its
 *   database while the database answers others.
 * - `endMonitor()`: the connections open now that have only ever carried handshakes are closed
 *   from the server's side (the driver reads EOF), as a database that goes away closes them.
 * - `answer(match, reply)`: the next command `match` picks is not passed on; the proxy answers it
 *   with `reply`, as a replica set member does in a failover (`{ ok: 0, code: 10107,
 *   codeName: 'NotWritablePrimary' }`) or a racing insert does (`{ ok: 1, n: 0, writeErrors: [...] }`);
 *   with `null`, never answers it (a command still running).
 */
export interface MongoProxy {
  /** the test database's URI with the proxy's socket as its host (credentials and options kept) */
  uri: string;
  refuseNew: boolean;
  cutAfterBytes: number;
  /** answers the next `times` commands `match` picks with `reply` (the command's body: `{ findAndModify: 'coll', ... }`) */
  answer(match: (command: Document) => boolean, reply: Document | null, times?: number): void;
  /** the monitor's connections stall, the others are cut at their next command; new ones work */
  wedgeMonitor(): void;
  /** the monitor's connections are closed by the server's side */
  endMonitor(): void;
  /** the commands answered by `answer` so far */
  answered: Document[];
  close(): Promise<void>;
}

/** For `answer`: picks the `command` commands on `collection` (`commandOn('update', 'repos')`). */
export function commandOn(command: string, collection: string): (body: Document) => boolean {
  return (body) => body[command] === collection;
}

// OP_MSG: a 16-byte header (length, requestID, responseTo, opCode), flag bits, then sections;
// section kind 0 is the command's body
const OP_MSG = 2013;
/** OP_QUERY: drivers send only their first handshake with it */
const OP_QUERY = 2004;
const HEADER_BYTES = 16;

interface Answer {
  match: (command: Document) => boolean;
  /** null: never answered (a command the server is still working on) */
  reply: Document | null;
  times: number;
}

export async function startMongoProxy(upstreamUri: string): Promise<MongoProxy> {
  const upstream = upstreamOf(upstreamUri);
  const dir = await mkdtemp(join(tmpdir(), 'volreg-mongo-proxy-'));
  const socketPath = join(dir, 'mongo.sock');
  const open = new Set<net.Socket>();
  const answers: Answer[] = [];
  const wedgers = new Set<() => void>();
  const enders = new Set<() => void>();
  /** the reply `answer` set up for this message, if it is an OP_MSG one picks (empty: none ever) */
  const answerFor = (message: Buffer): Buffer | undefined => {
    if (answers.length === 0 || message.readInt32LE(12) !== OP_MSG || message[HEADER_BYTES + 4] !== 0) return undefined;
    // the body section alone: document sequences (insertMany's documents) may follow it
    const body0 = HEADER_BYTES + 5;
    const command = deserialize(message.subarray(body0, body0 + message.readInt32LE(body0)));
    const at = answers.findIndex((a) => a.match(command));
    if (at < 0) return undefined;
    const a = answers[at]!;
    if (--a.times === 0) answers.splice(at, 1);
    proxy.answered.push(command);
    if (a.reply === null) return Buffer.alloc(0);
    const body = serialize(a.reply);
    const reply = Buffer.alloc(HEADER_BYTES + 5 + body.length);
    reply.writeInt32LE(reply.length, 0);
    reply.writeInt32LE(0, 4);
    reply.writeInt32LE(message.readInt32LE(4), 8); // responseTo: the command's requestID
    reply.writeInt32LE(OP_MSG, 12);
    reply.writeUInt32LE(0, 16);
    reply[20] = 0;
    reply.set(body, 21);
    return reply;
  };
  const proxy: MongoProxy = {
    uri: withHost(upstreamUri, encodeURIComponent(socketPath)),
    refuseNew: false,
    cutAfterBytes: Infinity,
    answer: (match, reply, times = 1) => answers.push({ match, reply, times }),
    answered: [],
    wedgeMonitor: () => {
      for (const wedge of wedgers) wedge();
      wedgers.clear();
    },
    endMonitor: () => {
      for (const end of enders) end();
      enders.clear();
    },
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
  const server = net.createServer((client) => {
    if (proxy.refuseNew) {
      client.destroy();
      return;
    }
    const toServer = net.connect(upstream);
    for (const s of [client, toServer]) {
      open.add(s);
      s.on('close', () => open.delete(s));
    }
    let sent = 0;
    let pending: Buffer = Buffer.alloc(0);
    let frozen = false;
    let cutAtNext = false;
    let onlyHandshakes = true;
    const cut = (): void => {
      client.destroy();
      toServer.destroy();
    };
    const wedge = (): void => {
      if (!onlyHandshakes) {
        cutAtNext = true;
        return;
      }
      frozen = true;
      toServer.unpipe(client);
      toServer.resume(); // what the server still sends is dropped
    };
    wedgers.add(wedge);
    const end = (): void => {
      if (!onlyHandshakes) return;
      toServer.unpipe(client);
      client.end();
    };
    enders.add(end);
    client.on('close', () => {
      wedgers.delete(wedge);
      enders.delete(end);
    });
    client.on('data', (chunk: Buffer) => {
      if (frozen) return;
      if (cutAtNext) return cut();
      sent += chunk.length;
      if (sent > proxy.cutAfterBytes) return cut();
      // whole messages only, so a command can be answered here instead of passed on
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= pending.readInt32LE(0)) {
        if (pending.readInt32LE(0) < HEADER_BYTES) {
          // not a message of the wire protocol: passed on as it is, for the server to refuse
          toServer.write(pending);
          pending = Buffer.alloc(0);
          break;
        }
        const message = pending.subarray(0, pending.readInt32LE(0));
        pending = pending.subarray(message.length);
        if (onlyHandshakes && !isHandshake(message)) onlyHandshakes = false;
        const reply = answerFor(message);
        if (reply) client.write(reply);
        else toServer.write(message);
      }
    });
    client.on('end', () => toServer.end());
    toServer.pipe(client);
    client.on('error', cut);
    toServer.on('error', cut);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return proxy;
}

/** a hello (OP_MSG) or the legacy OP_QUERY isMaster a driver opens a connection with */
function isHandshake(message: Buffer): boolean {
  const opCode = message.readInt32LE(12);
  if (opCode === OP_QUERY) return true;
  if (opCode !== OP_MSG || message[HEADER_BYTES + 4] !== 0) return false;
  const body0 = HEADER_BYTES + 5;
  const name = Object.keys(deserialize(message.subarray(body0, body0 + message.readInt32LE(body0))))[0] ?? '';
  return ['hello', 'isMaster', 'ismaster'].includes(name);
}

/** host:port or the socket path of a single-host mongodb:// URI */
function upstreamOf(uri: string): net.NetConnectOpts {
  const host = /^mongodb:\/\/(?:[^@/]*@)?([^/?,]+)(?:[/?]|$)/.exec(uri)?.[1];
  if (host === undefined) throw new Error(`the proxy takes a single-host mongodb:// URI, not ${uri}`);
  const decoded = decodeURIComponent(host);
  if (decoded.startsWith('/')) return { path: decoded };
  const at = decoded.lastIndexOf(':');
  return at < 0 ? { host: decoded, port: 27017 } : { host: decoded.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(decoded.slice(at + 1)) };
}

function withHost(uri: string, host: string): string {
  const replaced = uri.replace(/^(mongodb:\/\/(?:[^@/]*@)?)[^/?,]+/, `$1${host}`);
  // the proxy is one server, whatever the upstream's topology
  const [base, query = ''] = replaced.split('?') as [string, string?];
  const params = new URLSearchParams(query);
  params.set('directConnection', 'true');
  params.delete('replicaSet');
  return `${base.includes('/', 'mongodb://'.length) ? base : `${base}/`}?${params.toString()}`;
}
