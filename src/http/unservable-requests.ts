import type { IncomingMessage } from 'node:http';
import type { Middleware } from 'koa';
import { VolregError } from '../domain/errors.ts';
import { expectationUnmet } from './expect-continue.ts';

/**
 * Requests Node's parser lets through but HTTP says not to serve, refused with the error
 * envelope before anything acts on them (authentication, routing); the connection is closed
 * after the answer, as for the requests the parser refuses (client-errors.ts).
 *
 * - An HTTP/1.1 request without Host is 400 (RFC 9112 section 3.2). The server is created with
 *   `requireHostHeader: false` so that it arrives here: Node's own 400 is a bare status line.
 * - A transfer coding other than chunked (`gzip, chunked`) is 501 (RFC 9112 section 6.1): Node
 *   undoes the chunked framing only, and the body would be taken as it is, still gzipped.
 * - An `Expect` other than `100-continue` is 417 (RFC 9110 section 10.1.1); Node hands such
 *   requests over through refuseOtherExpectationsInApp.
 */
export function refuseUnservableRequests(): Middleware {
  return async (ctx, next) => {
    const refusal = refusalOf(ctx.req);
    if (refusal) throw refusal;
    await next();
  };
}

function refusalOf(req: IncomingMessage): VolregError | undefined {
  const close = { Connection: 'close' };
  if (req.httpVersionMajor === 1 && req.httpVersionMinor === 1 && req.headers.host === undefined) {
    return new VolregError('BAD_REQUEST', 'an HTTP/1.1 request must have a Host header', undefined, close);
  }
  const unknown = unknownTransferCodings(req.headers['transfer-encoding']);
  if (unknown.length > 0) {
    return new VolregError('NOT_IMPLEMENTED', 'transfer codings other than chunked are not supported', { transferCodings: unknown }, close);
  }
  if (expectationUnmet(req)) {
    return new VolregError('EXPECTATION_FAILED', 'only the expectation 100-continue is supported', undefined, close);
  }
  return undefined;
}

/** The codings of a Transfer-Encoding other than chunked (Node joins repeated fields with commas). */
function unknownTransferCodings(header: string | undefined): string[] {
  if (header === undefined) return [];
  return header
    .split(',')
    .map((coding) => coding.split(';')[0]!.trim().toLowerCase())
    // (empty list elements are allowed, and mean nothing)
    .filter((name) => name !== '' && name !== 'chunked');
}
