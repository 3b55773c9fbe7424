import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Requests pipelined on one connection are handled one after the other. Node hands them to the
 * app as soon as they are parsed, so a PUT and a DELETE sent back to back ran at once and took
 * effect in either order; HTTP/1.1 lets a server overlap only safe requests, and answers go out
 * in order anyway, so waiting costs a pipelining client nothing. A connection that does not
 * pipeline never waits.
 */
export function oneRequestAtATimePerConnection(handler: RequestListener): RequestListener {
  const last = new WeakMap<Socket, Promise<void>>();
  return (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const before = last.get(socket);
    // 'close' comes once the response is complete or the connection is gone
    const done = new Promise<void>((resolve) => res.once('close', resolve));
    last.set(socket, done);
    void done.then(() => {
      if (last.get(socket) === done) last.delete(socket);
    });
    if (before) void before.then(() => handler(req, res));
    else handler(req, res);
  };
}
