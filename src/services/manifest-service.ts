import type { Logger } from 'pino';
import { digestAlgorithm, type Digest } from '../domain/digest.ts';
import { isVolregError, VolregError } from '../domain/errors.ts';
import { AcceptSet } from '../domain/media-types.ts';
import { hasPreconditions, preconditionFailed, preconditionsHold, refusal, type Preconditions } from '../domain/preconditions.ts';
import { parseManifest } from '../domain/manifests/manifest-handlers.ts';
import type { ManifestKind, ParsedManifest } from '../domain/manifests/parsed-manifest.ts';
import type { StoredManifest, TagRecord, TagWrite } from '../domain/manifests/stored-manifest.ts';
import { parseLookupReference, parseReference, parseTag, type RepositoryName, type Tag } from '../domain/names.ts';
import { readSnapshotManifest } from '../domain/volumes/snapshot-manifest.ts';
import type { TagService } from './tag-service.ts';

/**
 * Manifests: push (validate, check every referenced blob and manifest, store the exact bytes,
 * tag), pull (by digest, or by tag through the tag service's Accept rules) and delete.
 *
 * Writes go in an order that is safe without transactions: referenced content verified ->
 * manifest unit -> its association with the repository -> tag unit (-> v1 tag). Deletes go the
 * other way: tags first, then the manifest's association. Whatever a crash leaves behind is
 * unreferenced, and garbage collection removes it.
 */

export interface ManifestUnitRef {
  id: string;
  kind: ManifestKind;
}

/** Manifest storage (implemented by metadata/manifest-repository.ts). */
export interface ManifestStore {
  insertIfAbsent(parsed: ParsedManifest, body: Buffer): Promise<ManifestUnitRef>;
  /** true when the repository did not hold the unit before; with `tally`, its tally moves when that is flushed */
  addToRepo(repo: string, unit: ManifestUnitRef, tally?: UnitTally): Promise<boolean>;
  removeFromRepo(repo: string, unit: ManifestUnitRef): Promise<void>;
  findInRepo(repo: string, digest: Digest, opts?: { content?: boolean }): Promise<StoredManifest | null>;
  /** is `unit` still held with everything `parsed` references (one cheap look; false: look closely) */
  holdsAll(repo: string, unit: ManifestUnitRef, parsed: ParsedManifest): Promise<boolean>;
  /** is the unit's document still there (not answered from a cache) */
  exists(unit: ManifestUnitRef): Promise<boolean>;
  /** those of `digests` that are not manifests held by the repository */
  missingInRepo(repo: string, digests: readonly Digest[]): Promise<Digest[]>;
  /** digests of the indexes (lists) held by the repository that list `digest` */
  listsInRepoReferencing(repo: string, digest: Digest): Promise<Digest[]>;
}

/** Which blobs a repository holds (the blob units and their associations). */
export interface BlobPresence {
  missingBlobsInRepo(repo: string, digests: readonly Digest[]): Promise<Digest[]>;
}

/** Whether a blob's bytes are in the blob store (storage/blob-store.ts). */
export interface BlobBytes {
  stat(digest: Digest): Promise<{ size: number } | null>;
}

