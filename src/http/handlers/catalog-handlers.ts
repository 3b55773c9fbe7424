import { parseRepositoryName } from '../../domain/names.ts';
import { nextLink, parsePage } from '../pagination.ts';
import { paths } from '../route-table.ts';
import type { HandlerMap } from '../router.ts';
import type { RepositoryService } from '../../services/repository-service.ts';

/** GET /v2/_catalog?n=&last= */
export function catalogHandlers(services: { repositories: RepositoryService }): HandlerMap {
  return {
    catalog: {
      GET: async (ctx) => {
        const page = parsePage(ctx.query, (last) => void parseRepositoryName(last));
        // only the repositories the user may pull are listed (no permissions: authentication is off)
        const permissions = ctx.state.permissions;
        const result = await services.repositories.catalog(page, permissions && ((name) => permissions.may('pull', name)));
        if (result.next) ctx.set('Link', nextLink(paths.catalog(), result.next));
        ctx.body = { repositories: result.repositories };
      },
    },
  };
}
