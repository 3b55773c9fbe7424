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
 */
export interface MongoProxy {
  /** the test database's URI with the proxy's socket as its host (credentials and options kept) */
  uri: string;
  refuseNew: boolean;
  cutAfterBytes: number;
  close(): Promise<void>;
}

export async function startMongoProxy(upstreamUri: string): Promise<MongoProxy> {
  const upstream = upstreamOf(upstreamUri);
  const dir = await mkdtemp(join(tmpdir(), 'volreg-mongo-proxy-'));
  const socketPath = join(dir, 'mongo.sock');
  const open = new Set<net.Socket>();
  const proxy: MongoProxy = {
    uri: withHost(upstreamUri, encodeURIComponent(socketPath)),
    refuseNew: false,
    cutAfterBytes: Infinity,
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
    const cut = (): void => {
      client.destroy();
      toServer.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      sent += chunk.length;
      if (sent > proxy.cutAfterBytes) cut();
      else toServer.write(chunk);
    });
    client.on('end', () => toServer.end());
    toServer.pipe(client);
    client.on('error', cut);
    toServer.on('error', cut);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return proxy;
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