/** Tag unit writes (implemented by metadata/tag-repository.ts). */
export interface TagWriter {
  /**
   * with `condition`, writes only if the preconditions hold for the unit it would replace (else
   * PRECONDITION_FAILED); with `tally`, the tally of an association it makes moves when that is flushed
   */
  upsert(repo: string, name: string, schemaVersion: 1 | 2, manifestDigest: Digest, manifestType: ManifestKind, condition?: Preconditions, tally?: UnitTally): Promise<TagWrite>;
  /** takes a push's write back, v1 image id included, unless a later write replaced it */
  undo(write: TagWrite): Promise<void>;
  /** notes refused writes that moved a unit, with what it pointed at before (refusedAmong reads them) */
  noteRefused(writes: readonly TagWrite[]): Promise<void>;
  /** of units a delete took, those holding a refused write, with what they pointed at before */
  refusedAmong(taken: readonly TagRecord[]): Promise<TagWrite[]>;
  /** puts taken units back with their ids where the name has no unit of that version now; answers those put back */
  restore(units: readonly TagRecord[]): Promise<TagRecord[]>;
  findByManifest(repo: string, manifestDigest: Digest): Promise<TagRecord[]>;
  /** the units of a tag name (at most one per schema version) */
  findByName(repo: string, name: string): Promise<readonly TagRecord[]>;
  deleteByName(repo: string, name: string, opts?: { only?: (unit: TagRecord) => boolean }): Promise<TagRecord[]>;
  deleteByManifest(repo: string, manifestDigest: Digest): Promise<TagRecord[]>;
  /** records a schema-1 tag's v1 image id; answers the one it replaced (null: none) */
  setV1ImageId(repo: string, tag: string, imageId: string): Promise<string | null>;
}

/**
 * The moves of a repository's unit tallies (Pulp's `content_unit_counts`) that one push's
 * associations make, written together by `flush` instead of one write each.
 */
export interface UnitTally {
  flush(): Promise<void>;
}

export interface RepositoryStore {
  ensureRepo(repo: string): Promise<void>;
  tally(repo: string): UnitTally;
  /** notes that the repository holds volume snapshots */
  markVolume(repo: string): Promise<void>;
  volumeRepos(): Promise<string[]>;
}

export interface ManifestServiceDeps {
  manifests: ManifestStore;
  blobs: BlobPresence;
  /** a blob set aside as damaged keeps its records: only the store knows its bytes are gone */
  blobBytes: BlobBytes;
  tagWriter: TagWriter;
  tags: TagService;
  repos: RepositoryStore;
  limits: { manifestBytes: number };
  logger?: Logger;
}

export interface PutResult {
  digest: Digest;
  mediaType: string;
  /** the `subject` of the manifest, for the OCI-Subject header */
  subject?: Digest;
  /** tags set (the reference's, or those of `?tag=` on a push by digest) */
  tags: Tag[];
}

export interface ManifestContent {
  digest: Digest;
  mediaType: string;
  size: number;
  body: Buffer;
}

export type ManifestInfo = Omit<ManifestContent, 'body'>;

/** At most this many `?tag=` values on one push by digest (the spec asks for at least 10). */
export const MAX_TAGS_PER_PUSH = 32;

export class ManifestService {
  constructor(private readonly deps: ManifestServiceDeps) {}

