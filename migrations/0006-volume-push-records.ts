import type { Db } from 'mongodb';
import { COLLECTIONS, type PushRecordDoc } from '../src/metadata/collections.ts';
import { ensureCollection } from '../src/metadata/ensure-collection.ts';
import { SNAPSHOTS_COLLECTION, type SnapshotDoc } from '../src/metadata/snapshot-repository.ts';

/**
 * The `volume_push_records` collection (collections.ts, PushRecordDoc), validated by
 * schemas/volume-push-record.schema.json, filled from the snapshot documents that pushes
 * through /api/v1 wrote before it existed. Idempotent: a record that exists is left as it is.
 */
export const id = '0006-volume-push-records';
export const description = 'volume_push_records: what /api/v1 pushes found in their archives, by manifest';

const BATCH = 1000;

export async function up(db: Db): Promise<void> {
  const name = COLLECTIONS.volumePushRecords;
  await ensureCollection(db, name, 'volume-push-record');
  const records = db.collection<PushRecordDoc>(name);
  // garbage collection looks at records by age
  await records.createIndex({ recorded: 1 });
  const pushed = db
    .collection<SnapshotDoc>(SNAPSHOTS_COLLECTION)
    .find({ source: 'api', unsafe_entries: { $ne: null } }, { projection: { _id: 0, repo_id: 1, manifest_digest: 1, unsafe_entries: 1 } });
  const recorded = new Date();
  let batch: PushRecordDoc[] = [];
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    // a record that exists (a run before, a push meanwhile, another tag of the manifest) stays as it is
    await records.bulkWrite(
      batch.map(({ _id, ...fields }) => ({ updateOne: { filter: { _id }, update: { $setOnInsert: fields }, upsert: true } })),
      { ordered: false },
    );
    batch = [];
  };
  for await (const d of pushed) {
    batch.push({ _id: d.manifest_digest, repo_id: d.repo_id, unsafe_entries: d.unsafe_entries!, recorded });
    if (batch.length >= BATCH) await flush();
  }
  await flush();
}
