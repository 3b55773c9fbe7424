import type { IncomingMessage, Server, ServerResponse } from 'node:http';

/** Requests that asked for `100 Continue`, and whether it was sent. */
const continued = new WeakMap<IncomingMessage, boolean>();

/**
 * `Expect: 100-continue` is answered with `100 Continue` only once something reads the body:
 * a request refused before that (no credentials, a bad name, a manifest too large, no space) gets
 * its final answer at once, and the client never sends the body. Node would send 100 as soon as
 * the headers arrived, and the client then sent up to all of its body for nothing.
 */
export function continueWhenBodyRead(server: Server): void {
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    continued.set(req, false);
    const read = req._read.bind(req);
    req._read = (size: number): void => {
      // (never after the final answer began: Node reads a body left unread once it is sent)
      if (continued.get(req) === false && !res.headersSent) {
        continued.set(req, true);
        res.writeContinue();
      }
      read(size);
    };
    // as an ordinary request, so everything that follows requests (the app, a graceful stop) sees it
    server.emit('request', req, res);
  });
}

/** True when the client waits for `100 Continue` before sending its body, and was not sent it. */
export function bodyNotInvited(req: IncomingMessage): boolean {
  return continued.get(req) === false;
}

/** Requests whose `Expect` asks for something other than `100-continue`. */
const unmet = new WeakSet<IncomingMessage>();

/**
 * An `Expect` other than `100-continue` (which only HTTP/1.1 requests may carry) goes to the app
 * as an ordinary request, which refuses it with the error envelope (see unservable-requests.ts);
 * Node would answer a bare 417 of its own.
 */
export function refuseOtherExpectationsInApp(server: Server): void {
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    unmet.add(req);
    server.emit('request', req, res);
  });
}

/** True when the request carries an expectation volreg cannot meet. */
export function expectationUnmet(req: IncomingMessage): boolean {
  return unmet.has(req);
}
