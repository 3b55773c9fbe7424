import test from 'ava';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { connect, type AddressInfo } from 'node:net';
import { MongoClient } from 'mongodb';
import { createApp, type HealthCheck } from '../../src/app.ts';
import { loadConfig } from '../../src/config/load-config.ts';
import { VolregError } from '../../src/domain/errors.ts';
import { readBodyCapped } from '../../src/http/body.ts';
import { createHttpMetrics } from '../../src/http/metrics.ts';
import type { HandlerMap } from '../../src/http/router.ts';
import { readinessChecks } from '../../src/main.ts';
import { capturedLog } from '../helpers/captured-log.ts';

/**
 * The app's fixed behaviour through a real listening server: error envelope, 404/405,
 * request ids, /healthz, /readyz, /metrics, GET /v2/. A test handler map stands in for the
 * areas, so a thrown domain error and an unexpected exception can be provoked on purpose.
 */

const { logger, lines: logLines } = capturedLog('debug');

const SECRET = 'EACCES: permission denied, open /srv/volreg/data/blobs/sha256/ab/secret';

const testHandlers: HandlerMap = {
  catalog: {
    GET: async () => {
      throw new VolregError('DENIED', 'no catalog for you', { reason: 'test' });
    },
  },
  tagsList: {
    GET: async () => {
      throw new Error(SECRET);
    },
  },
  manifest: {
    GET: async (ctx, req) => {
      ctx.body = { repository: req.repository, reference: req.params.reference };
    },
    HEAD: async () => {
      throw new VolregError('MANIFEST_UNKNOWN');
    },
  },
  referrers: {
    GET: async () => {
      throw Object.assign(new Error('EMFILE: too many open files, open /srv/volreg/data/x'), { code: 'EMFILE' });
    },
  },
  volumeTag: {
    PUT: async (ctx) => {
      const body = await readBodyCapped(ctx.req, 4096);
      ctx.status = 201;
      ctx.body = { received: body.length };
    },
  },
};

async function listen(readiness: HealthCheck[] = []): Promise<{ url: string; close(): Promise<void> }> {
  const metrics = createHttpMetrics();
  const app = createApp({ logger, handlers: [testHandlers], readiness, middleware: [metrics.middleware], metrics: metrics.handler });
  const server = createServer(app.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

let shared: Awaited<ReturnType<typeof listen>>;
let url: string;
test.before(async () => {
  shared = await listen();
  url = shared.url;
});
test.after.always(() => shared.close());

type Envelope = { errors: Array<{ code: string; message: string; detail?: unknown }> };
async function json(res: Response): Promise<Envelope> {
  const type = res.headers.get('content-type') ?? '';
  if (!type.startsWith('application/json')) throw new Error(`not JSON: ${type}`);
  return (await res.json()) as Envelope;
}

test('GET /healthz answers 200', async (t) => {
  const res = await fetch(`${url}/healthz`);
  t.is(res.status, 200);
  t.deepEqual(await res.json(), { status: 'ok' });
});

test('GET /v2/ answers 200 {} with the distribution API version header', async (t) => {
  for (const path of ['/v2/', '/v2']) {
    const res = await fetch(url + path);
    t.is(res.status, 200, path);
    t.is(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
    t.deepEqual(await res.json(), {});
  }
  const head = await fetch(`${url}/v2/`, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.headers.get('docker-distribution-api-version'), 'registry/2.0');
});

test('an unknown route is 404 NOT_FOUND in the error envelope', async (t) => {
  for (const path of ['/nope', '/v2/a/b/c/nothing/here', '/api/v1/unknown', '/v2/_catalog/extra']) {
    const res = await fetch(url + path);
    t.is(res.status, 404, path);
    const body = await json(res);
    t.is(body.errors.length, 1);
    t.is(body.errors[0]!.code, 'NOT_FOUND');
  }
});

test('a route without a handler for the method is 405 UNSUPPORTED with Allow', async (t) => {
  const res = await fetch(`${url}/v2/library/app/manifests/latest`, { method: 'PUT', body: '{}' });
  t.is(res.status, 405);
  t.is(res.headers.get('allow'), 'GET, HEAD');
  t.is((await json(res)).errors[0]!.code, 'UNSUPPORTED');
  const patch = await fetch(`${url}/v2/library/app/manifests/latest`, { method: 'PATCH', body: '{}' });
  t.is(patch.status, 405);
  t.is(patch.headers.get('allow'), 'GET, HEAD');
});

test('a thrown domain error keeps its code, status, message and detail', async (t) => {
  const res = await fetch(`${url}/v2/_catalog`);
  t.is(res.status, 403);
  t.deepEqual(await res.json(), { errors: [{ code: 'DENIED', message: 'no catalog for you', detail: { reason: 'test' } }] });
});

test('an unexpected exception is 500 UNKNOWN without stack, message or path; the log has it', async (t) => {
  const res = await fetch(`${url}/v2/library/app/tags/list`, { headers: { 'X-Request-Id': 'req-500-test' } });
  t.is(res.status, 500);
  const text = await res.text();
  const body = JSON.parse(text) as { errors: Array<{ code: string; message: string; detail?: unknown }> };
  t.is(body.errors[0]!.code, 'UNKNOWN');
  t.deepEqual(body.errors[0]!.detail, { requestId: 'req-500-test' });
  for (const leak of ['EACCES', '/srv/', 'secret', 'at ', '.ts', 'Error:']) t.false(text.includes(leak), leak);
  const logged = logLines.find((l) => l.requestId === 'req-500-test' && l.msg === 'unhandled error');
  t.truthy(logged);
  t.regex(JSON.stringify(logged), /EACCES/);
});

test('running out of file descriptors is 503 UNAVAILABLE with Retry-After, not 500; the log says what to do', async (t) => {
  const res = await fetch(`${url}/v2/a/referrers/sha256:${'0'.repeat(64)}`, { headers: { 'X-Request-Id': 'req-emfile' } });
  t.is(res.status, 503);
  t.is(res.headers.get('retry-after'), '1');
  const text = await res.text();
  t.is(JSON.parse(text).errors[0].code, 'UNAVAILABLE');
  t.false(text.includes('/srv/volreg'));
  t.truthy(logLines.find((l) => l.requestId === 'req-emfile' && l.level === 40 && /out of file descriptors/.test(String(l.msg))));
});

test('a client that goes away in the middle of its body is logged as such (info), not as an unhandled error', async (t) => {
  const { connect } = await import('node:net');
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1', () =>
    socket.write('PUT /api/v1/volumes/gone/tags/t1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-gone\r\nContent-Length: 4000\r\n\r\n0123456789'),
  );
  socket.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, 200));
  socket.destroy();
  for (let i = 0; i < 250 && !logLines.some((l) => l.requestId === 'req-gone' && l.msg === 'request'); i++) await new Promise((r) => setTimeout(r, 20));
  const mine = logLines.filter((l) => l.requestId === 'req-gone');
  t.truthy(mine.find((l) => l.level === 30 && l.msg === 'client went away before its request ended'), JSON.stringify(mine));
  t.false(mine.some((l) => (l.level as number) >= 50), JSON.stringify(mine));
});

