import type { Context } from 'koa';
import { withPermissions } from '../write-permissions.ts';
import { readBodyCapped } from '../body.ts';
import { paths } from '../route-table.ts';
import type { HandlerMap } from '../router.ts';
import type { ManifestInfo, ManifestService } from '../../services/manifest-service.ts';
import { clientHolds, etagOf, requestPreconditions } from '../conditional.ts';
import { isDigestReference } from '../../domain/names.ts';

/** GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>. */

function acceptHeaders(ctx: Context): string[] {
  // Node joins repeated Accept headers with ", ", which parseAccept splits again.
  const v = ctx.req.headers.accept;
  return v === undefined ? [] : [v];
}

/**
 * A tag's reply is chosen by the request's Accept (tag-service.ts), so it says so (RFC 9110
 * section 12.5.5): a cache must not hand one client's representation to a client asking for
 * another. Set before the choice, so a 404 for an Accept nothing fits says it too. A digest
 * names fixed content.
 */
function varyByAccept(ctx: Context, reference: string): void {
  if (!isDigestReference(reference)) ctx.vary('Accept');
}

function setContentHeaders(ctx: Context, m: ManifestInfo): void {
  ctx.set('Docker-Content-Digest', m.digest);
  ctx.set('ETag', etagOf(m.digest));
  ctx.set('Content-Type', m.mediaType);
}

/** If-None-Match with the manifest's ETag (or `*`): the client has it, 304 (GET and HEAD alike). */
function notModified(ctx: Context, digest: string): boolean {
  if (!clientHolds(ctx.get('If-None-Match'), digest)) return false;
  ctx.status = 304;
  ctx.set('Docker-Content-Digest', digest);
  ctx.set('ETag', etagOf(digest));
  return true;
}

export function manifestHandlers(services: { manifests: ManifestService }, limits: { manifestBytes: number }): HandlerMap {
  const { manifests } = services;
  return {
    manifest: {
      GET: async (ctx, { params, repository }) => {
        varyByAccept(ctx, params.reference!);
        const m = await manifests.get(repository, params.reference!, acceptHeaders(ctx));
        if (notModified(ctx, m.digest)) return;
        ctx.status = 200;
        ctx.body = m.body;
        setContentHeaders(ctx, m);
      },
      HEAD: async (ctx, { params, repository }) => {
        varyByAccept(ctx, params.reference!);
        const m = await manifests.head(repository, params.reference!, acceptHeaders(ctx));
        if (notModified(ctx, m.digest)) return;
        ctx.status = 200;
        setContentHeaders(ctx, m);
        ctx.set('Content-Length', String(m.size));
      },
      PUT: async (ctx, { params, repository }) => {
        const body = await readBodyCapped(ctx.req, limits.manifestBytes, 'MANIFEST_TOO_LARGE');
        const tagParam = ctx.query.tag;
        const tags = tagParam === undefined ? [] : Array.isArray(tagParam) ? tagParam : [tagParam];
        const preconditions = withPermissions(requestPreconditions(ctx.get('If-Match'), ctx.get('If-None-Match')), ctx, repository);
        const result = await manifests.put(repository, params.reference!, body, ctx.get('Content-Type'), { tags, preconditions });
        ctx.body = null;
        ctx.status = 201;
        ctx.set('Location', paths.manifest(repository, result.digest));
        ctx.set('Docker-Content-Digest', result.digest);
        if (result.subject) ctx.set('OCI-Subject', result.subject);
        if (tags.length > 0) ctx.set('OCI-Tag', result.tags.join(', '));
      },
      DELETE: async (ctx, { params, repository }) => {
        await manifests.delete(repository, params.reference!, { preconditions: requestPreconditions(ctx.get('If-Match'), ctx.get('If-None-Match')) });
        ctx.body = null;
        ctx.status = 202;
      },
    },
  };
}
