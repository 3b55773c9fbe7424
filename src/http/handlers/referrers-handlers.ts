import { parseDigest } from '../../domain/digest.ts';
import { queryOneKeepingPlus } from '../query-values.ts';
import { MEDIA_TYPES } from '../../domain/media-types.ts';
import type { HandlerMap } from '../router.ts';
import type { ReferrersService } from '../../services/referrers-service.ts';

/** GET /v2/<name>/referrers/<digest>?artifactType= */
export function referrersHandlers(services: { referrers: ReferrersService }): HandlerMap {
  return {
    referrers: {
      GET: async (ctx, { params, repository }) => {
        const digest = parseDigest(params.digest!);
        const raw = queryOneKeepingPlus(ctx, 'artifactType');
        const result = await services.referrers.list(repository, digest, raw ? { artifactType: raw } : {});
        if (result.filtersApplied.length > 0) ctx.set('OCI-Filters-Applied', result.filtersApplied.join(','));
        ctx.status = 200;
        ctx.body = Buffer.from(JSON.stringify(result.index));
        ctx.set('Content-Type', MEDIA_TYPES.ociIndex);
      },
    },
  };
}