  /**
   * Stores a manifest pushed to `reference` (a tag or a digest). The digest in the URL, if any,
   * must be that of the body. `opts.tags` adds tags to a push by digest (`?tag=`).
   *
   * `opts.preconditions` (If-Match, If-None-Match) are about the reference: by tag, the unit of
   * the pushed manifest's schema version, checked and written in one step; by digest, whether
   * the repository holds that manifest. Tags of `?tag=` are not conditioned.
   */
  async put(
    repo: RepositoryName,
    reference: string,
    body: Buffer,
    contentType: string,
    opts: { tags?: readonly string[]; preconditions?: Preconditions } = {},
  ): Promise<PutResult> {
    const { manifestBytes } = this.deps.limits;
    if (body.length > manifestBytes) throw new VolregError('MANIFEST_TOO_LARGE', `manifest exceeds ${manifestBytes} bytes`, { limit: manifestBytes });
    const ref = parseReference(reference);
    const extraTags = (opts.tags ?? []).map((t) => parseTag(t));
    if (extraTags.length > MAX_TAGS_PER_PUSH) throw new VolregError('URI_TOO_LONG', `at most ${MAX_TAGS_PER_PUSH} tags per push`, { max: MAX_TAGS_PER_PUSH });
    const parsed = parseManifest(body, contentType, ref.kind === 'digest' ? digestAlgorithm(ref.digest) : 'sha256');
    if (ref.kind === 'digest' && parsed.digest !== ref.digest) {
      throw new VolregError('DIGEST_INVALID', 'manifest digest does not match the digest in the URL', { expected: ref.digest, computed: parsed.digest });
    }

    const conditions = hasPreconditions(opts.preconditions) ? opts.preconditions : undefined;
    // Checked before anything is written, so a refused push usually writes nothing; by tag the
    // tag's write checks again, in the same step (see below).
    if (conditions) {
      if (ref.kind === 'tag') {
        const { current, beside } = await this.tagUnits(repo, ref.tag, parsed.schemaVersion);
        if (!preconditionsHold(conditions, current, parsed.digest, beside)) throw refusal(conditions, current, `tag ${ref.tag}`);
      } else {
        const current = await this.referenceDigest(repo, ref, parsed.schemaVersion);
        if (!preconditionsHold(conditions, current, parsed.digest)) throw refusal(conditions, current, `manifest ${ref.digest}`);
      }
    }
    // a user who may not overwrite moves none of the `?tag=` tags either
    const createOnly = conditions?.createOnly ? { createOnly: conditions.createOnly } : undefined;
    for (const tag of createOnly ? extraTags : []) {
      const { current, beside } = await this.tagUnits(repo, tag, parsed.schemaVersion);
      if (!preconditionsHold(createOnly!, current, parsed.digest, beside)) throw refusal(createOnly!, current, `tag ${tag}`);
    }
    await this.requireReferences(repo, parsed);

    // Content found in the repository proves the repository exists (blobs and manifests are
    // only associated with an existing one); a manifest referencing nothing may be the first.
    if (parsed.blobDigests.length === 0 && parsed.manifests.length === 0) await this.deps.repos.ensureRepo(repo);
    // Noted before the tag, so a volume whose snapshots came through /v2 is listed even after a crash here.
    if (parsed.kind === 'image' && readSnapshotManifest(body)) await this.deps.repos.markVolume(repo);
    // The tallies of the associations this push makes move in one write, once it is done.
    const tally = this.deps.repos.tally(repo);
    let tags: Tag[];
    try {
      tags = await this.storeAndTag(repo, ref, parsed, body, extraTags, conditions, createOnly, tally);
    } catch (err) {
      await tally.flush().catch(() => undefined); // the push's own error is the one to answer
      throw err;
    }
    await tally.flush();
    this.deps.logger?.info({ repository: repo, digest: parsed.digest, mediaType: parsed.mediaType, tags }, 'manifest stored');
    return { digest: parsed.digest, mediaType: parsed.mediaType, ...(parsed.subject ? { subject: parsed.subject } : {}), tags };
  }

  /** put's writes, in their order, and its re-check after them; the tags it set. */
  private async storeAndTag(
    repo: RepositoryName,
    ref: ReturnType<typeof parseReference>,
    parsed: ParsedManifest,
    body: Buffer,
    extraTags: readonly Tag[],
    conditions: Preconditions | undefined,
    createOnly: Preconditions | undefined,
    tally: UnitTally,
  ): Promise<Tag[]> {
    const unit = await this.deps.manifests.insertIfAbsent(parsed, body);
    // the association this push made (first, or again after a delete or a collection took it):
    // a refused push lets go of it
    let held: ManifestUnitRef | null = (await this.deps.manifests.addToRepo(repo, unit, tally)) ? unit : null;
    const tags = [...new Set([...(ref.kind === 'tag' ? [ref.tag] : []), ...extraTags])];
    const written: TagWrite[] = [];
    try {
      for (const tag of tags) {
        const condition = ref.kind === 'tag' && tag === ref.tag ? conditions : createOnly;
        const write = await this.deps.tagWriter.upsert(repo, tag, parsed.schemaVersion, parsed.digest, parsed.kind, condition, tally);
        written.push(write);
        if (condition?.createOnly && write.previous === null) await this.requireAlone(repo, tag, parsed.schemaVersion, condition);
        if (parsed.v1TopImageId !== null) write.previousV1ImageId = await this.deps.tagWriter.setV1ImageId(repo, tag, parsed.v1TopImageId);
      }
    } catch (err) {
      // Refused (a precondition a racing push made false since the check above, a repository
      // with no room for another v1 tag): undone as below.
      if (isVolregError(err) && err.status < 500) await this.refused(repo, parsed, held, written);
      throw err;
    }
    // Garbage collection running meanwhile (with a grace period shorter than this push) may
    // have taken a referenced blob away after the check above, or this manifest itself while it
    // was not yet tagged. It re-checks for referencing manifests and tags after each removal;
    // checking here, after every write of this push, is the other half: one of the two sees
    // the other. A manifest taken meanwhile is held again (its tags now protect it).
    try {
      if (!(await this.deps.manifests.holdsAll(repo, unit, parsed))) {
        // a delete by digest that took the manifest took this push's tags with it (its last
        // pass over the tags): held again, the manifest gets them back
        const again = await this.holdAgainIfTaken(repo, parsed, body, unit);
        if (again) {
          held = again;
          await this.restoreTags(repo, parsed, written);
        }
        await this.requireReferences(repo, parsed);
      }
    } catch (err) {
      await this.refused(repo, parsed, held, written);
      throw err;
    }
    return tags;
  }

