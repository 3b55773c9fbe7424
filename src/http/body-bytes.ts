import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Context } from 'koa';

/**
 * The body bytes of one request, counted once for every reader (its log line, the metrics):
 * what arrived from the client, and what was handed to its connection (a slow client's reply
 * may still be on its way in the kernel's buffers).
 */
export interface BodyBytes {
  in(): number;
  out(): number;
}

declare module 'koa' {
  interface DefaultState {
    bodyBytes?: BodyBytes;
  }
}

export function bodyBytes(ctx: Context): BodyBytes {
  return (ctx.state.bodyBytes ??= { in: countBytesIn(ctx.req), out: countBytesOut(ctx.res) });
}

/**
 * Counts body bytes as the HTTP parser pushes them into the request stream. Wrapping `push`
 * (rather than listening for 'data') leaves the stream paused for the handler that reads it.
 */
function countBytesIn(req: IncomingMessage): () => number {
  let n = 0;
  const push = req.push.bind(req);
  req.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk !== null && chunk !== undefined) n += Buffer.isBuffer(chunk) ? chunk.length : Buffer.byteLength(String(chunk));
    return push(chunk, encoding);
  };
  return () => n;
}

function countBytesOut(res: ServerResponse): () => number {
  let n = 0;
  const size = (chunk: unknown, encoding?: unknown): number => {
    if (chunk === null || chunk === undefined || typeof chunk === 'function') return 0;
    if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    return (chunk as Uint8Array).byteLength ?? 0;
  };
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  res.write = ((...args: unknown[]) => {
    n += size(args[0], args[1]);
    return write(...args);
  }) as ServerResponse['write'];
  res.end = ((...args: unknown[]) => {
    n += size(args[0], args[1]);
    return end(...args);
  }) as ServerResponse['end'];
  return () => n;
}
