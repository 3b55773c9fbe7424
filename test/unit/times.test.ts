import test from 'ava';
import { formatDuration, parseDuration, parseTime } from '../../src/domain/times.ts';

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

test('a date in the years 0000 to 0099 is read as that year, not refused or moved to the 1900s', (t) => {
  t.is(iso('0050-01-01'), '0050-01-01T00:00:00.000Z');
  t.is(iso('0000-01-01'), '0000-01-01T00:00:00.000Z');
  t.is(iso('0099-12-31T23:59:59Z'), '0099-12-31T23:59:59.000Z');
  t.is(iso('0004-02-29'), '0004-02-29T00:00:00.000Z');
  t.is(parseTime('0001-02-29'), null, 'a day that year does not have');
});

test('anything else is refused rather than guessed at or rolled over', (t) => {
  for (const raw of ['March 7', 'Mar 7 2024', '2024-02-30', '2023-02-29', '2024-13-01', '2024-05-01T24:00:00Z', '2024-05-01T10:60Z', '-1', '1e9', '', ' 2024-05-01', '2024-5-1', '2024-05-01T10:00:00+25:00', 'now']) {
    t.is(parseTime(raw), null, raw);
  }
});

const durations: Array<[string, number | null]> = [
  ['26h', 26 * 3600_000],
  ['90m', 90 * 60_000],
  ['2d', 2 * 86_400_000],
  ['1d12h', 36 * 3600_000],
  ['1w', 7 * 86_400_000],
  ['1h30m15s', 5415_000],
  ['3600', 3600_000],
  ['1.5h', null],
  ['h', null],
  ['12h1d', null],
  ['1h1h', null],
  ['0', null],
  ['0h', null],
  ['', null],
  ['-5m', null],
  ['26 h', null],
];
for (const [raw, ms] of durations) {
  test(`parseDuration(${JSON.stringify(raw)})`, (t) => t.is(parseDuration(raw), ms));
}

test('formatDuration: the largest unit and the one below it', (t) => {
  t.is(formatDuration(0), '0s');
  t.is(formatDuration(999), '0s');
  t.is(formatDuration(45_000), '45s');
  t.is(formatDuration(1600_000), '26m40s');
  t.is(formatDuration(26 * 3600_000 + 600_000), '1d2h');
  t.is(formatDuration(3 * 86_400_000 + 3599_000), '3d');
  t.is(formatDuration(-5000), '0s');
});
