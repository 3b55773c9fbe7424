import { connect } from 'node:net';

/**
 * A PATCH to an upload session that announces 10,000 bytes, sends the first 10 of `bytes` and
 * then nothing, as from a client whose connection died unnoticed. Resolves `closed` when the
 * server closes that connection.
 */
export function stalledChunk(serverUrl: string, location: string, bytes: Buffer): { closed: Promise<void> } {
  const socket = connect(Number(new URL(serverUrl).port), '127.0.0.1');
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('error', () => undefined);
  socket.resume();
  socket.write(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-9999\r\nContent-Length: 10000\r\n\r\n`);
  socket.write(bytes.subarray(0, 10));
  return { closed };
}
