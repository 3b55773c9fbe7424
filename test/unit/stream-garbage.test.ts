import { randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import test from 'ava';
import { GarbageRelief, minorCollector, withGarbageRelief } from '../../src/storage/stream-garbage.ts';

function counting(everyBytes: number): { relief: GarbageRelief; collections: () => number } {
  let n = 0;
  return { relief: new GarbageRelief(everyBytes, () => n++), collections: () => n };
}

test('a collection once per everyBytes streamed, counted across chunks of any size', (t) => {
  const { relief, collections } = counting(100);
  relief.streamed(60);
  t.is(collections(), 0);
  relief.streamed(39);
  t.is(collections(), 0);
  relief.streamed(1);
  t.is(collections(), 1);
  relief.streamed(99);
  t.is(collections(), 1, 'the count starts again after a collection');
  relief.streamed(250);
  t.is(collections(), 2, 'one collection however far past the mark');
});

test('without a collector the relief does nothing', (t) => {
  const relief = new GarbageRelief(1, null);
  t.notThrows(() => relief.streamed(10));
});

test('this runtime hands out a minor collection without a command-line flag', (t) => {
  const collect = minorCollector();
  if (collect === null) return t.fail('no minor collector');
  t.notThrows(collect);
});

test('withGarbageRelief passes the bytes through unchanged and counts them', async (t) => {
  const bytes = randomBytes(5 * 1024 * 1024 + 17);
  const { relief, collections } = counting(1024 * 1024);
  const chunks = Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) => bytes.subarray(i * 65536, (i + 1) * 65536));
  const out = await buffer(withGarbageRelief(Readable.from(chunks), relief));
  t.true(out.equals(bytes));
  t.is(collections(), 5);
});

test('withGarbageRelief: a failing source fails the reader', async (t) => {
  const source = new PassThrough();
  const counted = withGarbageRelief(source, counting(1).relief);
  source.write(Buffer.from('partial'));
  setImmediate(() => source.destroy(new Error('disk read failed')));
  await t.throwsAsync(buffer(counted), { message: 'disk read failed' });
});

test('withGarbageRelief: a reader that goes away closes the source', async (t) => {
  const source = new PassThrough();
  const counted = withGarbageRelief(source, counting(1).relief);
  source.on('error', () => undefined); // destroyed as a premature close
  const closed = new Promise((resolve) => source.on('close', resolve));
  counted.destroy();
  await closed;
  t.true(source.destroyed);
});
