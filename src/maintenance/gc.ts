import { ObjectId, type Collection, type Filter } from 'mongodb';
import type { Logger } from 'pino';
import { monotonicMs, processClock } from '../domain/clock.ts';
import type { Digest } from '../domain/digest.ts';
import { UNIT_TYPES, type Collections, type ManifestListUnitDoc, type ManifestUnitDoc, type RepoContentUnitDoc, type UnitTypeId } from '../metadata/collections.ts';
import { BlobRepository } from '../metadata/blob-repository.ts';
import { isDuplicateKey, moveUnitCount } from '../metadata/repo-content-repository.ts';
import type { BlobStore } from '../storage/blob-store.ts';

/**
 * Garbage collection: mark and sweep, online (safe while pushes are served), conservative.
 *
 * What goes, in this order (a referencing document before what it references, DESIGN.md §1):
 *   1. associations (`repo_content_units`) whose unit document no longer exists;
 *   2. with `deleteUntagged`: a repository's manifests and lists that no tag points at, no kept
 *      list of the repository contains, that are no referrer (`subject`) of a kept manifest nor
 *      the subject of one — removed from that repository only; then the repository's blobs no
 *      manifest it keeps references (layers of removed manifests, abandoned pushes);
 *   3. manifest-list, then manifest unit documents no repository holds (a list or manifest that
 *      remains still protects the manifests it contains and its subject);
 *   4. blob units no repository holds and no remaining manifest references, then their bytes;
 *   5. bytes in the store without any blob unit (a crash between commit and record); bytes a
 *      manifest still uses get their unit back instead, held by the manifest's repositories;
 *   6. abandoned upload sessions (UploadService.purgeAbandoned), when given.
 *
 * And one finding, never a delete: blobs that kept manifests use whose bytes the store no longer
 * has (lost, or set aside as damaged by scrub or verify). Those manifests do not pull whole until
 * the same content is uploaded again, so the operator must hear of it before a restore needs it.
 *
 * Everything must be older than the grace period: a unit's `_last_updated` (set at insert, and
 * again by every push that reuses the unit), an association's `updated` (refreshed by every
 * push), a blob's last commit time (refreshed by a commit of an existing digest). The grace period covers the steps of a push in flight (a blob
 * committed but not yet recorded, a manifest pushed by digest before the index that lists it).
 * Ages are judged by the process's clock, which allows for a forward step of the wall clock
 * (domain/clock.ts): a step does not shorten the grace period of what was stamped before it.
 *
 * Races with pushes: each delete re-checks references right before it, is conditional on the
 * document being unchanged (a push reusing a unit stamps its `_last_updated`, so the delete and
 * the reuse cannot both succeed), and re-checks after: a reference that appeared meanwhile
 * restores the document. Bytes are deleted through the store's guarded delete: moved aside,
 * the unit re-checked while no commit can reuse them, then removed or put back. Pushes do the other
 * half (so even a grace period of 0 loses nothing acknowledged): a manifest push checks that
 * it is still held and its references are still there after its unit and tags are in place,
 * a blob's record checks its bytes again after its unit is (ManifestService.put,
 * BlobService.record); whichever acts last sees the other.
 */

export interface GcOptions {
  collections: Collections;
  blobStore: BlobStore;
  /** purges abandoned upload sessions with the same grace period (UploadService) */
  uploads?: { purgeAbandoned(olderThan: Date): Promise<number> };
  logger: Logger;
  graceSeconds: number;
  deleteUntagged: boolean;
  /** find and report, delete nothing */
  dryRun: boolean;
  /** the clock (tests age content by moving it forward); by default the process's, which allows for its steps (domain/clock.ts) */
  now?: () => Date;
  /** stops the run between items (server shutdown); the report says `aborted` */
  signal?: AbortSignal;
}

export interface GcCount {
  count: number;
  bytes: number;
}

export interface GcReport {
  dryRun: boolean;
  deleteUntagged: boolean;
  graceSeconds: number;
  /** content last touched before this instant was eligible */
  cutoff: string;
  startedAt: string;
  durationMs: number;
  /** associations whose unit document was gone */
  danglingAssociations: number;
  /** manifests and lists removed from a repository as untagged (bytes: manifest sizes) */
  untaggedManifests: GcCount;
  /** blobs removed from a repository because no manifest it keeps references them */
  unreferencedRepoBlobs: GcCount;
  manifestListUnits: GcCount;
  manifestUnits: GcCount;
  /** records of what /api/v1 pushes found in their archives, for manifests no longer stored */
  pushRecords: number;
  /** notes of refused tag writes, old enough that no delete racing their push still runs */
  refusedTagWrites: number;
  blobUnits: GcCount;
  /** bytes of deleted blob units removed from the store */
  blobBytes: GcCount;
  /** bytes that had no blob unit at all, removed from the store */
  orphanBytes: GcCount;
  /** bytes that had no blob unit but a manifest uses: their unit made again and held by the manifest's repositories */
  restoredBlobs: GcCount;
  uploadsPurged: number;
  /** deletes skipped or undone because a push referenced the content meanwhile */
  raced: number;
  /** items that failed (logged); the next run tries them again */
  errors: number;
  /** blobBytes.bytes + orphanBytes.bytes */
  freedBytes: number;
  /** the run was stopped before it finished (the next one carries on) */
  aborted: boolean;
  /** blobs that kept manifests use and the store lacks: their count, and the first MISSING_LISTED */
  missingBlobs: { count: number; blobs: MissingBlob[] };
}

