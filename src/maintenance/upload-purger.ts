import { BlobRepository } from '../metadata/blob-repository.ts';
import type { Collections } from '../metadata/collections.ts';
import { RepoContentRepository } from '../metadata/repo-content-repository.ts';
import { UploadRepository } from '../metadata/upload-repository.ts';
import { BlobService } from '../services/blob-service.ts';
import { UploadService } from '../services/upload-service.ts';
import type { BlobStore } from '../storage/blob-store.ts';

/** The upload purge of UploadService, for `volreg gc` outside the server. */
export function uploadPurger(c: Collections, store: BlobStore): Pick<UploadService, 'purgeAbandoned'> {
  const repoContent = new RepoContentRepository(c);
  const blobs = new BlobService({ store, units: new BlobRepository(c), membership: repoContent });
  return new UploadService({ store, blobs, sessions: new UploadRepository(c) });
}
