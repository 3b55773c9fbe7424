import test from 'ava';
import { TransferRate } from '../../src/cli/transfer-rate.ts';

/** The rate a progress bar shows: what the link does over the last seconds, and a stall as one. */
function clocked(): { rate: TransferRate; advance: (ms: number) => void } {
  let now = 1_000_000;
  return { rate: new TransferRate(() => now), advance: (ms) => void (now += ms) };
}

test('the rate is that of the last 5 s, not of the whole transfer', (t) => {
  const { rate, advance } = clocked();
  for (let i = 0; i < 10; i++) {
    advance(1000);
    rate.add(4 * 1024 * 1024);
  }
  for (let i = 0; i < 6; i++) {
    advance(1000);
    rate.add(1024 * 1024);
  }
  t.is(rate.describe(), '1.0 MiB/s');
});

test('at the start, the rate counts the time so far, at least 1 s', (t) => {
  const { rate, advance } = clocked();
  rate.add(512 * 1024);
  t.is(rate.describe(), '512.0 KiB/s');
  advance(2000);
  rate.add(512 * 1024);
  t.is(rate.describe(), '512.0 KiB/s');
});

test('a link on which nothing came for 3 s or more says so, with how long', (t) => {
  const { rate, advance } = clocked();
  advance(1000);
  rate.add(1024);
  advance(2900);
  t.regex(rate.describe(), /^\d+(\.\d)? B\/s$/);
  advance(9100);
  t.is(rate.describe(), '0 B/s, nothing for 12 s');
  rate.add(2048);
  t.is(rate.describe(), '410 B/s', 'what came in the last 5 s');
});

test('nothing at all yet is 0 B/s', (t) => {
  const { rate } = clocked();
  t.is(rate.describe(), '0 B/s');
});

test('a step of the wall clock changes nothing: the rate is timed on the monotonic clock', (t) => {
  const wall = Date.now;
  let step = 0;
  Date.now = () => wall() + step;
  try {
    const rate = new TransferRate();
    rate.add(1024 * 1024);
    step = 3600 * 1000;
    t.is(rate.describe(), '1.0 MiB/s');
  } finally {
    Date.now = wall;
  }
});
