import { createHash, randomBytes } from 'node:crypto';
import { request, type ClientRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Streams large, reproducible bodies to a volreg child process for the fault tests: chunk i
 * is a fixed random MiB with i stamped into its first bytes, so a body of any size needs
 * 1 MiB of memory and its digest is computed on the way.
 */
export const MIB = 1024 * 1024;

export class Body {
  private readonly base = randomBytes(MIB);

  constructor(readonly chunks: number) {}

  get size(): number {
    return this.chunks * MIB;
  }

  chunk(i: number): Buffer {
    const b = Buffer.from(this.base);
    b.writeUInt32BE(i, 0);
    return b;
  }

  /** sha256 of chunks [from, to) */
  digest(from = 0, to = this.chunks): string {
    const h = createHash('sha256');
    for (let i = from; i < to; i++) h.update(this.chunk(i));
    return `sha256:${h.digest('hex')}`;
  }
}

export interface StreamedRequest {
  req: ClientRequest;
  /** resolves with the status (and headers), rejects when the connection dies */
  response: Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>;
  /** resolves after chunk `i` was handed to the socket */
  written(i: number): Promise<void>;
  /** resolves when every chunk was written */
  done: Promise<void>;
}

/**
 * Sends chunks [from, to) of `body` as one request, honouring backpressure, pausing `delayMs`
 * between chunks. `contentLength` defaults to the bytes sent.
 */
export function streamRequest(
  base: string,
  method: string,
  path: string,
  body: Body,
  opts: { from?: number; to?: number; delayMs?: number; headers?: Record<string, string>; contentLength?: number } = {},
): StreamedRequest {
  const from = opts.from ?? 0;
  const to = opts.to ?? body.chunks;
  const headers = { 'Content-Length': String(opts.contentLength ?? (to - from) * MIB), 'Content-Type': 'application/octet-stream', ...opts.headers };
  const req = request(new URL(path, base), { method, headers, agent: false });
  const response = new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => (text += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  response.catch(() => undefined);
  const waiters = new Map<number, () => void>();
  let sent = from - 1;
  const written = (i: number): Promise<void> =>
    i <= sent ? Promise.resolve() : new Promise<void>((resolve) => waiters.set(i, resolve));
  const done = (async () => {
    for (let i = from; i < to; i++) {
      if (req.destroyed) throw new Error('connection closed while sending');
      const ok = req.write(body.chunk(i));
      if (!ok) {
        await new Promise<void>((resolve) => {
          const go = (): void => {
            req.off('drain', go).off('close', go);
            resolve();
          };
          req.on('drain', go).on('close', go);
        });
      }
      sent = i;
      waiters.get(i)?.();
      if (opts.delayMs) await sleep(opts.delayMs);
    }
    if (opts.contentLength === undefined) req.end();
  })();
  done.catch(() => undefined);
  return { req, response, written, done };
}

/** Samples a process's RSS every 25 ms and keeps the highest seen since the last `from`. */
export class PeakRss {
  private highest = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.timer = setInterval(() => {
      memoryOf(pid).then(
        (m) => (this.highest = Math.max(this.highest, m.rss)),
        () => undefined,
      );
    }, 25);
  }

  /** the RSS now, from which the peak is counted again */
  async from(): Promise<number> {
    const now = (await memoryOf(this.pid)).rss;
    this.highest = now;
    return now;
  }

  get peak(): number {
    return this.highest;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Resident set size and its peak (VmHWM) of a process, in bytes (Linux). */
export async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
