import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Requests pipelined on one connection are handled one after the other. Node hands them to the
 * app as soon as they are parsed, so a PUT and a DELETE sent back to back ran at once and took
 * effect in either order; HTTP/1.1 lets a server overlap only safe requests, and answers go out
 * in order anyway, so waiting costs a pipelining client nothing. A connection that does not
 * pipeline never waits.
 *
 * A request whose turn comes after its connection is gone is not handled: Node never gives
 * such a queued response a socket nor a 'close', so a handler would wait on it for good
 * (a download held its blob file open and its buffers, per connection).
 */
export function oneRequestAtATimePerConnection(handler: RequestListener): RequestListener {
  const last = new WeakMap<Socket, Promise<void>>();
  return (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const before = last.get(socket);
    const done = answeredOrGone(res, socket);
    last.set(socket, done);
    void done.then(() => {
      if (last.get(socket) === done) last.delete(socket);
    });
    if (!before) handler(req, res);
    else
      void before.then(() => {
        if (!socket.destroyed) handler(req, res);
      });
  };
}

// One 'close' listener per connection, however many requests a client pipelines on it.
const onSocketClose = new WeakMap<Socket, Set<() => void>>();

/** Resolves once the response is complete, or once its connection closed (whichever first). */
export function answeredOrGone(res: ServerResponse, socket: Socket): Promise<void> {
  return new Promise<void>((resolve) => {
    if (socket.destroyed) return resolve();
    let waiting = onSocketClose.get(socket);
    if (!waiting) {
      const set = new Set<() => void>();
      onSocketClose.set(socket, set);
      socket.once('close', () => {
        onSocketClose.delete(socket);
        for (const settle of set) settle();
      });
      waiting = set;
    }
    const all = waiting;
    const settle = (): void => {
      res.off('close', settle);
      all.delete(settle);
      resolve();
    };
    res.once('close', settle);
    all.add(settle);
  });
}