export interface MissingBlob {
  digest: string;
  /** repositories holding a manifest that uses it (those manifests do not pull whole) */
  repositories: string[];
}

/** at most this many missing blobs are listed in a report (all are counted and logged) */
export const MISSING_LISTED = 100;

const BATCH = 200;
/** notes of refused tag writes are kept at least this long */
const REFUSED_TAG_WRITES_KEPT_MS = 3600_000;
/** ids per `$in` when a repository's whole holding is asked about (a 16 MiB command holds about 340,000) */
const IN_CHUNK = 10_000;
const MANIFEST_TYPES: UnitTypeId[] = [UNIT_TYPES.manifest, UNIT_TYPES.manifestList];

interface UnitSummary {
  _id: string;
  digest: string;
  size: number;
  _last_updated: number;
}

interface ManifestNode {
  id: string;
  type: UnitTypeId;
  digest: string;
  size: number;
  assocId: ObjectId;
  assocUpdated: string;
  young: boolean;
  subject: string | null;
  children: string[];
}

const zero = (): GcCount => ({ count: 0, bytes: 0 });

export async function collectGarbage(opts: GcOptions): Promise<GcReport> {
  return new GarbageCollector(opts).run();
}

class GarbageCollector {
  private readonly c: Collections;
  private readonly store: BlobStore;
  private readonly log: Logger;
  private readonly dry: boolean;
  private readonly startedAt: Date;
  private readonly cutoff: Date;
  private readonly report: GcReport;
  /** dry run only: what the earlier phases would have removed, so later ones see it gone */
  private readonly wouldUnhold = new Map<string, number>();
  private readonly wouldUnholdIn = new Set<string>();
  private readonly wouldDelete = new Set<string>();
  private readonly wouldDeleteBlobs = new Set<string>();

  constructor(private readonly opts: GcOptions) {
    this.c = opts.collections;
    this.store = opts.blobStore;
    this.log = opts.logger;
    this.dry = opts.dryRun;
    this.startedAt = opts.now ? opts.now() : processClock.now();
    this.cutoff = opts.now ? new Date(this.startedAt.getTime() - opts.graceSeconds * 1000) : processClock.cutoff(opts.graceSeconds * 1000);
    this.report = {
      dryRun: opts.dryRun,
      deleteUntagged: opts.deleteUntagged,
      graceSeconds: opts.graceSeconds,
      cutoff: this.cutoff.toISOString(),
      startedAt: this.startedAt.toISOString(),
      durationMs: 0,
      danglingAssociations: 0,
      untaggedManifests: zero(),
      unreferencedRepoBlobs: zero(),
      manifestListUnits: zero(),
      manifestUnits: zero(),
      pushRecords: 0,
      refusedTagWrites: 0,
      blobUnits: zero(),
      blobBytes: zero(),
      orphanBytes: zero(),
      restoredBlobs: zero(),
      uploadsPurged: 0,
      raced: 0,
      errors: 0,
      freedBytes: 0,
      aborted: false,
      missingBlobs: { count: 0, blobs: [] },
    };
  }

  async run(): Promise<GcReport> {
    const t0 = monotonicMs();
    this.log.info({ dryRun: this.dry, cutoff: this.report.cutoff, deleteUntagged: this.opts.deleteUntagged }, 'gc started');
    try {
      await this.dropDanglingAssociations();
      if (this.opts.deleteUntagged) await this.removeUntagged();
      await this.sweepManifestUnits(UNIT_TYPES.manifestList);
      await this.sweepManifestUnits(UNIT_TYPES.manifest);
      await this.sweepPushRecords();
      await this.sweepRefusedTagWrites();
      const referenced = await this.referencedDigests();
      await this.sweepBlobUnits(referenced);
      await this.sweepOrphanBytes();
      await this.reportMissingBytes(referenced);
      this.checkAborted();
      if (this.opts.uploads && !this.dry) this.report.uploadsPurged = await this.opts.uploads.purgeAbandoned(this.cutoff);
    } catch (err) {
      if (!(err instanceof Aborted)) throw err;
      this.report.aborted = true;
    }
    this.report.freedBytes = this.report.blobBytes.bytes + this.report.orphanBytes.bytes;
    this.report.durationMs = Math.round(monotonicMs() - t0);
    this.log.info({ ...this.report }, 'gc finished');
    return this.report;
  }

  private checkAborted(): void {
    if (this.opts.signal?.aborted) throw new Aborted();
  }

  // ---- age -----------------------------------------------------------------------------------

