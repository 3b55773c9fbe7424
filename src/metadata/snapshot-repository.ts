import { randomUUID } from 'node:crypto';
import type { Collection, Db, Filter } from 'mongodb';
import type { Digest } from '../domain/digest.ts';
import type { RepositoryName, Tag } from '../domain/names.ts';
import type { Compression } from '../domain/volumes/media-types.ts';
import type { SnapshotPosition } from '../domain/volumes/listing-position.ts';
import type { IndexedSnapshot, SnapshotInfo, SnapshotListQuery, VerifyResult, VolumeSummary } from '../domain/volumes/snapshot.ts';
import { COLLECTIONS, UNIT_TYPES, type PushRecordDoc } from './collections.ts';
import { MarkedCache, type MetadataMarks } from './marked-cache.ts';
import { isDuplicateKey } from './repo-content-repository.ts';
import { assertValid } from './schema-validator.ts';

/**
 * `volume_snapshots`: the indexed metadata of volume snapshots, one document per tag of a
 * volume repository (migration 0002). This is an index next to the tag units, not the truth
 * about what a tag points at: readers check `manifest_digest` against the tag.
 */
export const SNAPSHOTS_COLLECTION = COLLECTIONS.volumeSnapshots;

export interface SnapshotDoc {
  _id: string;
  repo_id: string;
  tag: string;
  manifest_digest: string;
  config_digest: string;
  layer_digest: string;
  layer_size: number;
  layer_media_type: string;
  compression: Compression;
  uncompressed_digest: string | null;
  uncompressed_size: number | null;
  entries: number | null;
  unsafe_entries: number | null;
  host: string | null;
  labels: Record<string, string>;
  created: Date;
  source: 'api' | 'oci';
  last_verify: { ok: boolean; at: Date; problems: string[] } | null;
  /** new at every write: a reader mending the document replaces only the one it read (absent before it) */
  revision?: string;
  _last_updated: number;
}


function toInfo(d: SnapshotDoc): SnapshotInfo {
  return {
    volume: d.repo_id as RepositoryName,
    tag: d.tag as Tag,
    manifestDigest: d.manifest_digest as Digest,
    configDigest: d.config_digest as Digest,
    layer: { digest: d.layer_digest as Digest, size: d.layer_size, mediaType: d.layer_media_type },
    compression: d.compression,
    uncompressed:
      d.uncompressed_digest !== null && d.uncompressed_size !== null
        ? { digest: d.uncompressed_digest as Digest, size: d.uncompressed_size }
        : null,
    entries: d.entries,
    unsafeEntries: d.unsafe_entries,
    host: d.host,
    labels: d.labels,
    created: d.created.toISOString(),
    lastVerify: d.last_verify ? { ok: d.last_verify.ok, at: d.last_verify.at.toISOString(), problems: d.last_verify.problems } : null,
    source: d.source,
  };
}

function toDoc(s: SnapshotInfo, id: string): SnapshotDoc {
  return {
    _id: id,
    repo_id: s.volume,
    tag: s.tag,
    manifest_digest: s.manifestDigest,
    config_digest: s.configDigest,
    layer_digest: s.layer.digest,
    layer_size: s.layer.size,
    layer_media_type: s.layer.mediaType,
    compression: s.compression,
    uncompressed_digest: s.uncompressed?.digest ?? null,
    uncompressed_size: s.uncompressed?.size ?? null,
    entries: s.entries,
    unsafe_entries: s.unsafeEntries,
    host: s.host,
    labels: s.labels,
    created: new Date(s.created),
    source: s.source,
    last_verify: s.lastVerify ? { ok: s.lastVerify.ok, at: new Date(s.lastVerify.at), problems: s.lastVerify.problems } : null,
    revision: randomUUID(),
    _last_updated: Math.floor(Date.now() / 1000),
  };
}

/** The snapshots listed after a position: older, or as old with a later tag. */
function afterPosition(p: SnapshotPosition): Filter<SnapshotDoc> {
  return { $or: [{ created: { $lt: p.created } }, { created: p.created, tag: { $gt: p.tag } }] };
}

/**
 * What the volume summaries kept between listings may weigh together: about 20,000 volumes of
 * a few labels (a summary takes about 1.4 KB). A summary's latest snapshot carries its labels,
 * and one pushed through /v2 carries whatever its config blob says (up to 64 KiB of them, some
 * 350 KB in memory), so each is weighed by what it holds rather than counted.
 */