  /** What a tag's unit of `schemaVersion` holds, and its unit of the other version (null: none). */
  private async tagUnits(repo: RepositoryName, tag: string, schemaVersion: 1 | 2): Promise<{ current: Digest | null; beside: Digest | null }> {
    const units = await this.deps.tagWriter.findByName(repo, tag);
    const digestOf = (v: 1 | 2): Digest | null => units.find((u) => u.schemaVersion === v)?.manifestDigest ?? null;
    return { current: digestOf(schemaVersion), beside: digestOf(schemaVersion === 1 ? 2 : 1) };
  }

  /**
   * A create-only push that made a tag's unit of one schema version: refused if the other version's
   * unit is there now. The upsert checks only its own unit; two create-only pushes of different
   * versions racing to one new tag each look after writing, so at most one is kept.
   */
  private async requireAlone(repo: RepositoryName, tag: string, schemaVersion: 1 | 2, condition: Preconditions): Promise<void> {
    const { beside } = await this.tagUnits(repo, tag, schemaVersion);
    if (beside !== null) throw refusal(condition, null, `tag ${tag}`);
  }

  /** Where a push's reference points now: by tag, its unit of `schemaVersion`; by digest, the manifest if held. */
  private async referenceDigest(repo: RepositoryName, ref: ReturnType<typeof parseReference>, schemaVersion: 1 | 2): Promise<Digest | null> {
    if (ref.kind === 'digest') return (await this.deps.manifests.findInRepo(repo, ref.digest))?.digest ?? null;
    const units = await this.deps.tagWriter.findByName(repo, ref.tag);
    return units.find((u) => u.schemaVersion === schemaVersion)?.manifestDigest ?? null;
  }

  /**
   * Takes back what a push that is not acknowledged wrote: its tag writes (tags other pushes
   * gave the same manifest stay), then the association it made, then its tag writes again: a
   * delete by digest may have put them back for it meanwhile (they keep their ids, so the undo
   * finds them). One putting them back after that finds the manifest gone and takes them back
   * itself (delete). A push of the same manifest acknowledged meanwhile tagged it: it is held
   * again for that tag (looked for after letting go: one of the two sees the other, see put).
   * The refusal is noted first, for a delete by digest that takes a moved tag before the undo
   * can tell who took it (see delete).
   */
  private async refused(repo: RepositoryName, parsed: ParsedManifest, held: ManifestUnitRef | null, written: readonly TagWrite[]): Promise<void> {
    await this.deps.tagWriter.noteRefused(written);
    await this.undoTags(repo, parsed, written);
    if (!held) return;
    await this.deps.manifests.removeFromRepo(repo, held);
    await this.undoTags(repo, parsed, written);
    // by write, not by unit: a push of the same manifest to the same tag since writes the same unit
    const ours = new Set(written.map((w) => w.writeId));
    const others = (await this.deps.tagWriter.findByManifest(repo, parsed.digest)).filter((t) => t.writeId === undefined || !ours.has(t.writeId));
    if (others.length > 0 && (await this.deps.manifests.exists(held))) await this.deps.manifests.addToRepo(repo, held);
  }