  /** `_last_updated` is whole seconds, floored: the unit may be up to a second younger. */
  private unitIsOld(lastUpdated: number): boolean {
    return (lastUpdated + 1) * 1000 <= this.cutoff.getTime();
  }

  private assocIsOld(updated: string): boolean {
    return updated < this.cutoff.toISOString();
  }

  // ---- 1. associations to missing units --------------------------------------------------------

  private async dropDanglingAssociations(): Promise<void> {
    const kinds: Array<[UnitTypeId, Collection<{ _id: string }>]> = [
      [UNIT_TYPES.tag, this.c.tags as unknown as Collection<{ _id: string }>],
      [UNIT_TYPES.manifestList, this.c.manifestLists as unknown as Collection<{ _id: string }>],
      [UNIT_TYPES.manifest, this.c.manifests as unknown as Collection<{ _id: string }>],
      [UNIT_TYPES.blob, this.c.blobs as unknown as Collection<{ _id: string }>],
    ];
    for (const [type, units] of kinds) {
      const cursor = this.c.repoContentUnits.find(
        { unit_type_id: type, updated: { $lt: this.cutoff.toISOString() } },
        { projection: { _id: 1, unit_id: 1, repo_id: 1 } },
      );
      for await (const batch of batches(cursor)) {
        const ids = [...new Set(batch.map((a) => a.unit_id))];
        const present = new Set((await units.find({ _id: { $in: ids } }, { projection: { _id: 1 } }).toArray()).map((u) => u._id));
        const dangling = batch.filter((a) => !present.has(a.unit_id));
        if (dangling.length === 0) continue;
        if (!this.dry) {
          // A unit id is a fresh uuid: once its document is gone no push can bring it back.
          // by repository, so that each repository's tally moves by what it lost
          const byRepo = new Map<string, Array<(typeof dangling)[number]['_id']>>();
          for (const a of dangling) {
            const ids = byRepo.get(a.repo_id);
            if (ids) ids.push(a._id);
            else byRepo.set(a.repo_id, [a._id]);
          }
          for (const [repo, ids] of byRepo) {
            const res = await this.c.repoContentUnits.deleteMany({ _id: { $in: ids }, unit_type_id: type });
            await moveUnitCount(this.c, repo, type, -res.deletedCount);
            this.report.danglingAssociations += res.deletedCount;
          }
        } else {
          this.report.danglingAssociations += dangling.length;
          for (const a of dangling) this.wouldUnhold.set(a.unit_id, (this.wouldUnhold.get(a.unit_id) ?? 0) + 1);
        }
        this.log.info({ unitType: type, count: dangling.length, dryRun: this.dry }, 'gc dropped associations to missing units');
      }
    }
  }

  // ---- 2. untagged manifests, per repository ---------------------------------------------------

  private async removeUntagged(): Promise<void> {
    const repos = (await this.c.repoContentUnits.distinct('repo_id', { unit_type_id: { $in: [...MANIFEST_TYPES, UNIT_TYPES.blob] } })) as string[];
    for (const repo of repos.sort()) {
      this.checkAborted();
      try {
        await this.removeUntaggedIn(repo);
      } catch (err) {
        this.report.errors++;
        this.log.error({ err, repository: repo }, 'gc could not sweep untagged manifests of a repository');
      }
    }
  }

