import type { ServerResponse } from 'node:http';
import type { Context } from 'koa';
import type { BlobReader } from '../storage/blob-store.ts';
import { awaitClient } from './client-idle.ts';

/**
 * Sends a blob as the response body through two buffers of its own that take turns: one is
 * read into while the other is being written, and a buffer is read into again only once the
 * socket has taken its previous bytes (the write's callback). A download therefore holds two
 * buffers whatever the blob size and leaves no garbage behind, where a stream hands over a new
 * buffer for every chunk; and the two stay in the CPU's cache: curl downloads of 1 GiB ran at
 * 3290-4250 MiB/s instead of 1970-2930 in A/B runs (README.md, "Benchmark").
 *
 * A client that reads slowly or not at all holds both buffers, full, until it reads or the idle
 * timeout cuts it: their size is what every stalled download costs. At 1 MiB, 600 stalled readers
 * took the process from 0.4 to 1.4 GB, at 256 KiB to 447 MB. One curl download of 1 GiB on a
 * quiet machine is about 20% slower for it (best 2990-3080 MiB/s against 3630-3940; 64 KiB fell
 * much further), still well above what distribution serves: memory in a restore storm comes first.
 *
 * The status and headers are set on `ctx` beforehand. A failure before the first byte is thrown
 * as usual (the error reply is still possible); after it, the connection is cut, so the client
 * sees a short body, never a complete-looking wrong one, and the failure is thrown for the log.
 * A client that goes away (or whose connection fails under a write) ends the sending quietly;
 * one that stops taking bytes is cut off by the idle timeout (client-idle.ts). The reader is
 * always closed.
 */
const SEND_CHUNK_BYTES = 256 * 1024;

export async function sendBlob(ctx: Context, reader: BlobReader): Promise<void> {
  await sendPieces(ctx, [reader], reader.length);
}

/**
 * What a reply body is made of, in order: bytes of its own (a multipart reply's part headers)
 * or blob bytes, from a reader or one opened when its turn comes (so a reply of many parts
 * holds one file open at a time).
 */
export type Piece = Buffer | BlobReader | (() => Promise<BlobReader>);

/** As sendBlob, for a body of several pieces; `longest` is the most bytes one reader holds. */
export async function sendPieces(ctx: Context, pieces: readonly Piece[], longest: number): Promise<void> {
  const res = ctx.res;
  let started = false;
  const start = (): void => {
    // from here on the reply is this body: Koa must not write one of its own
    ctx.respond = false;
    started = true;
  };
  // a client that stops taking the bytes would hold the two buffers for ever; once the reply
  // has finished, Node puts the connection on its keep-alive timeout instead
  awaitClient(ctx);
  let reader: BlobReader | null = null;
  let next = 0; // pieces from here on have not been reached
  try {
    if (ctx.method === 'HEAD') return; // Koa sends the headers alone
    const size = Math.min(SEND_CHUNK_BYTES, longest);
    const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)] as const;
    const writes: [Promise<boolean> | null, Promise<boolean> | null] = [null, null];
    const gone = closedEarly(res);
    const taken = async (turn: 0 | 1): Promise<boolean> => {
      const w = writes[turn];
      if (w === null || (await Promise.race([w, gone]))) return true;
      res.destroy(); // the client went away, or its connection failed under a write
      return false;
    };
    let turn: 0 | 1 = 0;
    while (next < pieces.length) {
      const piece = pieces[next++]!;
      if (Buffer.isBuffer(piece)) {
        // bytes of its own, never reused: written after what came before, without a turn
        if (!started) start();
        res.write(piece);
        continue;
      }
      reader = typeof piece === 'function' ? await piece() : piece;
      for (let sent = 0; sent < reader.length; turn = turn === 0 ? 1 : 0) {
        if (!(await taken(turn))) return;
        const n = await reader.readInto(buffers[turn]);
        if (n === 0) throw new Error(`blob ended ${reader.length - sent} bytes early`);
        if (!started) start();
        writes[turn] = written(res, buffers[turn].subarray(0, n));
        sent += n;
      }
      await reader.close();
      reader = null;
    }
    if (!(await taken(0)) || !(await taken(1))) return;
    if (!started) start(); // an empty body
    res.end();
  } catch (err) {
    // only reading the blob throws here: the client's side ends in taken()
    if (!started) throw err;
    res.destroy();
    throw err;
  } finally {
    await reader?.close();
    // readers given whole and never reached (a HEAD, or the client went away first) are released too
    for (const piece of pieces.slice(next)) if (typeof piece === 'object' && !Buffer.isBuffer(piece)) await piece.close();
  }
}

/** Resolves true once the socket took `chunk`, false if the write failed (the connection is gone). */
function written(res: ServerResponse, chunk: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    res.write(chunk, (err) => resolve(!err));
  });
}

/** Resolves false when the response closes before it was finished (the client went away). */
function closedEarly(res: ServerResponse): Promise<false> {
  return new Promise((resolve) => {
    res.once('close', () => resolve(false));
  });
}
