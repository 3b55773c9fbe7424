import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { VolregError } from '../../src/domain/errors.ts';
import { ByteBudget } from '../../src/storage/byte-budget.ts';
import { copyInto, type CopyHooks } from '../../src/storage/pipelined-copy.ts';

/** The budget every upload's copy shares (byte-budget.ts, pipelined-copy.ts). */

/** A budget that remembers the most it ever had out. */
class WatchedBudget extends ByteBudget {
  most = 0;
  override tryTake(n: number): number {
    const got = super.tryTake(n);
    this.most = Math.max(this.most, this.inUse);
    return got;
  }
  override give(n: number): void {
    super.give(n);
    this.most = Math.max(this.most, this.inUse);
  }
}

test('bytes go out in the order asked, never past the capacity; a request larger than the capacity takes all of it', async (t) => {
  const b = new ByteBudget(100);
  t.is(b.tryTake(60), 60);
  const order: string[] = [];
  const first = b.take(50).then((n) => order.push(`first ${n}`));
  // a small request behind a waiting one waits its turn, though it would fit
  t.is(b.tryTake(10), 0);
  const second = b.take(10).then((n) => order.push(`second ${n}`));
  const huge = b.take(1000).then((n) => order.push(`huge ${n}`));
  await sleep(5);
  t.deepEqual(order, []);
  b.give(60);
  await Promise.all([first, second]);
  t.deepEqual(order, ['first 50', 'second 10']);
  t.is(b.inUse, 60);
  b.give(60);
  await huge;
  t.deepEqual(order, ['first 50', 'second 10', 'huge 100']);
  b.give(100);
  t.is(b.inUse, 0);
});

/** A source of `bytes` in socket-sized pieces, with a pause now and then (a client on a network). */
function source(bytes: Buffer, opts: { failAt?: number } = {}): Readable {
  return Readable.from(
    (async function* () {
      for (let at = 0; at < bytes.length; at += 64 * 1024) {
        if (opts.failAt !== undefined && at >= opts.failAt) throw new Error('client went away');
        if (at % (512 * 1024) === 0) await sleep(1);
        yield bytes.subarray(at, at + 64 * 1024);
      }
    })(),
    { objectMode: false },
  );
}

function hooks(budget: ByteBudget, overrides: Partial<CopyHooks> = {}): CopyHooks {
  return { hash: async () => undefined, written: () => undefined, room: async () => undefined, budget, limits: {}, ...overrides };
}

test('many uploads at once through a budget far smaller than their pipelines: all complete byte for byte, the budget never overdrawn, all of it back', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-budget-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // each copy alone would keep about 2.5 MB in flight; 24 of them share 640 KiB
  const budget = new WatchedBudget(640 * 1024);
  const bodies = Array.from({ length: 24 }, () => randomBytes(3 * 1024 * 1024 + 12345));
  const copied = await Promise.all(
    bodies.map(async (body, i) => {
      const fh = await open(join(dir, `u${i}`), 'w+');
      try {
        return await copyInto(source(body), fh, 0, hooks(budget));
      } finally {
        await fh.close();
      }
    }),
  );
  t.deepEqual(copied, bodies.map((b) => b.length));
  for (const [i, body] of bodies.entries()) {
    const back = await readFile(join(dir, `u${i}`));
    t.is(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(body).digest('hex'), `upload ${i}`);
  }
  t.true(budget.most <= budget.capacity, `at most ${budget.most} of ${budget.capacity} out`);
  t.true(budget.most > 64 * 1024, 'the copies did use it');
  t.is(budget.inUse, 0);
});

test('copies that fail (the client gone, no room on the disk) give back every byte they took', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-budget-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const budget = new ByteBudget(512 * 1024);
  const body = randomBytes(2 * 1024 * 1024);
  const fh = await open(join(dir, 'fails'), 'w+');
  t.teardown(() => fh.close());

  await t.throwsAsync(copyInto(source(body, { failAt: 1024 * 1024 }), fh, 0, hooks(budget)), { message: /upload body ended before it was complete/ });
  t.is(budget.inUse, 0);

  let rooms = 0;
  const full = hooks(budget, {
    room: async () => {
      if (++rooms === 2) throw new VolregError('STORAGE_FULL', 'no room');
    },
  });
  await t.throwsAsync(copyInto(source(body), fh, 0, full), { message: 'no room' });
  t.is(budget.inUse, 0);

  let writes = 0;
  const diskFails = hooks(budget, {
    hash: async () => {
      if (++writes === 3) throw new Error('EIO');
    },
  });
  await t.throwsAsync(copyInto(source(body), fh, 0, diskFails), { message: 'EIO' });
  t.is(budget.inUse, 0);
});

test('clients that send a little and then pause hold none of the budget meanwhile: another upload goes through', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-budget-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const budget = new ByteBudget(256 * 1024);
  let resume!: () => void;
  const paused = new Promise<void>((r) => (resume = r));
  // together the first pieces of the slow ones are the whole budget; they go on only once the fast upload is done
  const slowBodies = Array.from({ length: 4 }, () => randomBytes(128 * 1024));
  const slow = (body: Buffer): Readable =>
    Readable.from(
      (async function* () {
        yield body.subarray(0, 64 * 1024);
        await paused;
        yield body.subarray(64 * 1024);
      })(),
      { objectMode: false },
    );
  const copyTo = async (name: string, src: Readable): Promise<Buffer> => {
    const fh = await open(join(dir, name), 'w+');
    try {
      await copyInto(src, fh, 0, hooks(budget));
    } finally {
      await fh.close();
    }
    return readFile(join(dir, name));
  };
  const slowOnes = slowBodies.map((body, i) => copyTo(`slow${i}`, slow(body)));
  await sleep(20);
  const fastBody = randomBytes(4 * 1024 * 1024);
  const fast = copyTo('fast', source(fastBody));
  const outcome = await Promise.race([fast.then(() => 'done'), sleep(15_000).then(() => 'stalled')]);
  t.is(outcome, 'done', 'the fast upload was not held up by the paused ones');
  t.true((await fast).equals(fastBody));
  resume();
  const back = await Promise.all(slowOnes);
  for (const [i, body] of slowBodies.entries()) t.true(back[i]!.equals(body), `slow ${i}`);
  t.is(budget.inUse, 0);
});