  private async removeUntaggedIn(repo: string): Promise<void> {
    const assocs = await this.c.repoContentUnits
      .find({ repo_id: repo, unit_type_id: { $in: MANIFEST_TYPES } }, { projection: { _id: 1, unit_id: 1, unit_type_id: 1, updated: 1 } })
      .toArray();
    const byId = new Map(assocs.map((a) => [a.unit_id, a]));
    const ids = [...byId.keys()];
    // Each $in in pieces (MongoDB refuses a command past 16 MiB: about 340,000 ids), and the
    // tagged digests from a cursor (a distinct's answer stops at 16 MB).
    const images: Array<Pick<ManifestUnitDoc, '_id' | 'digest' | 'size' | '_last_updated' | 'subject_digest'>> = [];
    const lists: Array<Pick<ManifestListUnitDoc, '_id' | 'digest' | 'size' | '_last_updated' | 'subject_digest' | 'manifest_digests'>> = [];
    for (const part of chunk(ids, IN_CHUNK)) {
      const [i, l] = await Promise.all([
        this.c.manifests.find({ _id: { $in: part } }, { projection: { _id: 1, digest: 1, size: 1, _last_updated: 1, subject_digest: 1 } }).toArray(),
        this.c.manifestLists
          .find({ _id: { $in: part } }, { projection: { _id: 1, digest: 1, size: 1, _last_updated: 1, subject_digest: 1, manifest_digests: 1 } })
          .toArray(),
      ]);
      images.push(...i);
      lists.push(...l);
    }
    const tagged = new Set<string>();
    for await (const t of this.c.tags.find({ repo_id: repo }, { projection: { _id: 0, manifest_digest: 1 } })) tagged.add(t.manifest_digest);
    const nodes = new Map<string, ManifestNode>();
    const add = (d: { _id: string; digest: string; size: number; _last_updated: number; subject_digest?: string | null }, type: UnitTypeId, children: string[]): void => {
      const a = byId.get(d._id);
      if (!a) return;
      nodes.set(d.digest, {
        id: d._id,
        type,
        digest: d.digest,
        size: d.size,
        assocId: a._id,
        assocUpdated: a.updated,
        young: !this.unitIsOld(d._last_updated) || !this.assocIsOld(a.updated),
        subject: d.subject_digest ?? null,
        children,
      });
    };
    for (const d of images) add(d, UNIT_TYPES.manifest, []);
    for (const d of lists) add(d, UNIT_TYPES.manifestList, d.manifest_digests ?? []);

    // Mark: tagged and young manifests, then what kept ones contain, refer to, or are referred by.
    const referrers = new Map<string, string[]>();
    for (const n of nodes.values()) if (n.subject) referrers.set(n.subject, [...(referrers.get(n.subject) ?? []), n.digest]);
    const kept = new Set<string>();
    const tags = tagged;
    const work = [...nodes.values()].filter((n) => n.young || tags.has(n.digest)).map((n) => n.digest);
    while (work.length > 0) {
      const digest = work.pop()!;
      if (kept.has(digest) || !nodes.has(digest)) continue;
      kept.add(digest);
      const n = nodes.get(digest)!;
      work.push(...n.children, ...(n.subject ? [n.subject] : []), ...(referrers.get(digest) ?? []));
    }

    // Sweep: lists before the manifests they contain.
    const doomed = [...nodes.values()].filter((n) => !kept.has(n.digest)).sort((a, b) => (a.type === b.type ? 0 : a.type === UNIT_TYPES.manifestList ? -1 : 1));
    for (const n of doomed) {
      this.checkAborted();
      if (this.dry) {
        this.simulateUnhold(repo, n.id);
        this.count(this.report.untaggedManifests, n.size);
        continue;
      }
      try {
        const assoc = { _id: n.assocId, updated: n.assocUpdated };
        if (!(await this.unholdUnlessWanted(repo, n.type, n.id, assoc, () => this.stillWanted(repo, n.digest)))) continue;
        this.count(this.report.untaggedManifests, n.size);
        this.log.info({ repository: repo, digest: n.digest, unitType: n.type }, 'gc removed untagged manifest from repository');
      } catch (err) {
        this.report.errors++;
        this.log.error({ err, repository: repo, digest: n.digest }, 'gc could not remove untagged manifest');
      }
    }
    await this.removeUnreferencedBlobsIn(repo);
  }

  /** The repository's blobs that no manifest it still holds references, past the grace period. */
  private async removeUnreferencedBlobsIn(repo: string): Promise<void> {
    const heldManifests = (
      await this.c.repoContentUnits.find({ repo_id: repo, unit_type_id: UNIT_TYPES.manifest }, { projection: { unit_id: 1 } }).toArray()
    )
      .map((a) => a.unit_id)
      .filter((id) => !this.wouldUnholdIn.has(`${repo}\0${id}`));
    const used = new Set<string>();
    for (const part of chunk(heldManifests, IN_CHUNK)) {
      for await (const m of this.c.manifests.find({ _id: { $in: part } }, { projection: { config_digest: 1, blob_digests: 1 } })) {
        if (m.config_digest) used.add(m.config_digest);
        for (const d of m.blob_digests ?? []) used.add(d);
      }
    }
    const assocs = await this.c.repoContentUnits
      .find({ repo_id: repo, unit_type_id: UNIT_TYPES.blob }, { projection: { _id: 1, unit_id: 1, updated: 1 } })
      .toArray();
    for (const group of chunk(assocs, BATCH)) {
      const units = new Map(
        (await this.c.blobs.find({ _id: { $in: group.map((a) => a.unit_id) } }, { projection: { _id: 1, digest: 1, size: 1 } }).toArray()).map((b) => [b._id, b]),
      );
      for (const a of group) {
        const b = units.get(a.unit_id);
        if (!b || used.has(b.digest) || !this.assocIsOld(a.updated)) continue;
        if (this.dry) {
          this.simulateUnhold(repo, b._id);
          this.count(this.report.unreferencedRepoBlobs, b.size);
          continue;
        }
        try {
          if (!(await this.unholdUnlessWanted(repo, UNIT_TYPES.blob, b._id, a, () => this.blobUsedIn(repo, b.digest)))) continue;
          this.count(this.report.unreferencedRepoBlobs, b.size);
          this.log.info({ repository: repo, digest: b.digest }, 'gc removed unreferenced blob from repository');
        } catch (err) {
          this.report.errors++;
          this.log.error({ err, repository: repo, digest: b.digest }, 'gc could not remove blob from repository');
        }
      }
    }
  }