test('HEAD errors carry status and headers but no body', async (t) => {
  const res = await fetch(`${url}/v2/library/app/manifests/latest`, { method: 'HEAD' });
  t.is(res.status, 404);
  t.is(await res.text(), '');
});

test('an invalid repository name is 400 NAME_INVALID', async (t) => {
  const res = await fetch(`${url}/v2/UPPER/case/manifests/latest`);
  t.is(res.status, 400);
  t.is((await json(res)).errors[0]!.code, 'NAME_INVALID');
  const dots = await fetch(`${url}/v2/a/..%2F..%2Fetc/manifests/latest`);
  t.is(dots.status, 400);
  t.is((await json(dots)).errors[0]!.code, 'NAME_INVALID');
});

test('request ids: a well-formed one is echoed, a hostile one replaced', async (t) => {
  const ok = await fetch(`${url}/healthz`, { headers: { 'X-Request-Id': 'abc-123' } });
  t.is(ok.headers.get('x-request-id'), 'abc-123');
  const hostile = await fetch(`${url}/healthz`, { headers: { 'X-Request-Id': 'a b\tc<script>' } });
  const id = hostile.headers.get('x-request-id') ?? '';
  t.regex(id, /^[0-9a-f-]{36}$/);
});

test('every request gets one JSON access log line', async (t) => {
  await fetch(`${url}/v2/library/app/manifests/v1`, { headers: { 'X-Request-Id': 'log-line-test' } });
  const lines = logLines.filter((l) => l.requestId === 'log-line-test' && l.msg === 'request');
  t.is(lines.length, 1);
  t.like(lines[0], { method: 'GET', path: '/v2/library/app/manifests/v1', status: 200, repository: 'library/app' });
  t.is(typeof lines[0]!.ms, 'number');
});

