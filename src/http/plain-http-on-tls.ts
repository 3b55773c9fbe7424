import type { Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import { VolregError } from '../domain/errors.ts';
import { CLOSE_AFTER_MS, rawRefusal } from './client-errors.ts';

/** The first byte a TLS client sends: the type of a handshake record (RFC 8446 section 5.1). */
const TLS_HANDSHAKE = 0x16;

/**
 * A client that speaks plain HTTP to the HTTPS port (`http://` in VOLREG_URL, or curl without
 * the `s`) gets a 400 that says so, with the error envelope, instead of a connection closed
 * without a word (curl: "Empty reply from server"). Each connection's first bytes are looked at
 * before TLS starts: a handshake is handed to the TLS server as it came, anything else answered
 * in clear text. A connection that sends nothing is closed after `idleMs`, as one idle between
 * requests is.
 */
export function refusePlainHttp(server: TlsServer, opts: { idleMs: number }): void {
  const startTls = server.listeners('connection') as Array<(this: TlsServer, socket: Socket) => void>;
  // Node's TLS server starts every connection with one listener of its own; without it, as it is
  if (startTls.length !== 1) return;
  const [tlsConnection] = startTls as [(this: TlsServer, socket: Socket) => void];
  server.removeListener('connection', tlsConnection);
  server.on('connection', (socket: Socket) => {
    const gone = (): void => void socket.destroy();
    socket.on('error', gone);
    socket.setTimeout(opts.idleMs, gone);
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.setTimeout(0);
      socket.removeListener('timeout', gone);
      if (first[0] === TLS_HANDSHAKE) {
        socket.removeListener('error', gone);
        socket.unshift(first); // read again by the TLS layer, which takes the socket over here
        tlsConnection.call(server, socket);
        return;
      }
      socket.end(rawRefusal(new VolregError('BAD_REQUEST', 'this port speaks HTTPS: the client sent plain HTTP (use https:// in the URL)')));
      socket.resume(); // what else comes is read and dropped, so the close does not reset the answer away
      setTimeout(gone, CLOSE_AFTER_MS).unref();
    });
  });
}
