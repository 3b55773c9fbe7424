import fs from 'node:fs';
import net from 'node:net';
import { ChangeMarker, type ChangeMarksOptions } from './change-marks.ts';
import { Catalog } from './collection-store.ts';
import { ClientConnection } from './connection.ts';
import { CursorManager } from './cursor-manager.ts';
import type { EngineState, LogFn } from './engine-state.ts';
import { openStorage, type Storage } from './persistence.ts';
import { sweepExpired } from './ttl-monitor.ts';

/** Wires catalog, storage, cursors and listeners together; see index.ts for the public API. */

export interface EngineOptions {
  /** directory for journal/snapshots; undefined = in-memory, not durable */
  dbPath?: string;
  /** default 127.0.0.1 */
  host?: string;
  /** 0 = pick a free port; default 0 */
  port?: number;
  /** listen on a unix socket instead of (or as well as) TCP */
  socketPath?: string;
  /** default true when dbPath is set: ack only after fsync */
  durable?: boolean;
  log?: LogFn;
  /** how often expired TTL documents are removed; default 60 s like mongod */
  ttlIntervalMs?: number;
  /** journal size that triggers a snapshot and a fresh journal; default 64 MiB */
  compactJournalBytes?: number;
  /** told once, when a journal write fails (see `failure()`), before any write hears of it */
  onFailure?: (reason: string) => void;
  /** shared counters moved by every change (change-marks.ts), for a reader in this process */
  changeMarks?: ChangeMarksOptions;
}

export interface RunningEngine {
  uri: string;
  port?: number;
  socketPath?: string;
  /** why the engine accepts no writes any more (a failed journal write), if so; only a restart recovers */
  failure(): string | undefined;
  close(): Promise<void>;
}

const CURSOR_SWEEP_MS = 60_000;

function listen(server: net.Server, target: { port: number; host: string } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export async function startEngine(opts: EngineOptions = {}): Promise<RunningEngine> {
  const log: LogFn = opts.log ?? (() => undefined);
  const host = opts.host ?? '127.0.0.1';
  const catalog = new Catalog();
  const state: EngineState = {
    catalog,
    cursors: new CursorManager(),
    log,
    startedAt: Date.now(),
    stats: { connectionsCurrent: 0, connectionsTotal: 0, opcounters: {} },
    host,
    port: undefined,
    durability: undefined,
  };

  let storage: Storage | undefined;
  if (opts.dbPath !== undefined) {
    storage = await openStorage(opts.dbPath, catalog, {
      durable: opts.durable ?? true,
      log,
      compactBytes: opts.compactJournalBytes,
      ...(opts.onFailure ? { onFailure: (err: Error) => opts.onFailure?.(err.message) } : {}),
    });
    state.durability = storage.journal;
  }
  // after recovery: what was there before start-up is not a change anyone read
  if (opts.changeMarks) catalog.marker = new ChangeMarker(opts.changeMarks);

  const connections = new Set<ClientConnection>();
  let nextConnectionId = 1;
  const onConnection = (socket: net.Socket): void => {
    state.stats.connectionsCurrent++;
    state.stats.connectionsTotal++;
    const conn = new ClientConnection(nextConnectionId++, socket, state);
    connections.add(conn);
    socket.on('close', () => connections.delete(conn));
  };

  const servers: net.Server[] = [];
  let port: number | undefined;
  let socketPath: string | undefined;
  try {
    const wantTcp = opts.socketPath === undefined || opts.port !== undefined;
    if (wantTcp) {
      const server = net.createServer(onConnection);
      await listen(server, { port: opts.port ?? 0, host });
      servers.push(server);
      const addr = server.address();
      port = typeof addr === 'object' && addr ? addr.port : undefined;
      state.port = port;
    }
    if (opts.socketPath !== undefined) {
      // A socket file left by a dead process would make listen fail; one a live process answers on is not ours to take.
      if (fs.existsSync(opts.socketPath)) {
        if (await socketAnswers(opts.socketPath)) throw new Error(`unix socket ${opts.socketPath} is in use by another process`);
        fs.rmSync(opts.socketPath, { force: true });
      }
      const server = net.createServer(onConnection);
      await listen(server, { path: opts.socketPath });
      servers.push(server);
      socketPath = opts.socketPath;
    }
  } catch (err) {
    for (const s of servers) await closeServer(s);
    await storage?.close();
    throw err;
  }

  const timers = [
    setInterval(() => state.cursors.sweepIdle(), CURSOR_SWEEP_MS),
    setInterval(() => {
      // a TTL delete is a write: none after a failed journal write (see command-dispatch.ts)
      if (state.durability?.failure()) return;
      try {
        sweepExpired(catalog, Date.now(), log);
      } catch (err) {
        log('ttl sweep failed', { error: String(err) });
      }
    }, opts.ttlIntervalMs ?? 60_000),
  ];
  for (const t of timers) t.unref();

  const uri = port !== undefined
    ? `mongodb://${host.includes(':') ? `[${host}]` : host}:${port}/?directConnection=true`
    : `mongodb://${encodeURIComponent(socketPath as string)}`;
  log('engine listening', { uri, dbPath: opts.dbPath, durable: storage ? (opts.durable ?? true) : false });

  let closing: Promise<void> | undefined;
  return {
    uri,
    port,
    socketPath,
    failure: () => state.durability?.failure()?.message,
    close: () => {
      closing ??= (async () => {
        for (const t of timers) clearInterval(t);
        const closed = servers.map(closeServer);
        for (const c of connections) c.destroy();
        await Promise.all(closed);
        state.cursors.clear();
        await storage?.close();
        if (socketPath) fs.rmSync(socketPath, { force: true });
        log('engine closed', { uri });
      })();
      return closing;
    },
  };
}