const KEPT_SUMMARY_BYTES = 32 * 1024 * 1024;

/** About what a summary takes in memory, in bytes (measured: 1.4 KB bare, each label about 100 bytes more than its text). */
export function summaryWeight(s: VolumeSummary | null): number {
  if (s === null) return 100;
  const latest = s.latest;
  let bytes = 1500;
  for (const [k, v] of Object.entries(latest.labels)) bytes += 100 + k.length + v.length;
  for (const p of latest.lastVerify?.problems ?? []) bytes += 50 + p.length;
  return bytes;
}

export class SnapshotRepository {
  private readonly coll: Collection<SnapshotDoc>;
  private readonly pushRecords: Collection<PushRecordDoc>;
  /** the marks of a volume's snapshot documents, its tags and its holdings (none without the engine's, marked-cache.ts) */
  private readonly marks: { docs: (repo: string) => number; tags: (repo: string) => number; held: (repo: string, type: string) => number } | undefined;
  /** the marks of every volume's documents, tags, holdings and notes together (none without the engine's) */
  private readonly wholeMark: (() => number) | undefined;
  /** each volume's summary (null: no snapshot), kept while its documents stay as they were */
  private readonly keptSummaries: MarkedCache<VolumeSummary | null>;

  constructor(db: Db, marks?: MetadataMarks, opts: { keptSummaryBytes?: number } = {}) {
    this.coll = db.collection<SnapshotDoc>(SNAPSHOTS_COLLECTION);
    this.pushRecords = db.collection<PushRecordDoc>(COLLECTIONS.volumePushRecords);
    this.keptSummaries = new MarkedCache<VolumeSummary | null>(opts.keptSummaryBytes ?? KEPT_SUMMARY_BYTES, summaryWeight);
    this.marks = marks && { docs: marks.reader(SNAPSHOTS_COLLECTION), tags: marks.reader(COLLECTIONS.tags), held: marks.reader(COLLECTIONS.repoContentUnits) };
    if (marks) {
      const whole = [SNAPSHOTS_COLLECTION, COLLECTIONS.tags, COLLECTIONS.repoContentUnits, COLLECTIONS.repos].map((c) => marks.wholeReader(c));
      this.wholeMark = () => whole.reduce((sum, read) => sum + read(), 0);
    }
  }

  /**
   * As volumeMark, for every volume at once, and for the repositories noted as volumes
   * (`repos`, which the volume list starts from): a number that moves whenever any of it
   * changes; null without change marks.
   */
  storeMark(): number | null {
    return this.wholeMark ? this.wholeMark() : null;
  }

  /**
   * A number that moves whenever a volume's snapshot documents or tags change, or which
   * manifests and lists it holds, whoever changes them; null when the database shares no change
   * marks, and every read must ask. A tag serves a snapshot only while its manifest (or index)
   * is held: one held again (a push of it by digest, a push or collection putting back what a
   * delete or collection took meanwhile) changes no tag and no document.
   */
  volumeMark(repo: string): number | null {
    const m = this.marks;
    // the counters only grow, so their sum moves whenever one does
    return m ? m.docs(repo) + m.tags(repo) + m.held(repo, UNIT_TYPES.manifest) + m.held(repo, UNIT_TYPES.manifestList) : null;
  }

  /**
   * Records a snapshot described from its tag (a tag that moved past the index) in place of the
   * document the reader read (`seen`, from `read`; null: there was none), unless that document
   * was written since: by a push or a reader that looked at the tag later, or by a verify, and
   * what they wrote must stay.
   */
  async replaceStale(info: SnapshotInfo, seen: IndexedSnapshot | null): Promise<void> {
    try {
      if (seen === null) await this.write(info, {}, { onlyInsert: true });
      else await this.write(info, { revision: seen.revision } as Filter<SnapshotDoc>);
    } catch (err) {
      // the filter passed over the current document, so the upsert met it on the unique key
      if (!isDuplicateKey(err)) throw err;
    }
  }