  /**
   * Removes an association unless the unit is still wanted, racing pushes safely: checked
   * before, deleted only if unchanged (a push re-associating it refreshes `updated`), checked
   * again after and put back if a push needed it meanwhile. False (counted as raced) when the
   * association stays.
   */
  private async unholdUnlessWanted(
    repo: string,
    type: UnitTypeId,
    unitId: string,
    assoc: Pick<RepoContentUnitDoc, '_id' | 'updated'>,
    wanted: () => Promise<boolean>,
  ): Promise<boolean> {
    if (await wanted()) {
      this.report.raced++;
      return false;
    }
    const res = await this.c.repoContentUnits.deleteOne({ _id: assoc._id, updated: assoc.updated });
    if (res.deletedCount !== 1) {
      this.report.raced++;
      return false;
    }
    await moveUnitCount(this.c, repo, type, -1);
    if (await wanted()) {
      await this.reassociate(repo, type, unitId);
      this.report.raced++;
      return false;
    }
    return true;
  }

  /** A manifest the repository holds references the blob. */
  private async blobUsedIn(repo: string, digest: string): Promise<boolean> {
    const users = await this.c.manifests.find({ $or: [{ blob_digests: digest }, { config_digest: digest }] }, { projection: { _id: 1 } }).toArray();
    if (users.length === 0) return false;
    const held = await this.c.repoContentUnits.findOne(
      { repo_id: repo, unit_type_id: UNIT_TYPES.manifest, unit_id: { $in: users.map((u) => u._id) } },
      { projection: { _id: 1 } },
    );
    return held !== null;
  }

  /** A tag of the repository points at the digest, or a list the repository holds contains it. */
  private async stillWanted(repo: string, digest: string): Promise<boolean> {
    if (await this.c.tags.findOne({ repo_id: repo, manifest_digest: digest }, { projection: { _id: 1 } })) return true;
    const parents = await this.c.manifestLists.find({ manifest_digests: digest }, { projection: { _id: 1 } }).toArray();
    if (parents.length === 0) return false;
    const held = await this.c.repoContentUnits.findOne(
      { repo_id: repo, unit_type_id: UNIT_TYPES.manifestList, unit_id: { $in: parents.map((p) => p._id) } },
      { projection: { _id: 1 } },
    );
    return held !== null;
  }

  private async reassociate(repo: string, type: UnitTypeId, unitId: string): Promise<void> {
    const now = new Date().toISOString();
    await this.c.repoContentUnits
      .updateOne(
        { repo_id: repo, unit_type_id: type, unit_id: unitId },
        { $setOnInsert: { _id: new ObjectId(), repo_id: repo, unit_type_id: type, unit_id: unitId, created: now }, $set: { updated: now } },
        { upsert: true },
      )
      .then(
        async (res) => {
          if (res.upsertedCount === 1) await moveUnitCount(this.c, repo, type, 1);
        },
        (err: unknown) => {
          if (!isDuplicateKey(err)) throw err;
        },
      );
  }

  // ---- 3. manifest and list units nobody holds -------------------------------------------------

  private async sweepManifestUnits(type: typeof UNIT_TYPES.manifest | typeof UNIT_TYPES.manifestList): Promise<void> {
    const units = (type === UNIT_TYPES.manifest ? this.c.manifests : this.c.manifestLists) as unknown as Collection<UnitSummary>;
    const counter = type === UNIT_TYPES.manifest ? this.report.manifestUnits : this.report.manifestListUnits;
    const held = await this.holderCounts(type);
    const protectedDigests = await this.protectedManifestDigests();
    const candidates: UnitSummary[] = [];
    for await (const u of units.find({}, { projection: { _id: 1, digest: 1, size: 1, _last_updated: 1 } })) {
      if (this.wouldDelete.has(u._id) || (held.get(u._id) ?? 0) > 0 || !this.unitIsOld(u._last_updated) || protectedDigests.has(u.digest)) continue;
      candidates.push(u);
    }
    for (const u of candidates) {
      this.checkAborted();
      if (this.dry) {
        this.wouldDelete.add(u._id);
        this.count(counter, u.size);
        continue;
      }
      try {
        if (await this.deleteUnit(units, type, u, () => this.isHeld(type, u._id))) {
          this.count(counter, u.size);
          this.log.info({ digest: u.digest, unitType: type }, 'gc deleted unheld manifest unit');
        }
      } catch (err) {
        this.report.errors++;
        this.log.error({ err, digest: u.digest, unitType: type }, 'gc could not delete manifest unit');
      }
    }
  }

  /**
   * Digests a remaining list contains, or a remaining manifest or list names as its subject. A
   * remaining unit is one this run does not delete: held, young, or itself protected.
   */
  private async protectedManifestDigests(): Promise<Set<string>> {
    const out = new Set<string>();
    for await (const l of this.c.manifestLists.find({}, { projection: { _id: 1, manifest_digests: 1, subject_digest: 1 } })) {
      if (this.wouldDelete.has(l._id)) continue;
      for (const d of l.manifest_digests ?? []) out.add(d);
      if (l.subject_digest) out.add(l.subject_digest);
    }
    for await (const m of this.c.manifests.find({ subject_digest: { $ne: null } }, { projection: { _id: 1, subject_digest: 1 } })) {
      if (!this.wouldDelete.has(m._id) && m.subject_digest) out.add(m.subject_digest);
    }
    return out;
  }

