/**
 * A small HTTP/1.1 client over node:http with a keep-alive agent. Request bodies are Buffers
 * or streams made on demand; response bodies are kept up to a cap (for JSON and manifests) or
 * only counted (downloads), so the client never holds a large blob in memory.
 */
import http from 'node:http';
import type { Readable } from 'node:stream';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** the body, when kept (see RequestOptions.keepBody) */
  body: Buffer;
  /** every byte of the body received, kept or not */
  bytes: number;
}

export interface RequestOptions {
  method: string;
  /** path and query; an absolute URL is reduced to its path and query on this client's base */
  path: string;
  headers?: http.OutgoingHttpHeaders;
  body?: Buffer | (() => Readable);
  signal?: AbortSignal;
  /** keep the response body (default true); false only counts its bytes */
  keepBody?: boolean;
}

const KEEP_CAP = 16 * 1024 * 1024;

export class HttpError extends Error {
  constructor(
    message: string,
    readonly reply: Reply,
  ) {
    super(message);
  }
}

export class HttpClient {
  readonly agent: http.Agent;

  constructor(
    readonly base: URL,
    maxSockets: number,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  /** Resolves a Location header (absolute or relative) to a path on this client's server. */
  pathOf(location: string): string {
    const url = new URL(location, this.base);
    if (url.host !== this.base.host) throw new Error(`server redirected off loopback: ${location}`);
    return url.pathname + url.search;
  }

  request(opts: RequestOptions): Promise<Reply> {
    const target = opts.path.startsWith('http') ? this.pathOf(opts.path) : opts.path;
    return new Promise<Reply>((resolve, reject) => {
      const req = http.request({
        host: this.base.hostname,
        port: this.base.port,
        method: opts.method,
        path: target,
        headers: opts.headers,
        agent: this.agent,
        signal: opts.signal,
      });
      let source: Readable | undefined;
      req.on('error', (err) => {
        source?.destroy();
        reject(err);
      });
      req.on('response', (res) => {
        const keep = opts.keepBody !== false;
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (keep && bytes <= KEEP_CAP) chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          // the server answered before taking the whole body (an early error reply)
          if (source && !source.readableEnded) source.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), bytes });
        });
      });
      if (Buffer.isBuffer(opts.body)) {
        req.end(opts.body);
      } else if (opts.body) {
        source = opts.body();
        source.on('error', (err) => req.destroy(err));
        source.pipe(req);
      } else {
        req.end();
      }
    });
  }

  /** Like request, but a status outside `expected` is an error carrying the reply. */
  async expect(opts: RequestOptions, ...expected: number[]): Promise<Reply> {
    const reply = await this.request(opts);
    if (!expected.includes(reply.status)) {
      const text = reply.body.subarray(0, 300).toString('utf8').replace(/\s+/g, ' ').trim();
      throw new HttpError(`${opts.method} ${opts.path.split('?')[0]} -> ${reply.status}${text ? ` ${text}` : ''}`, reply);
    }
    return reply;
  }

  close(): void {
    this.agent.destroy();
  }
}

export function header(reply: Reply, name: string): string {
  const v = reply.headers[name.toLowerCase()];
  if (Array.isArray(v)) return v[0] ?? '';
  return v ?? '';
}
