import type { Collections } from './collections.ts';

/** The repository catalog: names of the `repos` documents, in byte order. */
export class CatalogRepository {
  constructor(private readonly c: Collections) {}

  async repoExists(repo: string): Promise<boolean> {
    return (await this.c.repos.findOne({ _id: repo }, { projection: { _id: 1 } })) !== null;
  }

  /** Repository names after `last` (exclusive), at most `n` when given; `more` when names follow. */
  async listNames(page: { n?: number; last?: string }): Promise<{ names: string[]; more: boolean }> {
    const filter = page.last !== undefined ? { _id: { $gt: page.last } } : {};
    const cursor = this.c.repos.find(filter, { projection: { _id: 1 } }).sort({ _id: 1 });
    // a batch as large as the limit: the page comes in the find's reply, without a getMore
    if (page.n !== undefined) cursor.limit(page.n + 1).batchSize(page.n + 1);
    const names = (await cursor.toArray()).map((d) => d._id);
    if (page.n === undefined) return { names, more: false };
    return { names: names.slice(0, page.n), more: names.length > page.n };
  }
}
