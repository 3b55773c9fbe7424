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