  /** How many repositories hold each unit of a type (minus what a dry run would have removed). */
  private async holderCounts(type: UnitTypeId): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for await (const a of this.c.repoContentUnits.find({ unit_type_id: type }, { projection: { unit_id: 1 } })) {
      counts.set(a.unit_id, (counts.get(a.unit_id) ?? 0) + 1);
    }
    for (const [id, n] of this.wouldUnhold) if (counts.has(id)) counts.set(id, counts.get(id)! - n);
    return counts;
  }

  private async isHeld(type: UnitTypeId, unitId: string): Promise<boolean> {
    return (await this.c.repoContentUnits.findOne({ unit_type_id: type, unit_id: unitId }, { projection: { _id: 1 } })) !== null;
  }

  /**
   * Deletes a unit document unless `wanted` says something references it, checking before and
   * after: a reference that appeared meanwhile (a push reusing the unit) gets the document back.
   */
  private async deleteUnit<D extends UnitSummary>(units: Collection<D>, type: UnitTypeId, u: UnitSummary, wanted: () => Promise<boolean>): Promise<boolean> {
    if (await wanted()) {
      this.report.raced++;
      return false;
    }
    const full = await units.findOne({ _id: u._id } as Filter<D>);
    if (!full || !this.unitIsOld(full._last_updated)) return false;
    const res = await units.deleteOne({ _id: u._id, _last_updated: full._last_updated } as Filter<D>);
    if (res.deletedCount !== 1) return false;
    if (await wanted()) {
      await units.insertOne(full as Parameters<Collection<D>['insertOne']>[0]).catch(async (err: unknown) => {
        // A push inserted a new unit for the digest meanwhile: what holds the old id holds that one.
        if (!isDuplicateKey(err)) throw err;
        await this.moveHoldings(units, type, u);
      });
      this.report.raced++;
      return false;
    }
    return true;
  }

  /** Points the associations of a deleted unit at the unit that now has its digest. */
  private async moveHoldings<D extends UnitSummary>(units: Collection<D>, type: UnitTypeId, old: UnitSummary): Promise<void> {
    const current = await units.findOne({ digest: old.digest } as Filter<D>, { projection: { _id: 1 } });
    if (!current) throw new Error(`the unit of ${old.digest} vanished while gc restored it`);
    for (const a of await this.c.repoContentUnits.find({ unit_type_id: type, unit_id: old._id }, { projection: { _id: 1, repo_id: 1 } }).toArray()) {
      await this.c.repoContentUnits.updateOne({ _id: a._id }, { $set: { unit_id: current._id } }).catch(async (err: unknown) => {
        // the repository holds the new unit already
        if (!isDuplicateKey(err)) throw err;
        const res = await this.c.repoContentUnits.deleteOne({ _id: a._id });
        await moveUnitCount(this.c, a.repo_id, type, -res.deletedCount);
      });
    }
    this.log.info({ digest: old.digest, unitType: type, from: old._id, to: current._id }, 'gc moved the holdings of a unit a push reused to its new unit');
  }

  /**
   * Push records (collections.ts, PushRecordDoc) of manifests no longer stored, or never stored
   * (a push refused at its tag). Only old ones: a push records before its manifest is stored.
   */
  private async sweepPushRecords(): Promise<void> {
    const old = this.c.volumePushRecords.find({ recorded: { $lt: this.cutoff } }, { projection: { _id: 1 } });
    for await (const batch of batches(old)) {
      this.checkAborted();
      const digests = batch.map((r) => r._id);
      const stored = new Set<string>();
      for await (const m of this.c.manifests.find({ digest: { $in: digests } }, { projection: { _id: 1, digest: 1 } })) {
        if (!this.wouldDelete.has(m._id)) stored.add(m.digest);
      }
      const gone = digests.filter((d) => !stored.has(d));
      if (gone.length === 0) continue;
      if (this.dry) {
        this.report.pushRecords += gone.length;
        continue;
      }
      try {
        const res = await this.c.volumePushRecords.deleteMany({ _id: { $in: gone }, recorded: { $lt: this.cutoff } });
        this.report.pushRecords += res.deletedCount;
      } catch (err) {
        this.report.errors++;
        this.log.error({ err, records: gone.length }, 'gc could not delete push records');
      }
    }
  }

  /**
   * A refused push's note is read only by a delete racing that push (manifest-service.ts): an
   * hour old at least, whatever the grace period, no such delete still runs.
   */
  private async sweepRefusedTagWrites(): Promise<void> {
    this.checkAborted();
    const before = new Date(Math.min(this.cutoff.getTime(), this.startedAt.getTime() - REFUSED_TAG_WRITES_KEPT_MS));
    const old = { recorded: { $lt: before } };
    try {
      this.report.refusedTagWrites = this.dry ? await this.c.refusedTagWrites.countDocuments(old) : (await this.c.refusedTagWrites.deleteMany(old)).deletedCount;
    } catch (err) {
      this.report.errors++;
      this.log.error({ err }, 'gc could not delete notes of refused tag writes');
    }
  }

  // ---- 4. blob units, then their bytes --------------------------------------------------------

  /** Digests of the blobs the manifests that stay use (as config or layer). */
  private async referencedDigests(): Promise<Set<string>> {
    const referenced = new Set<string>();
    for await (const m of this.c.manifests.find({}, { projection: { _id: 1, config_digest: 1, blob_digests: 1 } })) {
      if (this.wouldDelete.has(m._id)) continue;
      if (m.config_digest) referenced.add(m.config_digest);
      for (const d of m.blob_digests ?? []) referenced.add(d);
    }
    return referenced;
  }

  private async sweepBlobUnits(referenced: ReadonlySet<string>): Promise<void> {
    const held = await this.holderCounts(UNIT_TYPES.blob);
    const candidates: UnitSummary[] = [];
    for await (const b of this.c.blobs.find({}, { projection: { _id: 1, digest: 1, size: 1, _last_updated: 1 } })) {
      if ((held.get(b._id) ?? 0) > 0 || referenced.has(b.digest) || !this.unitIsOld(b._last_updated)) continue;
      candidates.push(b);
    }
    for (let i = 0; i < candidates.length; i += BATCH) {
      this.checkAborted();
      for (const b of await this.stillUnreferenced(candidates.slice(i, i + BATCH))) {
        try {
          await this.sweepBlob(b);
        } catch (err) {
          this.report.errors++;
          this.log.error({ err, digest: b.digest }, 'gc could not delete blob');
        }
      }
    }
  }

  /** Re-checks a batch against the database right before deleting (nothing to re-check in a dry run). */
  private async stillUnreferenced(batch: UnitSummary[]): Promise<UnitSummary[]> {
    if (this.dry || batch.length === 0) return batch;
    const digests = batch.map((b) => b.digest);
    const [holders, users] = await Promise.all([
      this.c.repoContentUnits.find({ unit_type_id: UNIT_TYPES.blob, unit_id: { $in: batch.map((b) => b._id) } }, { projection: { unit_id: 1 } }).toArray(),
      this.c.manifests
        .find({ $or: [{ blob_digests: { $in: digests } }, { config_digest: { $in: digests } }] }, { projection: { config_digest: 1, blob_digests: 1 } })
        .toArray(),
    ]);
    const heldIds = new Set(holders.map((h) => h.unit_id));
    const used = new Set(users.flatMap((m) => [...(m.blob_digests ?? []), ...(m.config_digest ? [m.config_digest] : [])]));
    const out = batch.filter((b) => !heldIds.has(b._id) && !used.has(b.digest));
    this.report.raced += batch.length - out.length;
    return out;
  }

  private async sweepBlob(b: UnitSummary): Promise<void> {
    const digest = b.digest as Digest;
    const modified = await this.store.modified(digest);
    // Bytes committed again within the grace period: a push is reusing this unit.
    if (modified && modified >= this.cutoff) {
      this.report.raced++;
      return;
    }
    if (this.dry) {
      this.wouldDeleteBlobs.add(b.digest);
      this.count(this.report.blobUnits, b.size);
      if (modified) this.count(this.report.blobBytes, b.size);
      return;
    }
    const wanted = async (): Promise<boolean> =>
      (await this.isHeld(UNIT_TYPES.blob, b._id)) ||
      (await this.c.manifests.findOne({ $or: [{ blob_digests: b.digest }, { config_digest: b.digest }] }, { projection: { _id: 1 } })) !== null;
    if (!(await this.deleteUnit(this.c.blobs, UNIT_TYPES.blob, b, wanted))) return;
    this.count(this.report.blobUnits, b.size);
    if (await this.deleteBytes(digest)) this.count(this.report.blobBytes, b.size);
    this.log.info({ digest, size: b.size }, 'gc deleted blob');
  }

  /** Bytes go only while no unit names their digest, checked while the store holds them aside. */
  private async deleteBytes(digest: Digest): Promise<boolean> {
    return this.store.delete(digest, {
      unmodifiedSince: this.cutoff,
      confirm: async () => (await this.c.blobs.findOne({ digest }, { projection: { _id: 1 } })) === null,
    });
  }

  // ---- 5. bytes without a unit ----------------------------------------------------------------

  private async sweepOrphanBytes(): Promise<void> {
    let batch: Array<{ digest: Digest; size: number }> = [];
    const flush = async (): Promise<void> => {
      const digests = batch.map((b) => b.digest);
      const units = new Set((await this.c.blobs.find({ digest: { $in: digests } }, { projection: { digest: 1 } }).toArray()).map((u) => u.digest));
      const users = await this.manifestsUsing(digests.filter((d) => !units.has(d)));
      for (const b of batch) {
        if (units.has(b.digest) || this.wouldDeleteBlobs.has(b.digest)) continue;
        const usedBy = users.get(b.digest);
        if (usedBy) {
          try {
            await this.restoreBlobRecord(b, usedBy);
          } catch (err) {
            this.report.errors++;
            this.log.error({ err, digest: b.digest }, 'gc could not restore the record of a blob manifests use');
          }
          continue;
        }
        if (this.dry) {
          this.count(this.report.orphanBytes, b.size);
          continue;
        }
        try {
          if (await this.deleteBytes(b.digest)) {
            this.count(this.report.orphanBytes, b.size);
            this.log.info({ digest: b.digest, size: b.size }, 'gc deleted bytes without a blob unit');
          } else {
            this.report.raced++;
          }
        } catch (err) {
          this.report.errors++;
          this.log.error({ err, digest: b.digest }, 'gc could not delete bytes without a blob unit');
        }
      }
      batch = [];
    };
    for await (const b of this.store.list()) {
      this.checkAborted();
      if (b.modified >= this.cutoff) continue;
      batch.push({ digest: b.digest, size: b.size });
      if (batch.length >= BATCH) await flush();
    }
    if (batch.length > 0) await flush();
  }

  // ---- finding: blobs that manifests use, missing from the store -------------------------------

  private async reportMissingBytes(referenced: ReadonlySet<string>): Promise<void> {
    for (const batch of chunk([...referenced], BATCH)) {
      this.checkAborted();
      const absent = await this.withoutBytes(batch);
      if (absent.length === 0) continue;
      for (const [digest, manifestIds] of await this.manifestsUsing(absent)) {
        const repositories = ((await this.c.repoContentUnits.distinct('repo_id', { unit_type_id: UNIT_TYPES.manifest, unit_id: { $in: manifestIds } })) as string[]).sort();
        // a manifest no repository holds pulls from nowhere anyway; bytes stored again meanwhile mend it
        if (repositories.length === 0 || (await this.withoutBytes([digest])).length === 0) continue;
        this.report.missingBlobs.count++;
        if (this.report.missingBlobs.blobs.length < MISSING_LISTED) this.report.missingBlobs.blobs.push({ digest, repositories });
        this.log.error(
          { digest, repositories },
          'gc found a blob that manifests use missing from the blob store (lost, or set aside as damaged): they do not pull whole until the same content is uploaded again',
        );
      }
    }
  }

  /** Those of `digests` whose bytes the store does not have (one it can not stat is not judged). */
  private async withoutBytes(digests: readonly string[]): Promise<string[]> {
    const stats = await Promise.all(digests.map((d) => this.store.stat(d as Digest).catch(() => undefined)));
    return digests.filter((_, i) => stats[i] === null);
  }

  /** The ids of the manifests that reference each of `digests` (as config or layer), for those any does. */
  private async manifestsUsing(digests: string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (digests.length === 0) return out;
    const wanted = new Set(digests);
    const users = this.c.manifests.find(
      { $or: [{ blob_digests: { $in: digests } }, { config_digest: { $in: digests } }] },
      { projection: { _id: 1, config_digest: 1, blob_digests: 1 } },
    );
    for await (const m of users) {
      if (this.wouldDelete.has(m._id)) continue;
      for (const d of new Set([...(m.blob_digests ?? []), ...(m.config_digest ? [m.config_digest] : [])])) {
        if (wanted.has(d)) out.set(d, [...(out.get(d) ?? []), m._id]);
      }
    }
    return out;
  }

  /**
   * Bytes without a record that a manifest still uses were lost track of, not abandoned (a
   * collection stopped between its delete and its re-check, or a record was removed by hand):
   * their record is made again and every repository holding such a manifest holds them again,
   * so the manifest pulls whole rather than losing its layer for good.
   */
  private async restoreBlobRecord(b: { digest: Digest; size: number }, manifestIds: string[]): Promise<void> {
    const repos = (await this.c.repoContentUnits.distinct('repo_id', { unit_type_id: UNIT_TYPES.manifest, unit_id: { $in: manifestIds } })) as string[];
    this.count(this.report.restoredBlobs, b.size);
    if (this.dry) return;
    const unit = await new BlobRepository(this.c).upsert(b.digest, b.size);
    for (const repo of repos) await this.reassociate(repo, UNIT_TYPES.blob, unit.id);
    this.log.warn({ digest: b.digest, size: b.size, repositories: repos }, 'gc restored the record of a blob that manifests use, which had none');
  }

  /** dry run: remembers an association the real run would remove */
  private simulateUnhold(repo: string, unitId: string): void {
    this.wouldUnhold.set(unitId, (this.wouldUnhold.get(unitId) ?? 0) + 1);
    this.wouldUnholdIn.add(`${repo}\0${unitId}`);
  }

  private count(c: GcCount, bytes: number): void {
    c.count++;
    c.bytes += bytes;
  }
}

class Aborted extends Error {}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

async function* batches<T>(items: AsyncIterable<T>, size = BATCH): AsyncIterable<T[]> {
  let batch: T[] = [];
  for await (const item of items) {
    batch.push(item);
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}
