const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * A point in time as a client writes it in a query: epoch seconds (digits only), or an ISO 8601
 * date (`2024-05-01`, midnight UTC) or date-time (`2024-05-01T10:00:00Z`, `...+02:00`; UTC when
 * it names no zone). Null for anything else, and for a date or time that does not exist
 * (`2024-02-30`, `25:00`): JavaScript's own parser guesses at such input or rolls it over.
 */
export function parseTime(raw: string): Date | null {
  if (/^[0-9]{1,12}$/.test(raw)) return new Date(Number(raw) * 1000);
  const m = ISO_8601.exec(raw);
  if (!m) return null;
  const [, y, mo, d, h = '00', mi = '00', s = '00', frac, zone] = m as unknown as [string, string, string, string, string?, string?, string?, string?, string?];
  // setUTCFullYear, not Date.UTC: that reads the years 0 to 99 as 1900 to 1999
  const day = new Date(0);
  day.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  if (day.getUTCFullYear() !== Number(y) || day.getUTCMonth() !== Number(mo) - 1 || day.getUTCDate() !== Number(d)) return null;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return null;
  const offset = zone === undefined || zone === 'Z' ? 'Z' : `${zone.slice(0, 3)}:${zone.slice(-2)}`;
  if (offset !== 'Z' && (Number(offset.slice(1, 3)) > 23 || Number(offset.slice(4)) > 59)) return null;
  const t = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}${frac !== undefined ? `.${frac.slice(0, 3).padEnd(3, '0')}` : ''}${offset}`);
  return Number.isNaN(t.getTime()) ? null : t;
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { w: 7 * 86_400_000, d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 };

/**
 * A length of time as an operator writes it on a command line: whole numbers with units, largest
 * first (`26h`, `90m`, `2d`, `1d12h`, `1w`), or bare seconds (`3600`); in milliseconds. Null for
 * anything else (`1.5h`, `h`, `12h1d`, a unit twice) and for no time at all (`0`, `0h`).
 */
export function parseDuration(raw: string): number | null {
  if (/^[0-9]{1,9}$/.test(raw)) return Number(raw) > 0 ? Number(raw) * 1000 : null;
  const m = /^(?:([0-9]{1,6})w)?(?:([0-9]{1,6})d)?(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,9})s)?$/.exec(raw);
  if (!m || raw === '') return null;
  const ms = ['w', 'd', 'h', 'm', 's'].reduce((sum, unit, i) => sum + Number(m[i + 1] ?? 0) * DURATION_UNITS_MS[unit]!, 0);
  return ms > 0 ? ms : null;
}

/** A length of time, to the second, in its largest unit and the one below it if not 0: `3d4h`, `1d`, `26m40s`, `45s`, `0s`. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const units: Array<[string, number]> = [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]];
  const first = units.findIndex(([, size]) => seconds >= size);
  if (first === -1) return '0s';
  const [unit, size] = units[first]!;
  const next = units[first + 1];
  const rest = next ? Math.floor((seconds % size) / next[1]) : 0;
  return `${Math.floor(seconds / size)}${unit}${rest > 0 ? `${rest}${next![0]}` : ''}`;
}
