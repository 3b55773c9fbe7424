import type { Context, Middleware } from 'koa';

/**
 * A connection on which nothing moves for a while, when volreg waits on the client, is closed:
 * a body that stopped arriving (it would hold its upload session, and its lock, for ever) or a
 * reply the client stopped reading (it would hold its buffers for ever). Node destroys a socket
 * whose timeout fires when no one handles it.
 *
 * Only while waiting on the client: never while volreg works on a request by itself (committing
 * an upload, verifying a snapshot, re-hashing a resumed session: idleWhileBusy), which may take
 * long without a byte moving.
 *
 * For a reply the period can run twice: when it ends, Node lets a write whose queue shrank since
 * it began (the kernel took part of it) go on for another (net.Socket's _onTimeout), so a reader
 * that stops is cut off one to two periods after its last bytes (measured: 6 s with 3).
 */

declare module 'koa' {
  interface DefaultState {
    /** set by clientIdle(): how long a connection may stand still while volreg waits on the client */
    clientIdleMs?: number;
    /** set when that timeout closed the request's connection */
    closedIdle?: boolean;
  }
}

/**
 * Arms the idle timeout of the request's connection; the returned function disarms it. A reply
 * that has finished is left alone: Node then keeps the idle keep-alive connection on a timeout
 * of its own, which disarming would clear.
 */
export function awaitClient(ctx: Context): () => void {
  const ms = ctx.state.clientIdleMs;
  const socket = ctx.req.socket as typeof ctx.req.socket | null; // null once the connection is gone
  if (ms === undefined || !socket || ctx.res.writableFinished) return () => undefined;
  socket.setTimeout(ms);
  return () => {
    if (!ctx.res.writableFinished && !socket.destroyed) socket.setTimeout(0);
  };
}

function hasBody(ctx: Context): boolean {
  return ctx.req.headers['transfer-encoding'] !== undefined || Number(ctx.req.headers['content-length'] ?? 0) > 0;
}

/**
 * Why a request's connection closed before its reply was whole: `idle` when the idle timeout
 * closed it, `lost` when the client (or the network) did; undefined for a request served whole
 * or still being served. For the request's log line and metrics: a slow host's failed upload
 * then says whether volreg gave up on it.
 */
export function cutOff(ctx: Context): 'idle' | 'lost' | undefined {
  const socket = ctx.req.socket as typeof ctx.req.socket | null;
  if (ctx.res.writableFinished || !(socket?.destroyed ?? true)) return undefined;
  return ctx.state.closedIdle ? 'idle' : 'lost';
}

/** Waits on the client for the request body (until it has all arrived) and for the reply to be taken. */
export function clientIdle(seconds: number): Middleware {
  const ms = Math.round(seconds * 1000);
  return async (ctx, next) => {
    ctx.state.clientIdleMs = ms;
    // Node's own listener destroys the socket when its timeout fires; this one only notes it,
    // for this request (a keep-alive connection's timeout between requests is none of its business)
    const socket = ctx.req.socket as typeof ctx.req.socket | null;
    const noteIdle = (): void => {
      ctx.state.closedIdle = true;
    };
    socket?.on('timeout', noteIdle);
    ctx.res.once('close', () => socket?.off('timeout', noteIdle));
    if (hasBody(ctx) && !ctx.req.complete) {
      const disarm = awaitClient(ctx);
      ctx.req.once('end', disarm);
    }
    await next();
    // the reply Koa writes after this (a JSON or manifest body) must be taken by the client too;
    // a body streamed by the handler (sendBlob) armed the timeout itself
    if (ctx.respond !== false) awaitClient(ctx);
  };
}

/**
 * For a store that works on its own before it reads the request body (AppendOptions.busy): the
 * body's idle timeout stops while it does and starts again when it reads.
 */
export function idleWhileBusy(ctx: Context): (busy: boolean) => void {
  return (busy) => {
    if (ctx.req.complete) return;
    if (busy) ctx.req.socket?.setTimeout(0);
    else awaitClient(ctx);
  };
}
