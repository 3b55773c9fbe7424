import { isIP } from 'node:net';
import type { Middleware } from 'koa';
import { plainAddress } from '../domain/ip-ranges.ts';

/**
 * The address a request comes from: the connection's, or, when the connection is from a trusted
 * reverse proxy, the one its `X-Forwarded-For` names. The header is read from the right: each
 * trusted proxy appends the address it was connected from, so the first address that is not a
 * trusted proxy is the client; what lies left of it was written by that client and proves
 * nothing. With no proxy trusted (the default) the header is never read, so no client can choose
 * the address it is logged and rate-limited under.
 */
export function clientAddress(peer: string, forwardedFor: string | undefined, trusted: (address: string) => boolean): string {
  let client = plainAddress(peer);
  if (forwardedFor === undefined || !trusted(client)) return client;
  const hops = forwardedFor.split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hopAddress(hops[i]!.trim());
    // a hop that is not an address (a proxy's `unknown`, garbage): nothing left of it can be placed
    if (hop === null) return client;
    client = hop;
    if (!trusted(hop)) return hop;
  }
  return client;
}

/** `203.0.113.7`, `203.0.113.7:41234`, `2001:db8::1` or `[2001:db8::1]:41234` as the bare address; null when none. */
function hopAddress(text: string): string | null {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(text);
  const withPort = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(text);
  const address = bracketed?.[1] ?? withPort?.[1] ?? text;
  return isIP(address) === 0 ? null : plainAddress(address);
}

/**
 * Sets `ctx.ip` (logs, the password checks' turns) to the request's client address; the
 * connection's own address is `ctx.state.peer` when they differ.
 */
export function resolveClientAddress(trusted: (address: string) => boolean): Middleware {
  return async (ctx, next) => {
    const peer = plainAddress(ctx.req.socket.remoteAddress ?? '');
    const client = clientAddress(peer, ctx.get('X-Forwarded-For') || undefined, trusted);
    ctx.request.ip = client;
    if (client !== peer) ctx.state.peer = peer;
    return next();
  };
}
