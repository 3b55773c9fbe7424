import type { Db } from 'mongodb';
import { COLLECTIONS, UNIT_TYPES } from '../src/metadata/collections.ts';
import { VOLUME_NOTE } from '../src/metadata/repo-content-repository.ts';
import { VOLUME_ARTIFACT_TYPE, VOLUME_CONFIG_MEDIA_TYPE } from '../src/domain/volumes/media-types.ts';

/**
 * Notes every repository that holds a volume snapshot manifest as a volume (the note a push now
 * writes before its tag), so volumes whose snapshots all came through /v2 before the note existed
 * are listed too. A manifest of the volume type that is not a whole snapshot (two layers, say)
 * notes its repository as well: the listing looks at its tags and finds no snapshot there.
 * Idempotent: setting the note again changes nothing.
 */
export const id = '0004-volume-notes';
export const description = 'note the repositories that hold volume snapshots';

const BATCH = 1000;

export async function up(db: Db): Promise<void> {
  const volumeManifests = db.collection(COLLECTIONS.manifests).find(
    {
      $or: [
        { artifact_type: VOLUME_ARTIFACT_TYPE },
        { artifact_type: null, config_media_type: { $in: [VOLUME_ARTIFACT_TYPE, VOLUME_CONFIG_MEDIA_TYPE] } },
      ],
    },
    { projection: { _id: 1 } },
  );
  const repos = new Set<string>();
  let ids: string[] = [];
  const collect = async (): Promise<void> => {
    if (ids.length === 0) return;
    const held = (await db.collection(COLLECTIONS.repoContentUnits).distinct('repo_id', { unit_type_id: UNIT_TYPES.manifest, unit_id: { $in: ids } })) as string[];
    for (const r of held) repos.add(r);
    ids = [];
  };
  for await (const m of volumeManifests) {
    ids.push(String(m._id));
    if (ids.length >= BATCH) await collect();
  }
  await collect();
  for (const repo of repos) {
    await db.collection(COLLECTIONS.repos).updateOne({ _id: repo as never }, { $set: { [`notes.${VOLUME_NOTE}`]: true } });
  }
}
