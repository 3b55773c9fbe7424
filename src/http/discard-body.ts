import type { IncomingMessage } from 'node:http';

/**
 * Reads and throws away what is left of a request body, up to `limit` bytes and `ms`
 * milliseconds. Replying to a request whose body is still arriving and then closing the socket
 * makes the kernel send a reset, and the client (curl, Node, Go) reports "connection reset"
 * instead of our 401 or 400. Draining a bounded amount lets it read the error; past the bound
 * the connection is closed anyway. Resolves true when the body was read to its end.
 */
export function discardBody(req: IncomingMessage, limit: number, ms: number): Promise<boolean> {
  if (req.complete) return Promise.resolve(true);
  if (req.destroyed || req.readableEnded) return Promise.resolve(false);
  return new Promise((resolve) => {
    let seen = 0;
    const finish = (ended: boolean): void => {
      clearTimeout(timer);
      req.off('data', onData).off('end', onEnd).off('error', onFail).off('close', onClose);
      if (!ended) req.pause();
      resolve(ended);
    };
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > limit) finish(false);
    };
    const onEnd = (): void => finish(true);
    const onFail = (): void => finish(false);
    const onClose = (): void => finish(req.complete);
    const timer = setTimeout(() => finish(false), ms);
    req.on('data', onData).on('end', onEnd).on('error', onFail).on('close', onClose);
    req.resume();
  });
}
