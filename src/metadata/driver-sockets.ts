import { subscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';

/**
 * Which errors came from the MongoDB driver's own connections; and a write of the driver that
 * would wait forever on a closed one is failed.
 *
 * Why: the driver passes some socket errors on as they are, not as a MongoNetworkError: a command
 * written to a connection the server already closed rejects with `Error: write EPIPE` (from
 * Connection.writeCommand, seen when the embedded engine, out of file descriptors, closed each
 * new connection at once), one cut while a large command is written with `read ECONNRESET`.
 * Such an error carries nothing saying whose socket it was (the second has no driver frame in
 * its stack), and the HTTP clients' sockets fail with the same codes. So the sockets are
 * watched instead: Node announces each client socket it creates (`net.client.socket`), and
 * those the driver created are remembered, with every error they emit, by identity.
 *
 * Sockets made by tls.connect are not announced (Node 20): a MongoDB reached over TLS is not
 * covered, and its raw socket errors stay unrecognised.
 */
const driverSocketErrors = new WeakSet<Error>();
let watching = false;

/** Starts watching (idempotent); the driver's sockets created from then on are covered. */
export function watchDriverSockets(): void {
  if (watching) return;
  watching = true;
  subscribe('net.client.socket', (message) => {
    const { socket } = message as { socket: Socket };
    // announced synchronously inside net.connect, so the driver's call is on the stack
    if (!createdByDriver()) return;
    // added before the driver's own listener: the error is known before anyone sees it
    socket.on('error', (err) => driverSocketErrors.add(err));
    // and this one before the driver's 'close' listener, so its connection closes with the error
    socket.once('close', () => failWriteWaitingForDrain(socket));
  });
}

/**
 * Why: the driver (7.9) waits for 'drain' or 'error' when `socket.write` returns false. A socket
 * whose server went away (EOF: Node ends it and destroys it) is destroyed before its 'close'
 * event, which comes later in the event loop's turn, and only 'close' marks the driver's
 * connection closed. A command written in between meets a write that returns false and emits
 * nothing, and a socket timeout that a destroyed socket never arms: it waits forever. When that
 * command is the server monitor's hello (which an operation failing on another connection, then
 * selecting a server, requests at once), the monitor never checks again: the client stays
 * without its server for good, every request waiting out server selection (503). No 'drain' can
 * follow 'close', so a waiter for one is failed there instead, and the monitor goes on.
 */
function failWriteWaitingForDrain(socket: Socket): void {
  if (socket.listenerCount('drain') === 0) return;
  const err = Object.assign(new Error('the connection closed while a command waited to be written'), { code: 'ECONNRESET' });
  socket.emit('error', err);
}

/** Did a socket of the MongoDB driver emit this very error? */
export function isDriverSocketError(err: unknown): boolean {
  return err instanceof Error && driverSocketErrors.has(err);
}

const DRIVER_FRAME = /[\\/]node_modules[\\/]mongodb[\\/]/;

function createdByDriver(): boolean {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 20;
  const probe: { stack?: string } = {};
  Error.captureStackTrace(probe);
  Error.stackTraceLimit = limit;
  return DRIVER_FRAME.test(probe.stack ?? '');
}
