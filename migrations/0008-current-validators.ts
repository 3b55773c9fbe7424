import type { Db } from 'mongodb';
import { COLLECTIONS } from '../src/metadata/collections.ts';
import { ensureCollection } from '../src/metadata/ensure-collection.ts';

/**
 * Brings every collection's validator up to its schema in schemas/. Migration 0007 was extended
 * to install `write_id` in the tag units' validator after volregs had already applied it, so a
 * database they migrated kept the validator without it, and no later start put it right.
 * Idempotent: a validator that already matches is left alone.
 */
export const id = '0008-current-validators';
export const description = "every collection's validator as schemas/ has it (0007's tag validator, for databases migrated before 0007 installed it)";

/** each collection with a validator, and its schema in schemas/ */
export const VALIDATED_COLLECTIONS: ReadonlyArray<readonly [string, string]> = [
  [COLLECTIONS.repos, 'stored-repo'],
  [COLLECTIONS.blobs, 'stored-docker-blob'],
  [COLLECTIONS.manifests, 'stored-docker-manifest'],
  [COLLECTIONS.manifestLists, 'stored-docker-manifest-list'],
  [COLLECTIONS.tags, 'stored-docker-tag'],
  [COLLECTIONS.repoContentUnits, 'stored-repo-content-unit'],
  [COLLECTIONS.uploads, 'stored-upload'],
  [COLLECTIONS.volumeSnapshots, 'volume-snapshot'],
  [COLLECTIONS.volumePushRecords, 'volume-push-record'],
  [COLLECTIONS.refusedTagWrites, 'refused-tag-write'],
];

export async function up(db: Db): Promise<void> {
  for (const [name, schema] of VALIDATED_COLLECTIONS) await ensureCollection(db, name, schema);
}