  /**
   * Each tag back to what it pointed at before this push (or removed when the push made it);
   * a tag whose earlier manifest the repository no longer holds (collected while the tag was
   * moved) is removed rather than left pointing at nothing. A tag a delete by digest of the
   * pushed manifest took (the push's write, found gone with the manifest) gets back what it
   * had: no order of a refused push and that delete takes it.
   */
  private async undoTags(repo: RepositoryName, parsed: ParsedManifest, written: readonly TagWrite[]): Promise<void> {
    let pushedHeld: boolean | undefined;
    for (const w of written) {
      await this.deps.tagWriter.undo(w);
      const before = w.previous;
      if (!before) continue;
      if (!(await this.deps.manifests.findInRepo(repo, before.manifestDigest))) {
        await this.deps.tagWriter.undo({ ...w, ...before, previous: null });
        continue;
      }
      pushedHeld ??= (await this.deps.manifests.findInRepo(repo, parsed.digest)) !== null;
      if (pushedHeld) continue;
      const [restored] = await this.deps.tagWriter.restore([{ ...w, ...before }]);
      if (restored && w.previousV1ImageId) await this.deps.tagWriter.setV1ImageId(repo, w.name, w.previousV1ImageId);
    }
  }

  /**
   * Holds the manifest again if a collection took it during the push: its association (the
   * collection removed it, untagged), or the unit itself (the push reused a unit the collection
   * was deleting, and associated it after the collection's last look: that association points
   * at nothing and is replaced).
   */
  private async holdAgainIfTaken(repo: RepositoryName, parsed: ParsedManifest, body: Buffer, pushed: ManifestUnitRef): Promise<ManifestUnitRef | null> {
    if (await this.deps.manifests.exists(pushed)) {
      if (await this.deps.manifests.findInRepo(repo, parsed.digest)) return null;
    } else {
      await this.deps.manifests.removeFromRepo(repo, pushed);
    }
    const unit = await this.deps.manifests.insertIfAbsent(parsed, body);
    await this.deps.manifests.addToRepo(repo, unit);
    return unit;
  }

  /**
   * The push's tags a delete by digest took from the manifest it holds again, put back as they
   * were written (see TagWriter.restore), with a schema 1 tag's v1 image id.
   */
  private async restoreTags(repo: RepositoryName, parsed: ParsedManifest, written: readonly TagWrite[]): Promise<void> {
    const restored = await this.deps.tagWriter.restore(written);
    if (parsed.v1TopImageId === null) return;
    for (const t of restored) await this.deps.tagWriter.setV1ImageId(repo, t.name, parsed.v1TopImageId);
  }

  /** MANIFEST_BLOB_UNKNOWN, listing them all, unless the repository holds every blob and manifest `parsed` references. */
  private async requireReferences(repo: RepositoryName, parsed: ParsedManifest): Promise<void> {
    const [unheld, withoutBytes, missingManifests] = await Promise.all([
      this.deps.blobs.missingBlobsInRepo(repo, parsed.blobDigests),
      this.blobsWithoutBytes(parsed.blobDigests),
      this.deps.manifests.missingInRepo(
        repo,
        parsed.manifests.map((m) => m.digest),
      ),
    ]);
    const missingBlobs = [...new Set([...unheld, ...withoutBytes])];
    if (missingBlobs.length > 0 || missingManifests.length > 0) {
      throw new VolregError('MANIFEST_BLOB_UNKNOWN', 'manifest references blobs or manifests unknown to the repository', {
        missing: [...missingBlobs, ...missingManifests],
        ...(missingBlobs.length > 0 ? { blobs: missingBlobs } : {}),
        ...(missingManifests.length > 0 ? { manifests: missingManifests } : {}),
      });
    }
  }

