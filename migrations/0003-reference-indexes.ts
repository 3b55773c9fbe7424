import type { Db } from 'mongodb';
import { COLLECTIONS } from '../src/metadata/collections.ts';

/**
 * Indexes on the digests a manifest or list references, so "who still uses this blob or
 * manifest?" (garbage collection's check before every delete) is an index lookup, not a scan
 * of every manifest. `blob_digests` and `manifest_digests` are arrays: multikey indexes.
 * Idempotent: creating an index that exists with the same options is a no-op.
 */
export const id = '0003-reference-indexes';
export const description = 'indexes on referenced blob and manifest digests';

export async function up(db: Db): Promise<void> {
  const manifests = db.collection(COLLECTIONS.manifests);
  await manifests.createIndex({ blob_digests: 1 });
  await manifests.createIndex({ config_digest: 1 });
  await db.collection(COLLECTIONS.manifestLists).createIndex({ manifest_digests: 1 });
}
