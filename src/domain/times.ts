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
  const day = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
  if (day.getUTCFullYear() !== Number(y) || day.getUTCMonth() !== Number(mo) - 1 || day.getUTCDate() !== Number(d)) return null;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return null;
  const offset = zone === undefined || zone === 'Z' ? 'Z' : `${zone.slice(0, 3)}:${zone.slice(-2)}`;
  if (offset !== 'Z' && (Number(offset.slice(1, 3)) > 23 || Number(offset.slice(4)) > 59)) return null;
  const t = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}${frac !== undefined ? `.${frac.slice(0, 3).padEnd(3, '0')}` : ''}${offset}`);
  return Number.isNaN(t.getTime()) ? null : t;
}
