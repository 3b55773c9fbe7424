import type { Server, ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import { monotonicMs } from '../domain/clock.ts';
import { answeredOrGone } from './connection-order.ts';

/**
 * Stopping the HTTP server so that no client loses a request it sent.
 *
 * Node's `server.close()` also closes every connection that has no request in progress, and
 * that includes one accepted a moment ago whose request is still on its way: its client gets
 * a reset for a request it sent (a piped `curl -T -` backup cannot be sent again). As Go's
 * net/http does, the connections are told apart:
 *
 * - a connection between two requests (it served one and is idle) is closed at once;
 * - a connection that has not sent its first request yet gets NEW_CONNECTION_GRACE_MS to send
 *   it, and the request is served;
 * - requests in progress finish; every reply from now on says `Connection: close`, and Node
 *   closes the connection after it;
 * - past `graceMs` whatever is left is closed.
 *
 * Attach it when the server is created: it has to see which connections already served a request.
 */
export const NEW_CONNECTION_GRACE_MS = 5000;
const POLL_MS = 50;

interface ConnectionState {
  /** requests of this connection not answered yet */
  active: number;
}

export class GracefulClose {
  private readonly served = new Map<Socket, ConnectionState>();
  /** replies not finished yet: those whose headers are still unsent learn `Connection: close` at close() */
  private readonly replying = new Set<ServerResponse>();
  private closing = false;

  constructor(private readonly server: Server) {
    server.on('request', (req, res) => {
      const socket = req.socket;
      let state = this.served.get(socket);
      if (!state) {
        state = { active: 0 };
        this.served.set(socket, state);
        socket.once('close', () => this.served.delete(socket));
      }
      const s = state;
      s.active++;
      this.replying.add(res);
      if (this.closing && !res.headersSent) res.setHeader('Connection', 'close');
      // a reply queued behind another on a connection that died gets no 'close' of its own
      void answeredOrGone(res, socket).then(() => {
        s.active--;
        this.replying.delete(res);
      });
    });
  }

  /** Stops accepting, lets requests finish (and brand-new connections send theirs), then resolves. */
  async close(graceMs: number, onOverdue: () => void): Promise<void> {
    if (!this.server.listening) return;
    this.closing = true;
    // requests already in progress too: their replies are not sent yet
    for (const res of this.replying) if (!res.headersSent) res.setHeader('Connection', 'close');
    const started = monotonicMs();
    // net's close, not http's: http's would also close the connections still sending a first request
    const closed = new Promise<void>((resolve) => NetServer.prototype.close.call(this.server, () => resolve()));
    const closeIdle = (): void => {
      for (const [socket, state] of this.served) if (state.active === 0) socket.destroy();
      // connections that never sent a request are idle to Node: their grace is over
      if (monotonicMs() - started >= NEW_CONNECTION_GRACE_MS) this.server.closeIdleConnections();
    };
    closeIdle();
    const poll = setInterval(closeIdle, POLL_MS);
    const deadline = setTimeout(() => {
      onOverdue();
      this.server.closeAllConnections();
    }, graceMs);
    try {
      await closed;
    } finally {
      clearInterval(poll);
      clearTimeout(deadline);
    }
  }
}
