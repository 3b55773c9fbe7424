import type { IncomingMessage } from 'node:http';
import { VolregError } from '../domain/errors.ts';

/**
 * Reads a small request body (manifests, JSON) into memory, refusing with 413 TOO_LARGE as
 * soon as it passes `limit`, before reading the rest. Blob bodies never come through here.
 */
export async function readBodyCapped(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    throw new VolregError('TOO_LARGE', `body exceeds ${limit} bytes`, { limit });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  // Leaving the loop early must not destroy the request: that closes the socket, and the client
  // would get a reset instead of the 413 (the error middleware drains a bounded rest and replies).
  for await (const chunk of req.iterator({ destroyOnReturn: false })) {
    const buf = chunk as Buffer;
    total += buf.length;
    if (total > limit) throw new VolregError('TOO_LARGE', `body exceeds ${limit} bytes`, { limit });
    chunks.push(buf);
  }
  return Buffer.concat(chunks, total);
}
