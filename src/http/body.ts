import type { IncomingMessage } from 'node:http';
import type { Context } from 'koa';
import { VolregError } from '../domain/errors.ts';
import { bodyBytes } from './body-bytes.ts';

/**
 * How many bytes of small bodies (manifests) all requests together may hold in memory at once.
 * Each may be up to its own limit (4 MiB for a manifest), and a client can send one slowly: without
 * a bound, a few hundred such connections took gigabytes. Past it a request is refused with 429
 * and `Retry-After` rather than taking more memory; manifests are mostly a few KiB, so this
 * takes thousands of usual pushes at once.
 */
export const HELD_BODY_BYTES = 64 * 1024 * 1024;

/** The bytes held so far, shared by every request of the process. */
class HeldBodies {
  private used = 0;

  constructor(private readonly limit: number) {}

  take(bytes: number): void {
    // a body alone always fits (a configured manifest limit may exceed the bound)
    if (this.used > 0 && this.used + bytes > this.limit) {
      throw new VolregError('TOOMANYREQUESTS', 'too many request bodies are being received at once; try again shortly', undefined, { 'Retry-After': '1' });
    }
    this.used += bytes;
  }

  give(bytes: number): void {
    this.used -= bytes;
  }
}

const held = new HeldBodies(HELD_BODY_BYTES);

/**
 * Reads a small request body (manifests, JSON) into memory, refusing with 413 (`code`) as
 * soon as it passes `limit`, before reading the rest. Blob bodies never come through here.
 * The bytes count towards HELD_BODY_BYTES while they are read (a declared length at once).
 */
export async function readBodyCapped(req: IncomingMessage, limit: number, code: 'TOO_LARGE' | 'MANIFEST_TOO_LARGE' = 'TOO_LARGE'): Promise<Buffer> {
  const tooLarge = (): VolregError => new VolregError(code, `body exceeds ${limit} bytes`, { limit });
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge();
  let taken = 0;
  const hold = (bytes: number): void => {
    held.take(bytes);
    taken += bytes;
  };
  try {
    const length = Number(declared);
    if (declared !== undefined && Number.isSafeInteger(length)) hold(length);
    const chunks: Buffer[] = [];
    let total = 0;
    // Leaving the loop early must not destroy the request: that closes the socket, and the client
    // would get a reset instead of the 413 (the error middleware drains a bounded rest and replies).
    for await (const chunk of req.iterator({ destroyOnReturn: false })) {
      const buf = chunk as Buffer;
      total += buf.length;
      if (total > limit) throw tooLarge();
      if (total > taken) hold(total - taken);
      chunks.push(buf);
    }
    return Buffer.concat(chunks, total);
  } finally {
    // the caller's copy is its own from here; what it keeps is bounded by the requests in flight
    held.give(taken);
  }
}

/** The body length a request declares (`Content-Length`, unless chunked), checked; none when unknown. */
export function declaredLength(ctx: Context): { contentLength?: number } {
  const cl = ctx.get('Content-Length');
  if (cl === '' || ctx.get('Transfer-Encoding')) return {};
  const n = Number(cl);
  if (!Number.isSafeInteger(n) || n < 0) throw new VolregError('BAD_REQUEST', 'invalid Content-Length');
  return { contentLength: n };
}

/**
 * How many bytes of its declared body (`Content-Length`) the client has yet to send; none when
 * the length is unknown (chunked) or all of it arrived. What arrived but was not read counts as sent.
 */
export function bytesYetToArrive(ctx: Context): number | undefined {
  const declared = ctx.req.headers['content-length'];
  if (declared === undefined || ctx.req.headers['transfer-encoding'] !== undefined || ctx.req.complete) return undefined;
  // (Node's parser let through only digits; past 2^53 the count is approximate, and still huge)
  return Math.max(0, Number(declared) - bodyBytes(ctx).in());
}
