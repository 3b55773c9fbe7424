import type { ParsedUrlQuery } from 'node:querystring';
import { VolregError } from '../domain/errors.ts';

/** The largest page served; a larger `n` is served in pages of this size, with a Link header. */
export const MAX_PAGE_SIZE = 1000;

function single(query: ParsedUrlQuery, key: string): string | undefined {
  const v = query[key];
  if (Array.isArray(v)) throw new VolregError('BAD_REQUEST', `query parameter ${key} given more than once`);
  return v;
}

/**
 * `n` and `last` of a paginated list (tags/list, _catalog). `n` must be a non-negative
 * integer (400 PAGINATION_NUMBER_INVALID otherwise); `last` must satisfy `validLast`.
 */
export function parsePage(query: ParsedUrlQuery, validLast: (s: string) => void): { n?: number; last?: string } {
  const rawN = single(query, 'n');
  const last = single(query, 'last');
  const page: { n?: number; last?: string } = {};
  if (rawN !== undefined) {
    if (!/^\d+$/.test(rawN)) throw new VolregError('PAGINATION_NUMBER_INVALID', 'n must be a non-negative integer', { n: rawN.slice(0, 20) });
    // however many digits: a client asking for "everything" with a huge n gets pages, not a 400
    page.n = Math.min(Number(rawN), MAX_PAGE_SIZE);
  }
  if (last !== undefined && last !== '') {
    validLast(last);
    page.last = last;
  }
  return page;
}

/** RFC 8288 `Link` to the next page. */
export function nextLink(path: string, next: { n: number; last: string }): string {
  return `<${path}?n=${next.n}&last=${encodeURIComponent(next.last)}>; rel="next"`;
}