test('/metrics counts requests by route id and status, durations and bytes in and out', async (t) => {
  // its own server, so other tests' requests do not show up in its counters
  const own = await listen();
  t.teardown(() => own.close());
  const url = own.url;
  const payload = 'x'.repeat(1000);
  const put = await fetch(`${url}/api/v1/volumes/metrics-vol/tags/v1`, { method: 'PUT', body: payload });
  t.is(put.status, 201);
  const replyBytes = (await put.text()).length;
  await fetch(`${url}/v2/_catalog`);
  await fetch(`${url}/v2/_catalog`);
  await fetch(`${url}/definitely/not/here`);
  await fetch(`${url}/v2/library/app/manifests/latest`, { method: 'PATCH', body: '{}' });

  const res = await fetch(`${url}/metrics`);
  t.is(res.status, 200);
  t.regex(res.headers.get('content-type') ?? '', /^text\/plain/);
  const text = await res.text();
  t.regex(text, /^volreg_http_requests_total\{route="catalog",method="GET",status="403"\} 2$/m);
  t.regex(text, /^volreg_http_requests_total\{route="volumeTag",method="PUT",status="201"\} 1$/m);
  t.regex(text, /^volreg_http_requests_total\{route="unmatched",method="GET",status="404"\} [1-9]/m);
  t.regex(text, new RegExp(`^volreg_http_request_body_bytes_total\\{route="volumeTag"\\} ${payload.length}$`, 'm'));
  t.regex(text, new RegExp(`^volreg_http_response_body_bytes_total\\{route="volumeTag"\\} ${replyBytes}$`, 'm'));
  t.regex(text, /^volreg_http_request_duration_seconds_count\{route="catalog",method="GET"\} 2$/m);
  t.regex(text, /^volreg_http_request_duration_seconds_bucket\{le="\+Inf",route="volumeTag",method="PUT"\} 1$/m);
  t.regex(text, /^volreg_http_requests_total\{route="manifest",method="PATCH",status="405"\} 1$/m);
  // the raw path never becomes a label
  t.false(text.includes('definitely'));
});

test('a request whose client left before any reply is logged and counted as 499, not as the refusal it never got', async (t) => {
  const own = await listen();
  t.teardown(() => own.close());
  const { port } = new URL(own.url);
  const sock = connect(Number(port), '127.0.0.1');
  await once(sock, 'connect');
  sock.write('PUT /api/v1/volumes/left/tags/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n' + 'z'.repeat(100));
  await new Promise((r) => setTimeout(r, 100));
  sock.destroy();
  const logged = (): Record<string, unknown> | undefined => logLines.find((l) => l.msg === 'request' && l.path === '/api/v1/volumes/left/tags/v1');
  for (let i = 0; i < 100 && !logged(); i++) await new Promise((r) => setTimeout(r, 20));
  t.is(logged()?.status, 499);
  const text = await (await fetch(`${own.url}/metrics`)).text();
  t.regex(text, /^volreg_http_requests_total\{route="volumeTag",method="PUT",status="499"\} 1$/m);
  t.notRegex(text, /route="volumeTag",method="PUT",status="400"/);
});

test('a body over the cap is 413 TOO_LARGE', async (t) => {
  const res = await fetch(`${url}/api/v1/volumes/v/tags/big`, { method: 'PUT', body: 'y'.repeat(5000) });
  t.is(res.status, 413);
  t.is((await json(res)).errors[0]!.code, 'TOO_LARGE');
});

/** GET /readyz, with how long the answer took. */
async function timedReadyz(base: string): Promise<{ status: number; body: unknown; elapsed: number }> {
  const started = Date.now();
  const res = await fetch(`${base}/readyz`);
  const body: unknown = await res.json();
  return { status: res.status, body, elapsed: Date.now() - started };
}

test('/readyz runs its checks at once: each slow check is still running when the other starts', async (t) => {
  // Judged by overlap, not by the clock: a loaded machine makes any time bound flaky.
  const running = new Set<string>();
  const overlapped = new Set<string>();
  const slow = (name: string, fail: boolean): HealthCheck => ({
    name,
    check: () => {
      for (const other of running) overlapped.add(other).add(name);
      running.add(name);
      return new Promise<void>((resolve, reject) =>
        setTimeout(() => {
          running.delete(name);
          if (fail) reject(new Error(`${name} is slow and down`));
          else resolve();
        }, 300),
      );
    },
  });
  const own = await listen([slow('first', false), slow('second', true)]);
  try {
    const { status, body } = await timedReadyz(own.url);
    t.is(status, 503);
    t.deepEqual(body, {
      status: 'unavailable',
      checks: { first: 'ok', second: 'unavailable' },
      reasons: { second: 'second is slow and down' },
    });
    // one after the other, a prober with a timeout near one check's time would give up
    t.deepEqual([...overlapped].sort(), ['first', 'second']);
  } finally {
    await own.close();
  }
});

test('/readyz is 503 quickly when MongoDB is unreachable', async (t) => {
  // a port nobody listens on
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));

  const client = new MongoClient(`mongodb://127.0.0.1:${port}/?directConnection=true`, { serverSelectionTimeoutMS: 30_000 });
  const { config } = loadConfig({ VOLREG_DATA_DIR: process.cwd() });
  const own = await listen(readinessChecks(config, client.db('x'), undefined));
  try {
    const { status, body, elapsed } = await timedReadyz(own.url);
    t.is(status, 503);
    t.deepEqual(body, {
      status: 'unavailable',
      checks: { mongodb: 'unavailable', blobstore: 'ok' },
      reasons: { mongodb: 'MongoDB did not answer within 1500 ms' },
    });
    t.true(elapsed < 5000, `took ${elapsed} ms`);
  } finally {
    await own.close();
    await client.close();
  }
});
