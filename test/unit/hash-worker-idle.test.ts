import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { HashWorker } from '../../src/storage/hash-worker.ts';

const IDLE_MS = 100;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Hashes `bytes` under `key` on `hasher`, start to digest. */
async function hashOn(hasher: HashWorker, key: string, bytes: Buffer): Promise<string> {
  hasher.create(key, 'sha256');
  await hasher.update(key, [bytes], bytes.length);
  return hasher.digest(key);
}

test('a worker that holds no hash ends once idle, and the next hash starts one again', async (t) => {
  const hasher = new HashWorker(IDLE_MS);
  t.teardown(() => hasher.close());
  const first = randomBytes(600 * 1024);
  t.is(await hashOn(hasher, 'a', first), sha256(first));
  const started = hasher.generation;
  await sleep(IDLE_MS * 5);
  t.is(hasher.generation, started + 1, 'the idle worker ended');
  const second = randomBytes(300 * 1024);
  t.is(await hashOn(hasher, 'b', second), sha256(second));
  t.is(hasher.generation, started + 2, 'a new worker hashed it');
});

test('a worker that holds a hash between calls is kept, with the hash, and ends once it is digested', async (t) => {
  const hasher = new HashWorker(IDLE_MS);
  t.teardown(() => hasher.close());
  const part1 = randomBytes(400 * 1024);
  const part2 = randomBytes(100 * 1024);
  hasher.create('upload', 'sha256');
  await hasher.update('upload', [part1], part1.length);
  const generation = hasher.generation;
  // an upload session between two PATCHes: idle, but its hash lives in the worker
  await sleep(IDLE_MS * 5);
  t.is(hasher.generation, generation);
  await hasher.update('upload', [part2], part2.length);
  t.is(await hasher.digest('upload'), sha256(Buffer.concat([part1, part2])));
  await sleep(IDLE_MS * 5);
  t.is(hasher.generation, generation + 1);
});

test('a dropped hash lets the worker end', async (t) => {
  const hasher = new HashWorker(IDLE_MS);
  t.teardown(() => hasher.close());
  const bytes = randomBytes(64 * 1024);
  hasher.create('gone', 'sha256');
  await hasher.update('gone', [bytes], bytes.length);
  const generation = hasher.generation;
  hasher.drop('gone');
  await sleep(IDLE_MS * 5);
  t.is(hasher.generation, generation + 1);
});
