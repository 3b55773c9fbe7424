import test from 'ava';
import { parseTime } from '../../src/domain/times.ts';

const iso = (raw: string): string | null => parseTime(raw)?.toISOString() ?? null;

test('epoch seconds and ISO 8601 dates and date-times are read exactly; no zone means UTC', (t) => {
  t.is(iso('0'), '1970-01-01T00:00:00.000Z');
  t.is(iso('1714557600'), '2024-05-01T10:00:00.000Z');
  t.is(iso('2024-05-01'), '2024-05-01T00:00:00.000Z');
  t.is(iso('2024-05-01T10:00'), '2024-05-01T10:00:00.000Z');
  t.is(iso('2024-05-01T10:00:00Z'), '2024-05-01T10:00:00.000Z');
  t.is(iso('2024-05-01T10:00:00.5Z'), '2024-05-01T10:00:00.500Z');
  t.is(iso('2024-05-01T12:00:00+02:00'), '2024-05-01T10:00:00.000Z');
  t.is(iso('2024-05-01T05:00:00-0500'), '2024-05-01T10:00:00.000Z');
  t.is(iso('2024-02-29'), '2024-02-29T00:00:00.000Z');
});

test('anything else is refused rather than guessed at or rolled over', (t) => {
  for (const raw of ['March 7', 'Mar 7 2024', '2024-02-30', '2023-02-29', '2024-13-01', '2024-05-01T24:00:00Z', '2024-05-01T10:60Z', '-1', '1e9', '', ' 2024-05-01', '2024-5-1', '2024-05-01T10:00:00+25:00', 'now']) {
    t.is(parseTime(raw), null, raw);
  }
});
