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

  /**
   * A page of the catalog. `visible`: the repositories the caller may see; the page is filled
   * from those alone, reading the store in batches, so `n`, `last` and the next page's link
   * mean the same over the filtered list as over the whole one.
   */
  async catalog(page: { n?: number; last?: string }, visible?: (repository: string) => boolean): Promise<CatalogPage> {
    if (page.n === 0) return { repositories: [], next: null };
    const { names, more } = visible ? await this.visibleNames(page, visible) : await this.deps.catalog.listNames(page);
    const last = names[names.length - 1];
    return { repositories: names, next: more && page.n !== undefined && last !== undefined ? { n: page.n, last } : null };
  }

  private async visibleNames(page: { n?: number; last?: string }, visible: (repository: string) => boolean): Promise<{ names: string[]; more: boolean }> {
    const names: string[] = [];
    let after = page.last;
    for (;;) {
      const batch = await this.deps.catalog.listNames({ n: CATALOG_BATCH, ...(after !== undefined ? { last: after } : {}) });
      for (const name of batch.names) {
        if (!visible(name)) continue;
        // one visible name past the page: there is a next page
        if (page.n !== undefined && names.length === page.n) return { names, more: true };
        names.push(name);
      }
      if (!batch.more || batch.names.length === 0) return { names, more: false };
      after = batch.names[batch.names.length - 1];
    }
  }
}

/** Names read from the store at a time while filling a filtered catalog page. */
const CATALOG_BATCH = 1000;
