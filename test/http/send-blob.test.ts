import { randomBytes } from 'node:crypto';
import { request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import Koa from 'koa';
import { sendBlob } from '../../src/http/send-blob.ts';
import type { BlobReader } from '../../src/storage/blob-store.ts';

/**
 * sendBlob through a real HTTP server: its two buffers are reused while the socket still has
 * bytes to send, so what a client receives (fast or slow) must be exactly the blob, and every
 * way of stopping (a read failing before or after the first byte, a client leaving) must end
 * the reply honestly and close the reader.
 */

/** A reader over `bytes` that fails once `failAt` bytes were read (never, by default). */
function memoryReader(bytes: Buffer, failAt = Infinity): BlobReader & { closed: number; reads: number } {
  let pos = 0;
  return {
    length: bytes.length,
    closed: 0,
    reads: 0,
    async readInto(buf: Buffer): Promise<number> {
      this.reads++;
      if (pos >= failAt) throw new Error('disk read failed');
      const n = bytes.copy(buf, 0, pos, Math.min(bytes.length, pos + buf.length));
      pos += n;
      // fill the buffer's tail with noise: a reused buffer sent too early would show it
      buf.fill(0xee, n);
      await new Promise((resolve) => setImmediate(resolve));
      return n;
    },
    async close(): Promise<void> {
      this.closed++;
    },
  };
}

interface Served {
  url: string;
  thrown: unknown[];
  close: () => Promise<void>;
}

async function serve(reader: () => BlobReader): Promise<Served> {
  const app = new Koa();
  app.silent = true; // as the service's app: a client's reset is no news
  const thrown: unknown[] = [];
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      thrown.push(err);
      ctx.status = 500;
      ctx.body = 'failed before the body';
    }
  });
  app.use(async (ctx) => {
    const r = reader();
    ctx.status = 200;
    ctx.type = 'application/octet-stream';
    ctx.length = r.length;
    await sendBlob(ctx, r);
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    thrown,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Fetched {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** the response ended short of its Content-Length (the connection was cut) */
  cut: boolean;
}

function fetch(url: string, opts: { method?: string; slow?: boolean } = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let cut = false;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (opts.slow) {
          // a client that reads in small sips: the server's writes queue up behind it
          res.pause();
          setTimeout(() => res.resume(), 2);
        }
      });
      res.on('aborted', () => (cut = true));
      res.on('error', () => (cut = true));
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), cut: cut || !res.complete }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a blob of several buffers arrives byte for byte, at full speed and to a slow client', async (t) => {
  const bytes = randomBytes(7 * 1024 * 1024 + 333);
  const readers: Array<ReturnType<typeof memoryReader>> = [];
  const s = await serve(() => {
    const r = memoryReader(bytes);
    readers.push(r);
    return r;
  });
  try {
    for (const slow of [false, true]) {
      const got = await fetch(s.url, { slow });
      t.is(got.status, 200);
      t.false(got.cut);
      t.is(got.headers['content-length'], String(bytes.length));
      t.true(got.body.equals(bytes), `identical bytes (slow client: ${slow})`);
    }
    t.deepEqual(
      readers.map((r) => r.closed),
      [1, 1],
    );
    t.deepEqual(s.thrown, []);
  } finally {
    await s.close();
  }
});

test('a download holds two buffers of 256 KiB whatever the blob size: what each stalled reader costs', async (t) => {
  // a reader that does not take the bytes keeps both buffers full until the idle timeout; at
  // 1 MiB each, 600 such readers took the service from 0.4 to 1.4 GB of memory
  const bytes = randomBytes(3 * 1024 * 1024 + 17);
  const seen = new Set<ArrayBuffer>();
  let largest = 0;
  const s = await serve(() => {
    const r = memoryReader(bytes);
    const readInto = r.readInto.bind(r);
    r.readInto = (buf: Buffer) => {
      seen.add(buf.buffer as ArrayBuffer);
      largest = Math.max(largest, buf.length);
      return readInto(buf);
    };
    return r;
  });
  try {
    const got = await fetch(s.url, { slow: true });
    t.true(got.body.equals(bytes));
    t.is(seen.size, 2, 'two buffers, reused');
    t.is(largest, 256 * 1024);
  } finally {
    await s.close();
  }
});

test('an empty blob is an empty body (not a status text), and HEAD sends the headers alone', async (t) => {
  const empty = memoryReader(Buffer.alloc(0));
  const s = await serve(() => empty);
  try {
    const got = await fetch(s.url);
    t.is(got.status, 200);
    t.is(got.headers['content-length'], '0');
    t.is(got.body.length, 0);
    t.false(got.cut);
    const head = await fetch(s.url, { method: 'HEAD' });
    t.is(head.status, 200);
    t.is(head.body.length, 0);
    t.is(empty.closed, 2);
  } finally {
    await s.close();
  }
});

test('a read failing before the first byte leaves the ordinary error reply possible', async (t) => {
  const reader = memoryReader(randomBytes(1000), 0);
  const s = await serve(() => reader);
  try {
    const got = await fetch(s.url);
    t.is(got.status, 500);
    t.is(got.body.toString(), 'failed before the body');
    t.is(s.thrown.length, 1);
    t.is(reader.closed, 1);
  } finally {
    await s.close();
  }
});

test('a read failing after the first byte cuts the connection: the client sees a short body, never a complete one', async (t) => {
  const bytes = randomBytes(5 * 1024 * 1024);
  const reader = memoryReader(bytes, 2 * 1024 * 1024);
  const s = await serve(() => reader);
  try {
    const got = await fetch(s.url);
    t.is(got.status, 200);
    t.true(got.cut);
    t.true(got.body.length < bytes.length);
    t.true(got.body.equals(bytes.subarray(0, got.body.length)), 'what arrived is the blob\'s start');
    t.is(s.thrown.length, 1, 'the failure is reported (for the log)');
    t.is((s.thrown[0] as Error).message, 'disk read failed');
    t.is(reader.closed, 1);
  } finally {
    await s.close();
  }
});

test('a client that goes away mid-body stops the sending quietly and the reader is closed', async (t) => {
  const bytes = randomBytes(64 * 1024 * 1024);
  const reader = memoryReader(bytes);
  const s = await serve(() => reader);
  try {
    await new Promise<void>((resolve, reject) => {
      const req = request(s.url, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.end();
      setTimeout(() => reject(new Error('no data')), 10_000);
    });
    for (let i = 0; i < 200 && reader.closed === 0; i++) await new Promise((r) => setTimeout(r, 10));
    t.is(reader.closed, 1);
    t.true(reader.reads < 64, 'it did not go on reading the whole blob');
    t.deepEqual(s.thrown, [], 'a client leaving is not an error');
  } finally {
    await s.close();
  }
});