  private async blobsWithoutBytes(digests: readonly Digest[]): Promise<Digest[]> {
    const stats = await Promise.all(digests.map((d) => this.deps.blobBytes.stat(d)));
    return digests.filter((_, i) => stats[i] === null);
  }

  /** Repositories a volume snapshot was ever pushed to (through either API), by name. */
  async volumeRepositories(): Promise<string[]> {
    return this.deps.repos.volumeRepos();
  }

  /** A manifest with its bytes, by digest or by tag (then chosen by `accept`). */
  async get(repo: RepositoryName, reference: string, accept: readonly string[]): Promise<ManifestContent> {
    const m = await this.find(repo, reference, accept, true);
    return { digest: m.digest, mediaType: m.mediaType, size: m.size, body: m.content! };
  }

  /** What GET would return, without the bytes. */
  async head(repo: RepositoryName, reference: string, accept: readonly string[]): Promise<ManifestInfo> {
    const m = await this.find(repo, reference, accept, false);
    return { digest: m.digest, mediaType: m.mediaType, size: m.size };
  }

  private async find(repo: RepositoryName, reference: string, accept: readonly string[], content: boolean): Promise<StoredManifest> {
    const ref = parseLookupReference(reference);
    if (ref.kind === 'tag') return this.deps.tags.resolve(repo, ref.tag, AcceptSet.from(accept), { content });
    // By digest the content is fixed: it is served whatever the Accept header says.
    const m = await this.deps.manifests.findInRepo(repo, ref.digest, { content });
    if (!m) throw new VolregError('MANIFEST_UNKNOWN', 'manifest unknown', { digest: ref.digest });
    return m;
  }

  /** What each tag's schema 2 unit points at, by repository (tag-service.ts). */
  tagDigests(repos: readonly RepositoryName[]): Promise<Map<string, Map<string, Digest>>> {
    return this.deps.tags.schema2Digests(repos);
  }

