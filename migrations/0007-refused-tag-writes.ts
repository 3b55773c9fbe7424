import type { Db } from 'mongodb';
import { COLLECTIONS, type RefusedTagWriteDoc } from '../src/metadata/collections.ts';
import { ensureCollection } from '../src/metadata/ensure-collection.ts';

/**
 * The `refused_tag_writes` collection (collections.ts, RefusedTagWriteDoc), validated by
 * schemas/refused-tag-write.schema.json. Starts empty: a record matters only while the delete
 * racing its refused push runs. Also brings the tag units' validator up to the schema that
 * names `write_id` (units written before have none, which it allows). Idempotent.
 */
export const id = '0007-refused-tag-writes';
export const description = 'refused_tag_writes: tag units refused pushes had moved, for a delete racing them to put back; write_id in the tag validator';

export async function up(db: Db): Promise<void> {
  await ensureCollection(db, COLLECTIONS.tags, 'stored-docker-tag');
  const name = COLLECTIONS.refusedTagWrites;
  await ensureCollection(db, name, 'refused-tag-write');
  const records = db.collection<RefusedTagWriteDoc>(name);
  // a delete by digest looks up the units it took; garbage collection looks at records by age
  await records.createIndex({ unit_id: 1 });
  await records.createIndex({ recorded: 1 });
}
