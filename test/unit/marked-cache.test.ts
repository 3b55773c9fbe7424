import test from 'ava';
import { MarkedCache } from '../../src/metadata/marked-cache.ts';

/** MarkedCache on its own, with a mark the test moves by hand. */

function counter() {
  let n = 0;
  return { load: async (v: string) => (n++, v), get loads() { return n; } };
}

test('an answer is kept while the mark stays, and asked again once it moves', async (t) => {
  let mark = 0;
  const cache = new MarkedCache<string>(10);
  const c = counter();
  t.is(await cache.read('k', () => mark, () => c.load('a'), () => true), 'a');
  t.is(await cache.read('k', () => mark, () => c.load('b'), () => true), 'a');
  t.is(c.loads, 1);
  mark++;
  t.is(await cache.read('k', () => mark, () => c.load('b'), () => true), 'b');
  t.is(c.loads, 2);
});

test('an answer whose mark moved while it was asked is not kept (it may be older than the change)', async (t) => {
  let mark = 0;
  const cache = new MarkedCache<string>(10);
  // the change lands while the answer from before it is on its way
  t.is(await cache.read('k', () => mark, async () => (mark++, 'before the change'), () => true), 'before the change');
  const c = counter();
  t.is(await cache.read('k', () => mark, () => c.load('after the change'), () => true), 'after the change');
  t.is(c.loads, 1);
  t.is(cache.lookup('k', mark), 'after the change');
});

test('keep decides what is kept; the least recently used go first past the bound', async (t) => {
  const cache = new MarkedCache<string | null>(2);
  const mark = () => 0;
  await cache.read('none', mark, async () => null, (v) => v !== null);
  t.is(cache.size, 0);
  await cache.read('a', mark, async () => 'a', () => true);
  await cache.read('b', mark, async () => 'b', () => true);
  t.is(cache.lookup('a', 0), 'a'); // a is now the most recently used
  await cache.read('c', mark, async () => 'c', () => true);
  t.is(cache.size, 2);
  t.is(cache.lookup('b', 0), undefined, 'b went first');
  t.is(cache.lookup('a', 0), 'a');
  t.is(cache.lookup('c', 0), 'c');
});

test('keep() refuses an answer read before a mark that has moved since', (t) => {
  let mark = 5;
  const cache = new MarkedCache<string>(10);
  cache.keep('k', 4, () => mark, 'old');
  t.is(cache.size, 0);
  cache.keep('k', 5, () => mark, 'current');
  t.is(cache.lookup('k', 5), 'current');
  mark = 6;
  t.is(cache.lookup('k', mark), undefined);
});

test("what this process's own write left is kept only when the mark moved by that write alone", (t) => {
  let mark = 10;
  const cache = new MarkedCache<string>(10);
  const before = mark;
  mark += 1; // the write, acknowledged
  cache.keepWritten('mine', before, () => mark, 'as written');
  t.is(cache.lookup('mine', mark), 'as written');

  const before2 = mark;
  mark += 2; // the write and another change in between: which came last is unknown
  cache.keepWritten('raced', before2, () => mark, 'as written');
  t.is(cache.lookup('raced', mark), undefined);

  const before3 = mark;
  // a write that changed nothing moved nothing, so a change by someone else would look like it
  cache.keepWritten('unchanged', before3, () => mark, 'as written');
  t.is(cache.lookup('unchanged', mark), undefined);

  mark += 1; // a later change sends the kept write back to the database
  t.is(cache.lookup('mine', mark), undefined);
});

test('weighed answers: the bound counts their weight; a stale one frees its weight; one heavier than the bound is not kept', async (t) => {
  const cache = new MarkedCache<string[]>(10, (names) => names.length);
  let mark = 0;
  const read = (key: string, names: string[]) => cache.read(key, () => mark, async () => names, () => true);
  await read('a', ['1', '2', '3', '4']);
  await read('b', ['1', '2', '3', '4', '5']);
  t.is(cache.size, 2, '9 of 10');
  await read('c', ['1', '2']);
  t.is(cache.lookup('a', mark), undefined, 'the least recently used went to make room');
  t.deepEqual(cache.lookup('b', mark), ['1', '2', '3', '4', '5']);
  t.deepEqual(cache.lookup('c', mark), ['1', '2']);
  await read('huge', Array.from({ length: 11 }, (_, i) => String(i)));
  t.is(cache.lookup('huge', mark), undefined);
  t.is(cache.size, 2, 'nothing was pushed out for it');
  mark++;
  t.is(cache.lookup('b', mark), undefined, 'stale: dropped');
  await read('d', ['1', '2', '3', '4', '5', '6', '7', '8']);
  t.is(cache.size, 2, "b's weight was given back: c (2, stale but not yet looked at) and d (8) fit");
  t.deepEqual(cache.lookup('d', mark), ['1', '2', '3', '4', '5', '6', '7', '8']);
});
