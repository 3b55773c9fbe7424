import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MongoClient, type Db } from 'mongodb';
import { CHANGE_MARK_KEYS } from '../../src/metadata/collections.ts';
import { newChangeMarks, startEngine, type EngineOptions, type RunningEngine } from '../../src/mongo-engine/index.ts';

/**
 * The one way tests get a database. Picks the best backend available:
 *   MONGODB_URL                 an external mongod/mongos (backend 'external')
 *   MONGOMS_SYSTEM_BINARY       a real mongod started by mongodb-memory-server-core ('memory-server')
 *   otherwise                   the embedded engine, in memory, one per test process ('engine'),
 *                               with its change marks, as `volreg serve` runs it
 * Every call gets its own uniquely named database, dropped again by close().
 */

export type TestBackend = 'external' | 'memory-server' | 'engine';

export interface TestMongo {
  uri: string;
  dbName: string;
  client: MongoClient;
  db: Db;
  backend: TestBackend;
  /** the engine's change marks (backend 'engine') */
  changeMarks?: SharedArrayBuffer;
  close(): Promise<void>;
}

interface SharedServer {
  uri: string;
  backend: TestBackend;
  changeMarks?: SharedArrayBuffer;
  stop(): Promise<void>;
}

let shared: Promise<SharedServer> | undefined;
let users = 0;
let counter = 0;

async function startShared(): Promise<SharedServer> {
  const external = process.env['MONGODB_URL'];
  if (external) return { uri: external, backend: 'external', stop: async () => undefined };
  if (process.env['MONGOMS_SYSTEM_BINARY']) {
    const { MongoMemoryServer } = await import('mongodb-memory-server-core');
    const server = await MongoMemoryServer.create();
    return { uri: server.getUri(), backend: 'memory-server', stop: async () => void (await server.stop()) };
  }
  const changeMarks = newChangeMarks();
  const engine = await startEngine({ changeMarks: { buffer: changeMarks, keys: CHANGE_MARK_KEYS } });
  return { uri: engine.uri, backend: 'engine', changeMarks, stop: () => engine.close() };
}

function databaseName(label: string): string {
  const clean = label.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 24);
  return `t_${clean}_${process.pid}_${counter++}_${randomBytes(3).toString('hex')}`.slice(0, 63);
}

export async function openTestMongo(label: string): Promise<TestMongo> {
  shared ??= startShared();
  users++;
  let server: SharedServer;
  try {
    server = await shared;
  } catch (err) {
    users--;
    shared = undefined;
    throw err;
  }
  const dbName = databaseName(label);
  const client = new MongoClient(server.uri);
  await client.connect();
  const db = client.db(dbName);
  let closed = false;
  return {
    uri: server.uri,
    dbName,
    client,
    db,
    backend: server.backend,
    ...(server.changeMarks ? { changeMarks: server.changeMarks } : {}),
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await db.dropDatabase();
      } finally {
        await client.close();
        users--;
        if (users === 0 && shared) {
          const s = shared;
          shared = undefined;
          await (await s).stop();
        }
      }
    },
  };
}

/**
 * A dedicated engine for tests that need one directly (durability, restarts, TTL timing).
 * With `dir` it is durable on that directory; without, in memory.
 */
export async function startTestEngine(dir?: string, extra: Omit<EngineOptions, 'dbPath'> = {}): Promise<RunningEngine> {
  return startEngine({ ...extra, dbPath: dir });
}

/** A fresh directory for an engine's dbPath, removed when the test ends. */
export function engineTempDir(t: { teardown(fn: () => void): void }, prefix = 'volreg-engine-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `fn` with a driver connected to `uri`, closed afterwards. */
export async function withDriver<T>(uri: string, fn: (c: MongoClient) => Promise<T>): Promise<T> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.close(true);
  }
}
