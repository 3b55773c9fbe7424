import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { errorBody, isVolregError, VolregError } from '../domain/errors.ts';
import { bytesYetToArrive } from './body.ts';
import { discardBody } from './discard-body.ts';
import { bodyNotInvited } from './expect-continue.ts';

const DISCARD_LIMIT_BYTES = 64 * 1024 * 1024;
const DISCARD_LIMIT_MS = 10_000;

/** Says what a failure of a dependency means to a client, or null when it cannot. */
export type ErrorTranslation = (err: unknown) => VolregError | null;

/**
 * The one place that renders errors. A `VolregError` becomes the OCI envelope with its
 * registered status; a dependency's failure that `translate` recognises is logged and becomes
 * its answer; anything else is logged and becomes 500 UNKNOWN with no internal detail.
 */
export function errorMiddleware(logger: Logger, translate: ErrorTranslation = () => null): Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (caught) {
      // the connection is gone (or the body was cut off): nobody will read this answer
      const clientGone = ctx.req.socket?.destroyed === true || (!ctx.req.complete && ctx.req.destroyed);
      const err = toVolregError(caught, logger, ctx.state.requestId as string | undefined, translate, clientGone);
      ctx.status = err.status;
      for (const [k, v] of Object.entries(err.headers)) ctx.set(k, v);
      // HEAD gets the headers of the GET, the envelope's Content-Type and Content-Length
      // included; Koa sends no body for HEAD.
      ctx.body = errorBody(err);
      // Let the client finish sending a (bounded) body so it reads this reply rather than a
      // reset; a body we did not read must never be parsed as the next request. A client still
      // waiting for 100 Continue sends none: it reads the reply, and the connection closes. Nor is
      // a body waited for that could not be drained within the bound (a Content-Length of 2^53, or
      // of a terabyte with a few bytes sent): the answer goes at once, and the connection closes.
      if (bodyNotInvited(ctx.req) || (bytesYetToArrive(ctx) ?? 0) > DISCARD_LIMIT_BYTES) ctx.set('Connection', 'close');
      else if (!(await discardBody(ctx.req, DISCARD_LIMIT_BYTES, DISCARD_LIMIT_MS))) ctx.set('Connection', 'close');
    }
  };
}

/** The process ran out of file descriptors: a moment of overload, not a fault of the request. */
const OUT_OF_DESCRIPTORS = new Set(['EMFILE', 'ENFILE']);

function toVolregError(caught: unknown, logger: Logger, requestId: string | undefined, translate: ErrorTranslation, clientGone: boolean): VolregError {
  if (isVolregError(caught)) return caught;
  const translated = translate(caught);
  if (translated) {
    logger.error({ err: caught, requestId }, translated.message);
    return translated;
  }
  // The client closed the connection before its body ended: nobody reads an answer, nothing is wrong here.
  if (clientGone) {
    logger.info({ requestId, reason: (caught as Error | undefined)?.message }, 'client went away before its request ended');
    return new VolregError('BAD_REQUEST', 'the request ended early');
  }
  const code = (caught as NodeJS.ErrnoException | undefined)?.code;
  if (code !== undefined && OUT_OF_DESCRIPTORS.has(code)) {
    logger.warn({ err: caught, requestId }, 'out of file descriptors; raise the limit (ulimit -n) or take fewer connections');
    return new VolregError('UNAVAILABLE', 'the server is out of resources for a moment; retry shortly', undefined, { 'Retry-After': '1' });
  }
  // Koa/http-errors carry `status` and `expose`; only an exposed client error keeps its message.
  if (caught && typeof caught === 'object' && 'status' in caught) {
    const status = Number((caught as { status: unknown }).status);
    const expose = Boolean((caught as { expose?: unknown }).expose);
    if (status === 413) return new VolregError('TOO_LARGE');
    if (status >= 400 && status < 500 && expose) {
      return new VolregError('BAD_REQUEST', String((caught as { message?: unknown }).message ?? 'bad request'));
    }
  }
  logger.error({ err: caught, requestId }, 'unhandled error');
  return new VolregError('UNKNOWN', 'internal error', requestId ? { requestId } : undefined);
}
