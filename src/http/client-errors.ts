import { STATUS_CODES, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { errorBody, VolregError, type ErrorCode } from '../domain/errors.ts';
import { answeredOrGone } from './connection-order.ts';

/** how long a refused connection may stay half open once the answer was sent */
export const CLOSE_AFTER_MS = 2000;

/** What Node's HTTP parser refused, as the error envelope every other refusal uses. */
function refusalFor(err: NodeJS.ErrnoException): VolregError {
  const code = err.code ?? '';
  const as = (c: ErrorCode, message: string): VolregError => new VolregError(c, message);
  if (code === 'HPE_HEADER_OVERFLOW') return as('HEADERS_TOO_LARGE', 'request headers too large');
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return as('TOO_LARGE', 'chunk extensions too large');
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return as('REQUEST_TIMEOUT', 'the request took too long to arrive');
  return as('BAD_REQUEST', 'malformed HTTP request');
}

/** Node's own: the response that has the connection now; the ones queued behind it get it in turn. */
function replyOnWire(socket: Socket): ServerResponse | undefined {
  return (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined;
}

/**
 * Writes `refusal` once no reply to a request that parsed is owed on the connection. Node gives
 * the connection to its pipelined responses one at a time, in order, so this waits for each in
 * turn. A request whose own body the parser refused (broken chunked framing) will never have the
 * rest of it: unless its reply has begun, the refusal is its answer.
 */
async function refuseAfterOwedReplies(socket: Socket, refusal: VolregError): Promise<void> {
  for (let res = replyOnWire(socket); res && (res.req.complete || res.headersSent); res = replyOnWire(socket)) {
    await answeredOrGone(res, socket);
    if (socket.destroyed) return;
  }
  // nothing awaits from the check above to the write: no reply can begin in between.
  // A connection closing already, after a reply that said Connection: close, gets nothing more.
  if (socket.writable) socket.end(rawRefusal(refusal));
  // a client that keeps its side open does not keep the descriptor
  setTimeout(() => socket.destroy(), CLOSE_AFTER_MS).unref();
}

/** `refusal` as a whole HTTP/1.1 response that closes the connection, for a socket no HTTP server answers on. */
export function rawRefusal(refusal: VolregError): string {
  const body = JSON.stringify(errorBody(refusal));
  return `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/**
 * Requests Node cannot parse (bad framing, headers too large, too slow to arrive) are answered
 * with the error envelope and the connection closed, instead of Node's bare status line.
 *
 * The refusal is the last answer on its connection: a client that pipelined valid requests
 * before the bad bytes is answered each of them first, in order (they were carried out; a
 * refusal in their place would tell it a push failed that succeeded).
 */
export function answerClientErrors(server: Server): void {
  // connections whose refusal is decided: the parser refuses every later chunk too, answered once
  const refusing = new WeakSet<Socket>();
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) {
      socket.destroy();
      return;
    }
    if (refusing.has(socket)) return;
    refusing.add(socket);
    // the bytes that keep coming are still read (the parser drops them), so closing does not
    // reset the connection under replies the client has not read yet
    void refuseAfterOwedReplies(socket, refusalFor(err));
  });
}
