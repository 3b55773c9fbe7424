import { parseTag } from '../../domain/names.ts';
import { nextLink, parsePage } from '../pagination.ts';
import { paths } from '../route-table.ts';
import type { HandlerMap } from '../router.ts';
import type { TagService } from '../../services/tag-service.ts';

/** GET /v2/<name>/tags/list?n=&last= */
export function tagHandlers(services: { tags: TagService }): HandlerMap {
  return {
    tagsList: {
      GET: async (ctx, { repository }) => {
        const page = parsePage(ctx.query, (last) => void parseTag(last));
        const result = await services.tags.list(repository, page);
        if (result.next) ctx.set('Link', nextLink(paths.tagsList(repository), result.next));
        ctx.body = { name: result.name, tags: result.tags };
      },
    },
  };
}