  private async write(info: SnapshotInfo, condition: Filter<SnapshotDoc>, opts: { onlyInsert?: boolean } = {}): Promise<void> {
    const doc = toDoc(info, randomUUID());
    assertValid('volume-snapshot', doc, 'UNKNOWN');
    const { _id, ...fields } = doc;
    const update = opts.onlyInsert ? { $setOnInsert: doc } : { $set: fields, $setOnInsert: { _id } };
    await this.coll.updateOne({ repo_id: doc.repo_id, tag: doc.tag, ...condition }, update, { upsert: true });
  }

  /**
   * Keeps what a push through /api/v1 found in its archive, by the manifest it is about to tag
   * (collections.ts, PushRecordDoc). A record that exists stays: the same manifest is the same
   * archive, so it found the same.
   */
  async recordPush(volume: string, manifestDigest: Digest, unsafeEntries: number): Promise<void> {
    const fields = { repo_id: volume, unsafe_entries: unsafeEntries, recorded: new Date() };
    assertValid('volume-push-record', { _id: manifestDigest, ...fields }, 'UNKNOWN');
    try {
      await this.pushRecords.updateOne({ _id: manifestDigest }, { $setOnInsert: fields }, { upsert: true });
    } catch (err) {
      if (!isDuplicateKey(err)) throw err; // a push of the same manifest recorded it first
    }
  }

  /** What the push of a manifest through /api/v1 found in its archive; null: it came through /v2. */
  async pushRecord(manifestDigest: Digest): Promise<{ unsafeEntries: number } | null> {
    const doc = await this.pushRecords.findOne({ _id: manifestDigest }, { projection: { _id: 0, unsafe_entries: 1 } });
    return doc ? { unsafeEntries: doc.unsafe_entries } : null;
  }

  async get(repo: string, tag: string): Promise<SnapshotInfo | null> {
    return (await this.read(repo, tag))?.info ?? null;
  }

  /** A tag's document with its revision, for a reader that may mend it (replaceStale). */
  async read(repo: string, tag: string): Promise<IndexedSnapshot | null> {
    const doc = await this.coll.findOne({ repo_id: repo, tag });
    // null matches a document written before revisions, which lacks the field
    return doc ? { info: toInfo(doc), revision: doc.revision ?? null } : null;
  }

  async newestCreated(repo: string): Promise<Date | null> {
    const doc = await this.coll.find({ repo_id: repo }, { projection: { _id: 0, created: 1 } }).sort({ created: -1 }).limit(1).next();
    return doc ? doc.created : null;
  }

  private filter(repo: string, q: Omit<SnapshotListQuery, 'limit' | 'offset'>): Filter<SnapshotDoc> {
    const f: Filter<SnapshotDoc> = { repo_id: repo };
    if (q.host !== undefined) f.host = q.host;
    if (q.since !== undefined || q.until !== undefined) {
      f.created = { ...(q.since ? { $gte: q.since } : {}), ...(q.until ? { $lt: q.until } : {}) };
    }
    return f;
  }

  /**
   * A volume's snapshots, newest first and by tag within a millisecond (the order positions
   * name, listing-position.ts); `more` when some follow the page. `total` counts the filtered
   * list whatever the page.
   */
  async list(repo: string, q: SnapshotListQuery): Promise<{ items: SnapshotInfo[]; total: number; more: boolean }> {
    const filter = this.filter(repo, q);
    const page = q.after ? { $and: [filter, afterPosition(q.after)] } : filter;
    const [docs, total] = await Promise.all([
      this.coll.find(page).sort({ created: -1, tag: 1 }).skip(q.after ? 0 : q.offset).limit(q.limit + 1).toArray(),
      this.coll.countDocuments(filter),
    ]);
    return { items: docs.slice(0, q.limit).map(toInfo), total, more: docs.length > q.limit };
  }

  /** The names of the volumes with snapshot documents, sorted. */
  async volumeNames(): Promise<string[]> {
    return ((await this.coll.distinct('repo_id')) as string[]).sort();
  }

  /** The manifest each snapshot document of a volume names, by tag. */
  async indexedDigests(repos: readonly string[]): Promise<Map<string, Array<{ tag: string; manifestDigest: Digest }>>> {
    const out = new Map<string, Array<{ tag: string; manifestDigest: Digest }>>();
    for await (const d of this.coll.find({ repo_id: { $in: [...repos] } }, { projection: { _id: 0, repo_id: 1, tag: 1, manifest_digest: 1 } })) {
      let docs = out.get(d.repo_id);
      if (!docs) out.set(d.repo_id, (docs = []));
      docs.push({ tag: d.tag, manifestDigest: d.manifest_digest as Digest });
    }
    return out;
  }

