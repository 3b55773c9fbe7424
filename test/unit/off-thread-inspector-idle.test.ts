import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import test from 'ava';
import { OffThreadInspector, startInspectionWorker } from '../../src/workers/off-thread-inspector.ts';
import { buildTar } from '../helpers/tree.ts';

const IDLE_MS = 150;

test('the inspection thread ends once no inspection ran for a while, quietly, and the next inspection starts it again', async (t) => {
  const tar = await buildTar([{ name: 'data.txt', body: 'inspect me '.repeat(3000) }]);
  const started: Worker[] = [];
  const failures: Error[] = [];
  const inspector = new OffThreadInspector({
    startWorker: (data) => {
      const w = startInspectionWorker(data);
      started.push(w);
      return w;
    },
    onFailure: (err) => failures.push(err),
    idleEndMs: IDLE_MS,
  });
  t.teardown(() => inspector.close());

  t.is((await inspector.inspect(Readable.from([tar]))).entries, 1);
  // back to back: the same thread
  t.is((await inspector.inspect(Readable.from([tar]))).entries, 1);
  t.is(started.length, 1);
  const exited = once(started[0]!, 'exit');
  await Promise.race([exited, sleep(IDLE_MS * 20)]);
  t.is(started[0]!.threadId, -1, 'the idle thread has ended');

  t.is((await inspector.inspect(Readable.from([tar]))).entries, 1);
  t.is(started.length, 2, 'a new thread for the next inspection');
  t.deepEqual(failures, [], 'an idle end is no failure for the log');
});
