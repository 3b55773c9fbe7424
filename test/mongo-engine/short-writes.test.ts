import test from 'ava';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { startEngine } from '../../src/mongo-engine/index.ts';
import { engineTempDir, withDriver } from '../helpers/mongo.ts';

/**
 * A write(2) may take only part of what it is given and report no error: a disk that is full
 * takes what fits, and the next write succeeds if space was freed in between (an upload that
 * failed for want of space truncating its file, a collection deleting blobs). The snapshot a
 * compaction writes must hold every byte all the same: the generation before it is deleted once
 * it is in place. (Its own file: the short writes are put into fs.promises.open for the process,
 * and its tests run one at a time.)
 */

/** Makes the first writev of each new snapshot file take only half its bytes, as a filling disk would. */
function shortSnapshotWrites(): { shortened: () => number; restore: () => void } {
  const realOpen = fs.promises.open;
  let shortened = 0;
  fs.promises.open = (async (file: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    const fh = await realOpen(file, flags, mode);
    if (!/snapshot-\d+\.tmp$/.test(String(file))) return fh;
    const realWritev = fh.writev.bind(fh);
    let first = true;
    fh.writev = (async (buffers: NodeJS.ArrayBufferView[], position?: number) => {
      if (!first) return realWritev(buffers, position);
      first = false;
      const whole = Buffer.concat(buffers.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
      const part = whole.subarray(0, Math.floor(whole.length / 2));
      await realWritev([part], position);
      shortened++;
      return { bytesWritten: part.length, buffers };
    }) as FileHandle['writev'];
    return fh;
  }) as typeof fs.promises.open;
  return { shortened: () => shortened, restore: () => void (fs.promises.open = realOpen) };
}

test.serial('a compaction whose snapshot write was taken in part still writes every byte: the engine starts again with every document', async (t) => {
  const dir = engineTempDir(t);
  const short = shortSnapshotWrites();
  t.teardown(short.restore);
  const engine = await startEngine({ dbPath: dir, compactJournalBytes: 32 * 1024 });
  await withDriver(engine.uri, async (c) => {
    const coll = c.db('short').collection('c');
    for (let i = 0; i < 20; i++) {
      await coll.insertMany(Array.from({ length: 50 }, (_, j) => ({ n: i * 50 + j, pad: 'x'.repeat(64) })));
    }
  });
  await engine.close();
  short.restore();
  t.true(short.shortened() > 0, 'a snapshot was written (and its first write shortened)');
  const again = await startEngine({ dbPath: dir });
  try {
    await withDriver(again.uri, async (c) => {
      t.is(await c.db('short').collection('c').countDocuments({}), 1000);
    });
  } finally {
    await again.close();
  }
});

test.serial('a snapshot the disk had no room for gives its space back at once, and the next try waits instead of filling the disk at every write', async (t) => {
  const dir = engineTempDir(t);
  const realOpen = fs.promises.open;
  let attempts = 0;
  fs.promises.open = (async (file: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    const fh = await realOpen(file, flags, mode);
    if (!/snapshot-\d+\.tmp$/.test(String(file)) || attempts++ > 0) return fh;
    const realWritev = fh.writev.bind(fh);
    // the first snapshot takes what fits, then the disk is full
    fh.writev = (async (buffers: NodeJS.ArrayBufferView[], position?: number) => {
      await realWritev(buffers.slice(0, 1), position);
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }) as FileHandle['writev'];
    return fh;
  }) as typeof fs.promises.open;
  t.teardown(() => void (fs.promises.open = realOpen));
  let failures = 0;
  let written = 0;
  const engine = await startEngine({
    dbPath: dir,
    compactJournalBytes: 32 * 1024,
    log: (msg) => {
      if (msg === 'compaction failed') failures++;
    },
  });
  await withDriver(engine.uri, async (c) => {
    const coll = c.db('full').collection('c');
    const batch = async (i: number): Promise<unknown> => coll.insertMany(Array.from({ length: 50 }, (_, j) => ({ n: i * 50 + j, pad: 'x'.repeat(64) })));
    let i = 0;
    // the journal passes the threshold, and the snapshot it sets off fails
    for (const started = Date.now(); failures === 0 && Date.now() - started < 10_000; ) {
      if (i < 10) await batch(i++);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    t.is(failures, 1);
    t.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'the unfinished snapshot is removed');
    // ten more batches, each a flush with the journal past the threshold
    for (const end = i + 10; i < end; i++) await batch(i);
    written = i * 50;
    t.is(await coll.countDocuments({}), written);
  });
  t.is(attempts, 1, 'no second snapshot while the journal kept growing past the threshold');
  await engine.close(); // a clean stop still cuts its snapshot
  fs.promises.open = realOpen;
  t.is(attempts, 2);
  t.deepEqual(fs.readdirSync(dir).filter((f) => /\.(tmp|bson)$/.test(f)), ['snapshot-1.bson']);
  const again = await startEngine({ dbPath: dir });
  try {
    await withDriver(again.uri, async (c) => t.is(await c.db('full').collection('c').countDocuments({}), written));
  } finally {
    await again.close();
  }
});