  /**
   * Each volume's snapshot count, total layer bytes (each snapshot's, and each distinct layer
   * once) and latest snapshot (newest `created`, then the first tag); volumes with none are
   * left out. A volume's summary is kept until its documents change (marked-cache.ts); the
   * others cost one read of the few fields that decide, then one of the latest snapshots'
   * whole documents.
   */
  async summaries(repos: readonly string[]): Promise<Map<string, VolumeSummary>> {
    const out = new Map<string, VolumeSummary>();
    const due: string[] = [];
    const readAt = new Map<string, number>();
    for (const repo of repos) {
      const now = this.marks?.docs(repo);
      const hit = now === undefined ? undefined : this.keptSummaries.lookup(repo, now);
      if (hit === undefined) {
        due.push(repo);
        if (now !== undefined) readAt.set(repo, now);
      } else if (hit !== null) out.set(repo, hit);
    }
    if (due.length === 0) return out;
    const read = await this.readSummaries(due);
    for (const repo of due) {
      const summary = read.get(repo) ?? null;
      if (summary) out.set(repo, summary);
      const at = readAt.get(repo);
      if (at !== undefined) this.keptSummaries.keep(repo, at, () => this.marks!.docs(repo), summary);
    }
    return out;
  }

  private async readSummaries(repos: readonly string[]): Promise<Map<string, VolumeSummary>> {
    type Totals = { snapshots: number; totalSize: number; layers: Set<string>; storedSize: number; newest: Pick<SnapshotDoc, '_id' | 'tag' | 'created'> };
    const totals = new Map<string, Totals>();
    const fields = { projection: { _id: 1, repo_id: 1, tag: 1, created: 1, layer_digest: 1, layer_size: 1 } };
    for await (const d of this.coll.find({ repo_id: { $in: [...repos] } }, fields)) {
      let t = totals.get(d.repo_id);
      if (!t) totals.set(d.repo_id, (t = { snapshots: 0, totalSize: 0, layers: new Set(), storedSize: 0, newest: d }));
      t.snapshots++;
      t.totalSize += d.layer_size;
      if (!t.layers.has(d.layer_digest)) {
        t.layers.add(d.layer_digest);
        t.storedSize += d.layer_size;
      }
      const newer = d.created.getTime() - t.newest.created.getTime();
      if (newer > 0 || (newer === 0 && d.tag < t.newest.tag)) t.newest = d;
    }
    const latest = new Map<string, SnapshotDoc>();
    for await (const d of this.coll.find({ _id: { $in: [...totals.values()].map((t) => t.newest._id) } })) latest.set(d._id, d);
    const out = new Map<string, VolumeSummary>();
    for (const [repo, t] of totals) {
      // deleted between the two reads: the volume's latest as it is now (none left: not listed)
      const doc = latest.get(t.newest._id) ?? (await this.coll.find({ repo_id: repo }).sort({ created: -1, tag: 1 }).limit(1).next());
      if (doc) out.set(repo, { volume: repo as RepositoryName, snapshots: t.snapshots, totalSize: t.totalSize, storedSize: t.storedSize, latest: toInfo(doc) });
    }
    return out;
  }

  /** Records a verification, if the tag still holds the manifest that was verified. */
  async recordVerify(repo: string, tag: string, manifestDigest: Digest, result: VerifyResult): Promise<void> {
    await this.coll.updateOne(
      { repo_id: repo, tag, manifest_digest: manifestDigest },
      { $set: { last_verify: { ok: result.ok, at: new Date(result.at), problems: result.problems }, revision: randomUUID(), _last_updated: Math.floor(Date.now() / 1000) } },
    );
  }

  /** Forgets a tag's snapshot; `manifestDigest` limits it to the snapshot that was seen. Idempotent. */
  async delete(repo: string, tag: string, manifestDigest?: Digest): Promise<void> {
    await this.coll.deleteOne({ repo_id: repo, tag, ...(manifestDigest ? { manifest_digest: manifestDigest } : {}) });
  }
}