  /**
   * By tag: removes that name's tag units (both schema versions). By digest: removes every tag
   * of the repository pointing at the manifest, then the manifest from the repository, then
   * any tag a push of the same manifest wrote in between (that push saw the manifest still
   * held; one tagging it later finds it gone and holds it again, see put).
   *
   * `onlyAt` (by tag) removes the tag only where it points at that manifest: the caller read
   * the tag and reports what it held, so a push moving it meanwhile must keep its tag.
   */
  async delete(repo: RepositoryName, reference: string, opts: { onlyAt?: Digest; preconditions?: Preconditions } = {}): Promise<void> {
    const ref = parseLookupReference(reference);
    const conditions = hasPreconditions(opts.preconditions) ? opts.preconditions : undefined;
    if (ref.kind === 'tag') {
      // each unit of the name on its own: If-Match names the manifest a client saw the tag at
      const only = (t: TagRecord): boolean => (opts.onlyAt === undefined || t.manifestDigest === opts.onlyAt) && (!conditions || preconditionsHold(conditions, t.manifestDigest));
      const found = await this.deps.tagWriter.deleteByName(repo, ref.tag, { only });
      if (found.length === 0) throw new VolregError('MANIFEST_UNKNOWN', 'manifest unknown', { tag: ref.tag });
      if (conditions && !found.some(only)) throw preconditionFailed(`tag ${ref.tag}`);
      this.deps.logger?.info({ repository: repo, tag: ref.tag, units: found.filter(only).length, ...(opts.onlyAt ? { onlyAt: opts.onlyAt } : {}) }, 'tag deleted');
      return;
    }
    const m = await this.deps.manifests.findInRepo(repo, ref.digest);
    if (!m) throw new VolregError('MANIFEST_UNKNOWN', 'manifest unknown', { digest: ref.digest });
    if (conditions && !preconditionsHold(conditions, m.digest)) throw preconditionFailed(`manifest ${m.digest}`);
    // Deleting an index's entry would leave the index (and every tag on it) unpullable: the
    // index goes first. A list pushed meanwhile finds the entry gone on its own re-check (put).
    const lists = await this.deps.manifests.listsInRepoReferencing(repo, m.digest);
    if (lists.length > 0) {
      throw new VolregError('MANIFEST_REFERENCED', `manifest is listed by ${lists.length === 1 ? 'an index' : `${lists.length} indexes`} of this repository: delete ${lists.length === 1 ? 'it' : 'them'} first`, {
        digest: m.digest,
        referencedBy: lists.slice(0, 10),
      });
    }
    const removed = await this.deps.tagWriter.deleteByManifest(repo, m.digest);
    await this.deps.manifests.removeFromRepo(repo, { id: m.id, kind: m.kind });
    const late = await this.deps.tagWriter.deleteByManifest(repo, m.digest);
    // A push of the same manifest that found it taken holds it again (put): the tags this last
    // pass took were that push's, and they come back with it. The push puts them back too,
    // when it holds the manifest again after this pass; one of the two sees the other.
    // If that push is refused after all, it lets go of the manifest and then undoes its tags
    // again: a put-back it did not see finds the manifest gone here and is taken back.
    let putBack: TagRecord[] = [];
    if (late.length > 0 && (await this.deps.manifests.findInRepo(repo, m.digest))) {
      putBack = await this.deps.tagWriter.restore(late);
      if (putBack.length > 0 && !(await this.deps.manifests.findInRepo(repo, m.digest))) {
        for (const t of putBack) await this.deps.tagWriter.undo({ ...t, previous: null });
        putBack = [];
      }
      await this.putBackV1ImageIds(repo, m.digest, putBack);
    }
    const taken = [...removed, ...late.filter((t) => !putBack.includes(t))];
    const back = await this.putBackRefused(repo, taken);
    const gone = taken.filter((t) => !back.has(t.id));
    this.deps.logger?.info({ repository: repo, digest: m.digest, tags: gone.map((t) => t.name) }, 'manifest deleted');
  }

  /**
   * Schema 1 tags put back on `digest` get their v1 image id back too (taking a unit took it):
   * the one that manifest records, as the push that tagged it recorded it.
   */
  private async putBackV1ImageIds(repo: RepositoryName, digest: Digest, putBack: readonly TagRecord[]): Promise<void> {
    const v1 = putBack.filter((t) => t.schemaVersion === 1);
    if (v1.length === 0) return;
    const m = await this.deps.manifests.findInRepo(repo, digest, { content: true });
    const imageId = m?.content ? parseManifest(m.content, m.mediaType, digestAlgorithm(digest)).v1TopImageId : null;
    if (imageId === null) return;
    for (const t of v1) await this.deps.tagWriter.setV1ImageId(repo, t.name, imageId);
  }

  /**
   * Tags this delete took from a push that was refused: back to what they pointed at before
   * (where that manifest is still held), as no order of the refused push and this delete takes
   * them. The push puts them back itself when it finds the manifest gone; when it looked before
   * the manifest went, it could not tell this delete from one by tag, which must keep the tag
   * gone. It notes its refusal before it looks, and this runs after the manifest went: one of
   * the two sees the other. Answers the ids of the units put back.
   */
  private async putBackRefused(repo: RepositoryName, taken: readonly TagRecord[]): Promise<Set<string>> {
    const back = new Set<string>();
    for (const w of await this.deps.tagWriter.refusedAmong(taken)) {
      if (!w.previous || !(await this.deps.manifests.findInRepo(repo, w.previous.manifestDigest))) continue;
      const [restored] = await this.deps.tagWriter.restore([{ ...w, ...w.previous }]);
      if (!restored) continue;
      back.add(w.id);
      await this.putBackV1ImageIds(repo, w.previous.manifestDigest, [restored]);
    }
    return back;
  }
}
