/**
 * The repository catalog (`GET /v2/_catalog`): names in byte order, paginated like tags/list.
 */

export interface CatalogStore {
  listNames(page: { n?: number; last?: string }): Promise<{ names: string[]; more: boolean }>;
}

export interface CatalogPage {
  repositories: string[];
  /** the `last` of the next page, when there is one */
  next: { n: number; last: string } | null;
}

export class RepositoryService {
  constructor(private readonly deps: { catalog: CatalogStore }) {}

  async catalog(page: { n?: number; last?: string }): Promise<CatalogPage> {
    if (page.n === 0) return { repositories: [], next: null };
    const { names, more } = await this.deps.catalog.listNames(page);
    const last = names[names.length - 1];
    return { repositories: names, next: more && page.n !== undefined && last !== undefined ? { n: page.n, last } : null };
  }
}
