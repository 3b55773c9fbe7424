import type { Binary, Collection, Db, ObjectId } from 'mongodb';
import { MetadataMarks } from './marked-cache.ts';

/**
 * The Pulp 2 style collections of DESIGN.md section 3: names and document shapes live here and
 * nowhere else. Repositories in this folder map these documents to domain types.
 */
export const COLLECTIONS = {
  repos: 'repos',
  blobs: 'units_docker_blob',
  manifests: 'units_docker_manifest',
  manifestLists: 'units_docker_manifest_list',
  tags: 'units_docker_tag',
  repoContentUnits: 'repo_content_units',
  uploads: 'uploads',
  migrations: 'migrations',
  volumeSnapshots: 'volume_snapshots',
  volumePushRecords: 'volume_push_records',
  refusedTagWrites: 'refused_tag_writes',
} as const;

export type CollectionKey = keyof typeof COLLECTIONS;

export const UNIT_TYPES = {
  blob: 'docker_blob',
  manifest: 'docker_manifest',
  manifestList: 'docker_manifest_list',
  tag: 'docker_tag',
} as const;
export type UnitTypeId = (typeof UNIT_TYPES)[keyof typeof UNIT_TYPES];

/** Fields every Pulp 2 content document carries. */
export interface PulpCommonFields {
  _ns: string;
  _content_type_id: string;
  _last_updated: number; // epoch seconds
  pulp_user_metadata: Record<string, unknown>;
}

export interface RepoDoc {
  _id: string; // the repository name
  repo_id: string;
  created: string; // ISO 8601 UTC
  notes: Record<string, unknown>;
  scratchpad: { tags: Array<{ tag: string; image_id: string }> };
  content_unit_counts: Record<string, number>;
  _ns: string;
  _last_updated: number;
}

export interface BlobUnitDoc extends PulpCommonFields {
  _id: string; // uuid
  digest: string;
  size: number;
}

export interface ManifestUnitDoc extends PulpCommonFields {
  _id: string; // uuid
  digest: string;
  schema_version: 1 | 2;
  media_type: string;
  size: number;
  config_digest: string | null;
  blob_digests: string[];
  subject_digest: string | null;
  artifact_type: string | null;
  annotations: Record<string, string> | null;
  content: Binary; // the exact manifest bytes
}

export interface ManifestListUnitDoc extends PulpCommonFields {
  _id: string;
  digest: string;
  schema_version: 2;
  media_type: string;
  size: number;
  manifest_digests: string[];
  /** platform of each entry, in manifest order, for Accept-driven amd64 fallback */
  manifests: Array<{ digest: string; media_type: string; os?: string; architecture?: string; variant?: string }>;
  subject_digest: string | null;
  artifact_type: string | null;
  annotations: Record<string, string> | null;
  content: Binary;
}

export interface TagUnitDoc extends PulpCommonFields {
  _id: string; // uuid
  name: string;
  manifest_digest: string;
  schema_version: 1 | 2;
  manifest_type: 'image' | 'list';
  repo_id: string;
  /** new with every push's write (and kept when one is put back): whose write the unit holds */
  write_id?: string;
}

export interface RepoContentUnitDoc {
  _id: ObjectId;
  repo_id: string;
  unit_id: string;
  unit_type_id: UnitTypeId;
  created: string; // ISO 8601 UTC
  updated: string;
}

export interface UploadDoc {
  _id: string; // uuid
  repo_id: string;
  offset: number;
  started: Date;
  last_activity: Date;
  driver_state: Record<string, unknown>;
}

/**
 * What a push through /api/v1 found inspecting its archive, by the manifest it tagged: facts
 * that neither the manifest nor the config blob holds. With them a snapshot's metadata can be
 * described again whole from its tag whenever the index lost the race to it (volume-service.ts);
 * its existence is what `"source": "api"` means. Written once, never changed; garbage
 * collection removes it with the manifest.
 */
export interface PushRecordDoc {
  _id: string; // the manifest digest
  repo_id: string; // the volume pushed to
  unsafe_entries: number;
  recorded: Date;
}

/**
 * A tag unit a refused push had moved, with what it pointed at before: a delete by digest of the
 * pushed manifest that took the unit meanwhile puts it back from this (manifest-service.ts),
 * since neither order of the refused push and that delete takes the tag. Written when the push
 * is refused, never changed; garbage collection removes it after an hour at least.
 */
