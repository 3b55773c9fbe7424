import { randomUUID } from 'node:crypto';
import Koa from 'koa';
import Router from '@koa/router';
import type { Logger } from 'pino';
import { VolregError } from './domain/errors.ts';
import { resolveClientAddress } from './http/client-address.ts';
import { bodyBytes } from './http/body-bytes.ts';
import { clientIdle, cutOff } from './http/client-idle.ts';
import { errorMiddleware, type ErrorTranslation } from './http/error-middleware.ts';
import { buildRouter, type HandlerMap, type RouterOptions } from './http/router.ts';
import { recordedStatus } from './http/recorded-status.ts';
import { refuseUnservableRequests } from './http/unservable-requests.ts';

export interface HealthCheck {
  name: string;
  /** Rejects when not ready, with a message fit for anyone to read: /readyz answers it as the reason. */
  check(): Promise<void>;
}

export interface AppDeps {
  logger: Logger;
  /** Route handlers contributed by each area (blobs, manifests, volumes...). */
  handlers: HandlerMap[];
  /** Dependencies /readyz checks (MongoDB, blob store). */
  readiness: HealthCheck[];
  /** Why the process can no longer work and must be restarted, if so (/healthz fails then). */
  fatal?: () => string | undefined;
  /** What a dependency's failure means to a client (see errorMiddleware). */
  translateError?: ErrorTranslation;
  /** Optional extra middleware run before routing (metrics, auth). */
  middleware?: Koa.Middleware[];
  authorize?: RouterOptions['authorize'];
  /** Handler for GET /metrics. */
  metrics?: (ctx: Koa.Context) => Promise<void>;
  /** Whether a connection's address is a reverse proxy whose X-Forwarded-For is believed; none when absent. */
  trustedProxy?: (address: string) => boolean;
  /** How long a connection may stand still while volreg waits on the client (client-idle.ts); none when absent. */
  clientIdleSeconds?: number;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Builds the Koa app from its dependencies. No I/O happens here. */
export function createApp(deps: AppDeps): Koa {
  const app = new Koa();
  app.proxy = false;
  // Koa's own error printing is replaced by errorMiddleware + pino.
  app.silent = true;

  app.use(resolveClientAddress(deps.trustedProxy ?? (() => false)));
  app.use(async (ctx, next) => {
    const incoming = ctx.get('X-Request-Id');
    const requestId = REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state.requestId = requestId;
    ctx.set('X-Request-Id', requestId);
    // What a tag, a listing or a snapshot's metadata answers changes under the same URL: a cache
    // (a proxy's, a client's) must ask again each time (the ETag makes that a 304), or a restore
    // could get what a tag held before the last backup.
    ctx.set('Cache-Control', 'no-cache');
    const started = process.hrtime.bigint();
    const counted = bodyBytes(ctx);
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      deps.logger.info(
        {
          requestId,
          method: ctx.method,
          path: ctx.path,
          client: ctx.ip,
          proxy: ctx.state.peer,
          status: recordedStatus(ctx.req, ctx.res, ctx.status),
          ms: Math.round(ms * 10) / 10,
          bytesIn: counted.in() || undefined,
          bytesOut: counted.out() || undefined,
          cutOff: cutOff(ctx),
          repository: ctx.state.access?.repository ?? undefined,
          user: ctx.state.user,
        },
        'request',
      );
    }
  });
  if (deps.clientIdleSeconds !== undefined) app.use(clientIdle(deps.clientIdleSeconds));
  app.use(errorMiddleware(deps.logger, deps.translateError));
  app.use(refuseUnservableRequests());
  for (const mw of deps.middleware ?? []) app.use(mw);

  const fixed = new Router();
  fixed.get('/healthz', (ctx) => {
    const reason = deps.fatal?.();
    ctx.status = reason ? 503 : 200;
    ctx.body = reason ? { status: 'failed', reason } : { status: 'ok' };
  });
  const wasReady = new Map<string, boolean>();
  fixed.get('/readyz', async (ctx) => {
    const checks: Record<string, string> = {};
    const reasons: Record<string, string> = {};
    // at once, not one after the other: each has its own bounded wait, and under load (a restore
    // storm keeping the file thread pool busy) their sum could outlast a prober's timeout
    const outcomes = await Promise.allSettled(deps.readiness.map((hc) => hc.check()));
    for (const [i, hc] of deps.readiness.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.status === 'fulfilled') checks[hc.name] = 'ok';
      else {
        checks[hc.name] = 'unavailable';
        reasons[hc.name] = outcome.reason instanceof Error ? outcome.reason.message : String(outcome.reason);
      }
      // logged when it changes, not at every probe
      const ready = checks[hc.name] === 'ok';
      if (wasReady.get(hc.name) !== ready && (wasReady.has(hc.name) || !ready)) {
        if (ready) deps.logger.info({ check: hc.name }, 'ready again');
        else deps.logger.warn({ check: hc.name, reason: reasons[hc.name] }, 'not ready');
      }
      wasReady.set(hc.name, ready);
    }
    const ready = Object.keys(reasons).length === 0;
    ctx.status = ready ? 200 : 503;
    ctx.body = ready ? { status: 'ok', checks } : { status: 'unavailable', checks, reasons };
  });
  if (deps.metrics) fixed.get('/metrics', deps.metrics);
  app.use(fixed.routes() as unknown as Koa.Middleware);

  const base: HandlerMap = {
    v2Base: {
      GET: async (ctx) => {
        ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
        ctx.body = {};
      },
      HEAD: async (ctx) => {
        ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
        ctx.status = 200;
      },
    },
  };
  app.use(async (ctx, next) => {
    if (ctx.path.startsWith('/v2')) ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
    await next();
  });
  app.use(buildRouter([base, ...deps.handlers], { authorize: deps.authorize }));
  app.use(async () => {
    throw new VolregError('NOT_FOUND', 'no such endpoint');
  });
  return app;
}
