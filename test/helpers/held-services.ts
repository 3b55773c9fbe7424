import { CatalogRepository } from '../../src/metadata/catalog-repository.ts';
import type { Collections } from '../../src/metadata/collections.ts';
import { ManifestRepository } from '../../src/metadata/manifest-repository.ts';
import { RepoContentRepository } from '../../src/metadata/repo-content-repository.ts';
import { TagRepository } from '../../src/metadata/tag-repository.ts';
import { ManifestService } from '../../src/services/manifest-service.ts';
import { TagService } from '../../src/services/tag-service.ts';

/**
 * Services whose steps can be held at a gate, so a test can run something else at exactly that
 * point of a push or a delete (a garbage collection, another request) and then let it go on.
 */

/** A gate: `reached` resolves when the held step is entered, `open()` lets it go on. */
export interface Gate {
  reached: Promise<void>;
  arrive: () => Promise<void>;
  open: () => void;
}

export function gate(): Gate {
  let arrived!: () => void;
  let opened!: () => void;
  const reached = new Promise<void>((r) => (arrived = r));
  const opening = new Promise<void>((r) => (opened = r));
  return {
    reached,
    arrive: () => {
      arrived();
      return opening;
    },
    open: () => opened(),
  };
}

/** `fn`, made to wait at `held` just before it runs or just after (its result held back meanwhile). */
export function heldAt<A extends unknown[], R>(held: Gate, when: 'before' | 'after', fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args) => {
    if (when === 'before') await held.arrive();
    const r = await fn(...args);
    if (when === 'after') await held.arrive();
    return r;
  };
}

/** The repositories a ManifestService works with, as the service under test gets them. */
export interface ManifestRepos {
  manifests: ManifestRepository;
  tags: TagRepository;
}

/**
 * A ManifestService whose manifest and tag repositories are the real ones with some methods
 * replaced by `wrap` (which gets the real repositories to call on).
 */
export function manifestServiceWith(c: Collections, wrap: (real: ManifestRepos) => { manifests?: Partial<ManifestRepository>; tags?: Partial<TagRepository> }): ManifestService {
  const repoContent = new RepoContentRepository(c);
  const real: ManifestRepos = { manifests: new ManifestRepository(c, repoContent), tags: new TagRepository(c, repoContent) };
  const replaced = wrap(real);
  const manifests = Object.assign(Object.create(real.manifests) as ManifestRepository, replaced.manifests ?? {});
  const tags = Object.assign(Object.create(real.tags) as TagRepository, replaced.tags ?? {});
  return new ManifestService({
    manifests,
    blobs: real.manifests,
    // these tests race metadata writes and record blobs as units only: their bytes count as there
    blobBytes: { stat: async () => ({ size: 0 }) },
    tagWriter: tags,
    tags: new TagService({ tags: real.tags, manifests: real.manifests, repos: new CatalogRepository(c) }),
    repos: repoContent,
    limits: { manifestBytes: 4 * 1024 * 1024 },
  });
}
