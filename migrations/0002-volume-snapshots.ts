import type { Db } from 'mongodb';
import { SNAPSHOTS_COLLECTION } from '../src/metadata/snapshot-repository.ts';
import { ensureCollection } from '../src/metadata/ensure-collection.ts';

/**
 * The `volume_snapshots` collection: snapshot metadata as indexed fields (repository, tag,
 * host, created...), so /api/v1 lists and filters without opening config blobs. Validated by
 * schemas/volume-snapshot.schema.json. Idempotent.
 */
export const id = '0002-volume-snapshots';
export const description = 'volume_snapshots collection with its indexes and JSON-Schema validator';

export async function up(db: Db): Promise<void> {
  const name = SNAPSHOTS_COLLECTION;
  await ensureCollection(db, name, 'volume-snapshot');
  const coll = db.collection(name);
  // one snapshot document per tag of a volume
  await coll.createIndex({ repo_id: 1, tag: 1 }, { unique: true });
  // a volume's snapshots newest first, optionally by host
  await coll.createIndex({ repo_id: 1, created: -1 });
  await coll.createIndex({ repo_id: 1, host: 1, created: -1 });
  // /api/v1/volumes: every volume with its latest snapshot
  await coll.createIndex({ created: -1 });
  await coll.createIndex({ manifest_digest: 1 });
}
