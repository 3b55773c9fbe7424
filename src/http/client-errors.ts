import { STATUS_CODES, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { errorBody, VolregError, type ErrorCode } from '../domain/errors.ts';

/** how long a refused connection may stay half open once the answer was sent */
const CLOSE_AFTER_MS = 2000;

/** What Node's HTTP parser refused, as the error envelope every other refusal uses. */
function refusalFor(err: NodeJS.ErrnoException): VolregError {
  const code = err.code ?? '';
  const as = (c: ErrorCode, message: string): VolregError => new VolregError(c, message);
  if (code === 'HPE_HEADER_OVERFLOW') return as('HEADERS_TOO_LARGE', 'request headers too large');
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return as('TOO_LARGE', 'chunk extensions too large');
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return as('REQUEST_TIMEOUT', 'the request took too long to arrive');
  return as('BAD_REQUEST', 'malformed HTTP request');
}

/**
 * Requests Node cannot parse (bad framing, headers too large, too slow to arrive) are answered
 * with the error envelope and the connection closed, instead of Node's bare status line.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // a connection already gone, or a reply already begun, gets nothing more
    if (err.code === 'ECONNRESET' || !socket.writable || (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
      socket.destroy();
      return;
    }
    const refusal = refusalFor(err);
    const body = JSON.stringify(errorBody(refusal));
    socket.end(
      `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    // a client that keeps its side open does not keep the descriptor
    setTimeout(() => socket.destroy(), CLOSE_AFTER_MS).unref();
  });
}
