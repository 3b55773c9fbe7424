import type { EntityTags, Preconditions } from '../domain/preconditions.ts';

/**
 * Conditional requests on content whose entity tag is its digest (RFC 9110 section 13).
 *
 * - If-None-Match uses the weak comparison: `W/"x"` matches `"x"`, and `*` matches any content.
 * - If-Range uses the strong comparison and takes one validator: the Range applies only when it
 *   is exactly this strong entity tag. A weak tag, `*`, a list or a date (which a digest can not
 *   be compared with) sends the whole content, so a client resuming a download never appends
 *   bytes of other content to what it has.
 */

/** The entity tag of content named by its digest (a blob, a snapshot's layer). */
export function etagOf(digest: string): string {
  return `"${digest}"`;
}

export function ifNoneMatchHits(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

/** Whether If-None-Match (the header's value; empty when absent) says the client holds the content of `digest`: 304. */
export function clientHolds(ifNoneMatch: string, digest: string): boolean {
  return ifNoneMatch !== '' && ifNoneMatchHits(ifNoneMatch, etagOf(digest));
}

/** The Range header to honour: `range` when If-Range is absent or names this content, else none. */
export function rangeToHonour(range: string, ifRange: string, etag: string): string | undefined {
  if (range === '') return undefined;
  if (ifRange === '') return range;
  return ifRange.trim() === etag ? range : undefined;
}

/**
 * If-Match and If-None-Match of a request that changes a manifest reference, as digests.
 * If-Match compares strongly, so a weak tag in it never matches and is left out; If-None-Match
 * compares weakly. A tag that names no digest is kept: it matches nothing.
 */
export function requestPreconditions(ifMatch: string, ifNoneMatch: string): Preconditions {
  return {
    ...(ifMatch.trim() !== '' ? { ifMatch: entityTags(ifMatch, false) } : {}),
    ...(ifNoneMatch.trim() !== '' ? { ifNoneMatch: entityTags(ifNoneMatch, true) } : {}),
  };
}

function entityTags(header: string, weakMatches: boolean): EntityTags {
  if (header.trim() === '*') return '*';
  const tags: string[] = [];
  for (const raw of header.split(',')) {
    let t = raw.trim();
    if (t.startsWith('W/')) {
      if (!weakMatches) continue;
      t = t.slice(2);
    }
    if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) tags.push(t.slice(1, -1));
  }
  return tags;
}
