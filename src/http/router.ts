import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { VolregError } from '../domain/errors.ts';
import { parseRepositoryName, type RepositoryName } from '../domain/names.ts';
import { ROUTES, type Action, type HttpMethod, type RouteId } from './route-table.ts';

/** What a route needs, for the access-control middleware and for logs. */
export interface RouteAccess {
  routeId: RouteId;
  action: Action | null;
  repository: RepositoryName | null;
}

export type RouteParams = Readonly<Record<string, string>> & { readonly name?: string };
export interface RouteRequest {
  params: RouteParams;
  /** the validated repository name, when the route has one */
  repository: RepositoryName;
}
export type RouteHandler = (ctx: Context, req: RouteRequest) => Promise<void>;
/** Handlers a module contributes, by route id and method. */
export type HandlerMap = Partial<Record<RouteId, Partial<Record<HttpMethod, RouteHandler>>>>;

export interface RouterOptions {
  /** Runs after the route is known and before its handler (e.g. authorization). */
  authorize?: (ctx: Context, access: RouteAccess) => Promise<void>;
}

declare module 'koa' {
  interface DefaultState {
    access?: RouteAccess;
  }
}

function decodeParams(groups: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(groups)) {
    if (v === undefined) continue;
    try {
      out[k] = decodeURIComponent(v);
    } catch {
      throw new VolregError('BAD_REQUEST', 'malformed percent-encoding in path');
    }
  }
  return out;
}

/** Finds the route that owns a path (the first whose pattern matches). */
export function matchRoute(path: string): { id: RouteId; groups: Record<string, string | undefined> } | null {
  for (const id of Object.keys(ROUTES) as RouteId[]) {
    const m = ROUTES[id].pattern.exec(path);
    if (m) return { id, groups: m.groups ?? {} };
  }
  return null;
}

/**
 * The methods a route serves: those the table declares and a handler implements. HEAD is served
 * wherever GET is (RFC 9110): by the GET handler unless the route has its own, Koa leaving out
 * the body.
 */
function servedMethods(id: RouteId, merged: HandlerMap): Map<HttpMethod, { handler: RouteHandler; action: Action | null }> {
  const declared = ROUTES[id].methods as Partial<Record<HttpMethod, Action | null>>;
  const served = new Map<HttpMethod, { handler: RouteHandler; action: Action | null }>();
  for (const [method, handler] of Object.entries(merged[id] ?? {}) as Array<[HttpMethod, RouteHandler]>) {
    if (method in declared) served.set(method, { handler, action: declared[method] ?? null });
  }
  const get = served.get('GET');
  if (get && !served.has('HEAD')) served.set('HEAD', get);
  return served;
}

/**
 * Mounts every handler of the route table on a @koa/router. A path owned by a route but
 * requested with a method it does not serve is 405 UNSUPPORTED with `Allow`; a path no route
 * owns is 404 NOT_FOUND.
 */
export function buildRouter(maps: HandlerMap[], opts: RouterOptions = {}): Middleware {
  const merged: HandlerMap = {};
  for (const map of maps) {
    for (const [id, methods] of Object.entries(map) as Array<[RouteId, Partial<Record<HttpMethod, RouteHandler>>]>) {
      merged[id] = { ...(merged[id] ?? {}), ...methods };
    }
  }

  const servedByRoute = new Map((Object.keys(ROUTES) as RouteId[]).map((id) => [id, servedMethods(id, merged)] as const));
  const router = new Router();
  router.all(/^\/(v2|api\/v1)(\/.*)?$/, async (ctx) => {
    const found = matchRoute(ctx.path);
    if (!found) throw new VolregError('NOT_FOUND', 'no such endpoint');
    const served = servedByRoute.get(found.id)!;
    const method = ctx.method as HttpMethod;
    const entry = served.get(method);
    if (!entry) {
      throw new VolregError('UNSUPPORTED', `method ${ctx.method} not allowed here`, undefined, { Allow: [...served.keys()].join(', ') });
    }
    const params = decodeParams(found.groups);
    const repository = params.name !== undefined ? parseRepositoryName(params.name) : (null as unknown as RepositoryName);
    const access: RouteAccess = {
      routeId: found.id,
      action: entry.action,
      repository: params.name !== undefined ? repository : null,
    };
    ctx.state.access = access;
    if (opts.authorize) await opts.authorize(ctx, access);
    await entry.handler(ctx, { params, repository });
  });
  return router.routes() as unknown as Middleware;
}
