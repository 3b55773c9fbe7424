import type { CreateIndexesOptions, Db, IndexSpecification } from 'mongodb';
import { COLLECTIONS } from '../src/metadata/collections.ts';
import { ensureCollection } from '../src/metadata/ensure-collection.ts';

/**
 * The collections of DESIGN.md section 3 with their indexes and `$jsonSchema` validators
 * (from schemas/stored-*.schema.json). Idempotent: creating what exists is a no-op.
 */
export const id = '0001-initial';
export const description = 'Pulp 2 style collections, their indexes and JSON-Schema validators';

interface CollectionSpec {
  name: string;
  schema: string | null;
  indexes: Array<{ keys: IndexSpecification; options?: CreateIndexesOptions }>;
}

const unique = { unique: true };

const SPECS: CollectionSpec[] = [
  { name: COLLECTIONS.repos, schema: 'stored-repo', indexes: [{ keys: { repo_id: 1 }, options: unique }] },
  { name: COLLECTIONS.blobs, schema: 'stored-docker-blob', indexes: [{ keys: { digest: 1 }, options: unique }] },
  {
    name: COLLECTIONS.manifests,
    schema: 'stored-docker-manifest',
    indexes: [{ keys: { digest: 1 }, options: unique }, { keys: { subject_digest: 1 } }],
  },
  {
    name: COLLECTIONS.manifestLists,
    schema: 'stored-docker-manifest-list',
    indexes: [{ keys: { digest: 1 }, options: unique }, { keys: { subject_digest: 1 } }],
  },
  {
    name: COLLECTIONS.tags,
    schema: 'stored-docker-tag',
    indexes: [
      // the Tag unit key: one tag name per schema version per repository
      { keys: { name: 1, schema_version: 1, repo_id: 1 }, options: unique },
      { keys: { repo_id: 1, name: 1 } },
      { keys: { manifest_digest: 1 } },
    ],
  },
  {
    name: COLLECTIONS.repoContentUnits,
    schema: 'stored-repo-content-unit',
    indexes: [
      { keys: { repo_id: 1, unit_type_id: 1, unit_id: 1 }, options: unique },
      { keys: { unit_type_id: 1, unit_id: 1 } },
    ],
  },
  { name: COLLECTIONS.uploads, schema: 'stored-upload', indexes: [{ keys: { last_activity: 1 } }] },
  // applied migrations and the migration lock; no validator (the migrator owns it)
  { name: COLLECTIONS.migrations, schema: null, indexes: [] },
];

export async function up(db: Db): Promise<void> {
  for (const spec of SPECS) {
    await ensureCollection(db, spec.name, spec.schema);
    for (const index of spec.indexes) await db.collection(spec.name).createIndex(index.keys, index.options ?? {});
  }
}
