import type { Context } from 'koa';
import { VolregError } from '../domain/errors.ts';

/** Values of a request's query parameters, as handlers read them. */

export function queryValues(ctx: Context, key: string): string[] {
  const v = ctx.query[key];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

export function queryOne(ctx: Context, key: string): string | undefined {
  const values = queryValues(ctx, key);
  if (values.length > 1) throw new VolregError('BAD_REQUEST', `query parameter ${key} given more than once`);
  return values[0];
}

/**
 * A query value that may hold a '+' (a time's zone offset, a media type's `+json`) and never a
 * space: a '+' sent unescaped decodes to a space (form encoding), so `...T10:00:00+02:00` or
 * `...v1+json` typed into a URL arrives with a space, which can only have been that '+'.
 */
export function queryOneKeepingPlus(ctx: Context, key: string): string | undefined {
  return queryOne(ctx, key)?.replaceAll(' ', '+');
}
