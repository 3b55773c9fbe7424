import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { startEngine } from '../../src/mongo-engine/index.ts';
import { startEngineThread } from '../../src/workers/engine-thread.ts';

/** The embedded engine on its own worker thread, as `volreg serve` runs it (workers/engine-thread.ts). */

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'volreg-engine-thread-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function withClient<T>(uri: string, fn: (c: MongoClient) => Promise<T>): Promise<T> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.close(true);
  }
}

test('serves the driver over its unix socket, logs through the caller, and keeps its data across a close and a new thread', async (t) => {
  const dir = tempDir(t);
  const dbPath = path.join(dir, 'db');
  const lines: string[] = [];
  const first = await startEngineThread({ dbPath, socketPath: path.join(dir, 'engine.sock') }, (msg) => lines.push(msg));
  t.true(first.uri.startsWith('mongodb://'));
  t.is(first.failure(), undefined);
  await withClient(first.uri, async (c) => {
    await c.db('d').collection<{ _id: string; n: number }>('units').insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: `u${i}`, n: i })), { writeConcern: { j: true } });
  });
  await first.close();
  await first.close(); // idempotent
  t.true(lines.includes('engine listening'), lines.join(' | '));
  t.true(lines.includes('engine closed'), lines.join(' | '));
  t.false(fs.existsSync(path.join(dir, 'engine.sock')), 'the socket is removed on close');

  const second = await startEngineThread({ dbPath, socketPath: path.join(dir, 'engine.sock') }, () => undefined);
  try {
    const docs = await withClient(second.uri, (c) => c.db('d').collection('units').find({}, { sort: { n: 1 } }).toArray());
    t.deepEqual(
      docs.map((d) => d['n']),
      Array.from({ length: 50 }, (_, i) => i),
    );
  } finally {
    await second.close();
  }
});

test('a data directory another engine holds: the start fails with DbPathLockedError and the holder goes on', async (t) => {
  const dir = tempDir(t);
  const dbPath = path.join(dir, 'db');
  const holder = await startEngine({ dbPath, host: '127.0.0.1', port: 0 });
  try {
    const err = await t.throwsAsync(startEngineThread({ dbPath, host: '127.0.0.1', port: 0 }, () => undefined));
    t.is(err?.name, 'DbPathLockedError');
    t.regex(err?.message ?? '', /already in use/);
    // the holder is untouched
    await withClient(holder.uri, async (c) => {
      await c.db('d').collection('x').insertOne({ ok: 1 });
      t.is(await c.db('d').collection('x').countDocuments(), 1);
    });
  } finally {
    await holder.close();
  }
});
