import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { startEngine } from '../../src/mongo-engine/index.ts';
import { startEngineThread } from '../../src/workers/engine-thread.ts';
import { engineTempDir, withDriver } from '../helpers/mongo.ts';

/** The embedded engine on its own worker thread, as `volreg serve` runs it (workers/engine-thread.ts). */

test('serves the driver over its unix socket, logs through the caller, and keeps its data across a close and a new thread', async (t) => {
  const dir = engineTempDir(t, 'volreg-engine-thread-');
  const dbPath = path.join(dir, 'db');
  const lines: string[] = [];
  const first = await startEngineThread({ dbPath, socketPath: path.join(dir, 'engine.sock') }, (msg) => lines.push(msg));
  t.true(first.uri.startsWith('mongodb://'));
  t.is(first.failure(), undefined);
  await withDriver(first.uri, async (c) => {
    await c.db('d').collection<{ _id: string; n: number }>('units').insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: `u${i}`, n: i })), { writeConcern: { j: true } });
  });
  await first.close();
  await first.close(); // idempotent
  t.true(lines.includes('engine listening'), lines.join(' | '));
  t.true(lines.includes('engine closed'), lines.join(' | '));
  t.false(fs.existsSync(path.join(dir, 'engine.sock')), 'the socket is removed on close');

  const second = await startEngineThread({ dbPath, socketPath: path.join(dir, 'engine.sock') }, () => undefined);
  try {
    const docs = await withDriver(second.uri, (c) => c.db('d').collection('units').find({}, { sort: { n: 1 } }).toArray());
    t.deepEqual(
      docs.map((d) => d['n']),
      Array.from({ length: 50 }, (_, i) => i),
    );
  } finally {
    await second.close();
  }
});

test('a data directory another engine holds: the start fails with DbPathLockedError and the holder goes on', async (t) => {
  const dir = engineTempDir(t, 'volreg-engine-thread-');
  const dbPath = path.join(dir, 'db');
  const holder = await startEngine({ dbPath, host: '127.0.0.1', port: 0 });
  try {
    const err = await t.throwsAsync(startEngineThread({ dbPath, host: '127.0.0.1', port: 0 }, () => undefined));
    t.is(err?.name, 'DbPathLockedError');
    t.regex(err?.message ?? '', /already in use/);
    // the holder is untouched
    await withDriver(holder.uri, async (c) => {
      await c.db('d').collection('x').insertOne({ ok: 1 });
      t.is(await c.db('d').collection('x').countDocuments(), 1);
    });
  } finally {
    await holder.close();
  }
});
