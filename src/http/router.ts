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

  const router = new Router();
  router.all(/^\/(v2|api\/v1)(\/.*)?$/, async (ctx) => {
    const found = matchRoute(ctx.path);
    if (!found) throw new VolregError('NOT_FOUND', 'no such endpoint');
    const spec = ROUTES[found.id];
    const method = ctx.method as HttpMethod;
    const handler = merged[found.id]?.[method];
    if (!handler || !(method in spec.methods)) {
      const allow = Object.keys(merged[found.id] ?? {}).join(', ');
      throw new VolregError('UNSUPPORTED', `method ${ctx.method} not allowed here`, undefined, { Allow: allow });
    }
    const params = decodeParams(found.groups);
    const repository = params.name !== undefined ? parseRepositoryName(params.name) : (null as unknown as RepositoryName);
    const access: RouteAccess = {
      routeId: found.id,
      action: (spec.methods as Partial<Record<HttpMethod, Action | null>>)[method] ?? null,
      repository: params.name !== undefined ? repository : null,
    };
    ctx.state.access = access;
    if (opts.authorize) await opts.authorize(ctx, access);
    await handler(ctx, { params, repository });
  });
  return router.routes() as unknown as Middleware;
}