export interface RefusedTagWriteDoc {
  _id: string; // the refused write's write_id
  unit_id: string; // the tag unit's _id
  repo_id: string;
  name: string;
  schema_version: 1 | 2;
  manifest_digest: string; // where the refused push pointed the unit
  previous_digest: string; // where it pointed before
  previous_type: 'image' | 'list';
  recorded: Date;
}

export interface MigrationDoc {
  _id: string; // migration id, e.g. "0001-initial"
  applied_at: Date;
}

/**
 * The fields the embedded engine keys its change marks by, per collection (marked-cache.ts):
 * those a kept read asks about by equality. A tag name's units in a repository; one association
 * of a repository with a unit; one manifest unit; one volume's snapshot documents.
 */
export const CHANGE_MARK_KEYS: Readonly<Record<string, readonly string[]>> = {
  [COLLECTIONS.tags]: ['repo_id', 'name'],
  [COLLECTIONS.repoContentUnits]: ['repo_id', 'unit_type_id', 'unit_id'],
  [COLLECTIONS.blobs]: ['_id'],
  [COLLECTIONS.manifests]: ['_id'],
  [COLLECTIONS.manifestLists]: ['_id'],
  [COLLECTIONS.volumeSnapshots]: ['repo_id', 'tag'],
};

export interface Collections {
  /** the embedded engine's change marks, when this process started it (marked-cache.ts) */
  marks: MetadataMarks | undefined;
  repos: Collection<RepoDoc>;
  blobs: Collection<BlobUnitDoc>;
  manifests: Collection<ManifestUnitDoc>;
  manifestLists: Collection<ManifestListUnitDoc>;
  tags: Collection<TagUnitDoc>;
  repoContentUnits: Collection<RepoContentUnitDoc>;
  uploads: Collection<UploadDoc>;
  migrations: Collection<MigrationDoc>;
  volumePushRecords: Collection<PushRecordDoc>;
  refusedTagWrites: Collection<RefusedTagWriteDoc>;
}

export function collections(db: Db, changeMarks?: SharedArrayBuffer): Collections {
  return {
    marks: changeMarks ? new MetadataMarks(changeMarks, db.databaseName) : undefined,
    repos: db.collection<RepoDoc>(COLLECTIONS.repos),
    blobs: db.collection<BlobUnitDoc>(COLLECTIONS.blobs),
    manifests: db.collection<ManifestUnitDoc>(COLLECTIONS.manifests),
    manifestLists: db.collection<ManifestListUnitDoc>(COLLECTIONS.manifestLists),
    tags: db.collection<TagUnitDoc>(COLLECTIONS.tags),
    repoContentUnits: db.collection<RepoContentUnitDoc>(COLLECTIONS.repoContentUnits),
    uploads: db.collection<UploadDoc>(COLLECTIONS.uploads),
    migrations: db.collection<MigrationDoc>(COLLECTIONS.migrations),
    volumePushRecords: db.collection<PushRecordDoc>(COLLECTIONS.volumePushRecords),
    refusedTagWrites: db.collection<RefusedTagWriteDoc>(COLLECTIONS.refusedTagWrites),
  };
}

/** The Pulp 2 common fields for a unit of the given type, stamped now. */
export function pulpFields(unitType: UnitTypeId): PulpCommonFields {
  return {
    _ns: `units_${unitType}`,
    _content_type_id: unitType,
    _last_updated: Math.floor(Date.now() / 1000),
    pulp_user_metadata: {},
  };
}

/**
 * The update of a content unit's upsert by digest: it inserts `doc` when the digest is new and
 * otherwise stamps the existing unit's `_last_updated` again. Garbage collection deletes a unit
 * only while `_last_updated` is the one it read, so a push reusing the unit and a collection
 * deleting it cannot both succeed: the delete misses, or the push inserts a new unit. (A check
 * after the delete alone left a window: a collection dying right after its delete took a unit
 * a push had just reused.)
 */
export function upsertUnit<D extends { _last_updated: number }>(doc: D): { $setOnInsert: Omit<D, '_last_updated'>; $set: Pick<D, '_last_updated'> } {
  const { _last_updated, ...rest } = doc;
  return { $setOnInsert: rest, $set: { _last_updated } as Pick<D, '_last_updated'> };
}
