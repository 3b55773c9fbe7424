import { randomUUID } from 'node:crypto';
import { Binary, type Collection, type Filter, type UpdateFilter } from 'mongodb';
import type { Digest } from '../domain/digest.ts';
import type { ManifestEntry, ParsedManifest } from '../domain/manifests/parsed-manifest.ts';
import type { StoredManifest } from '../domain/manifests/stored-manifest.ts';
import { COLLECTIONS, pulpFields, UNIT_TYPES, upsertUnit, type Collections, type ManifestListUnitDoc, type ManifestUnitDoc, type UnitTypeId } from './collections.ts';
import { heldUnits, type HeldUnits } from './held-units.ts';
import { MarkedCache } from './marked-cache.ts';
import { isDuplicateKey, type RepoContentRepository } from './repo-content-repository.ts';
import { validate } from './schema-validator.ts';
import { unitCaches, type UnitCaches } from './unit-cache.ts';

/** A document this code built must match its stored schema; a mismatch is a bug (500, logged). */
function assertStorable(schemaId: string, doc: unknown): void {
  const problems = validate(schemaId, doc);
  if (problems.length > 0) throw new Error(`${schemaId} document invalid: ${JSON.stringify(problems)}`);
}

/**
 * Manifest units: image manifests in `units_docker_manifest`, OCI indexes and Docker manifest
 * lists in `units_docker_manifest_list`, each with its exact bytes, unique by digest and shared
 * by every repository that holds them (membership is `repo_content_units`).
 *
 * `blob_digests` lists every blob a manifest needs from the registry (config and layers,
 * foreign layers excluded), so garbage collection can read one field. `config_media_type` is
 * kept beside DESIGN.md's fields for the referrers API (an artifact's type defaults to it).
 */

type ManifestDoc = ManifestUnitDoc & { config_media_type: string | null };
type ListEntryDoc = ManifestListUnitDoc['manifests'][number] & { size?: number };
type ManifestListDoc = Omit<ManifestListUnitDoc, 'manifests'> & { manifests: ListEntryDoc[] };

/** A manifest unit as the service refers to it. */
export interface ManifestUnitRef {
  id: string;
  kind: 'image' | 'list';
}

const NO_CONTENT = { projection: { content: 0 } } as const;

interface StoredUnits {
  cache: MarkedCache<boolean>;
  mark: ((id: string) => number) | undefined;
}

function unitType(kind: 'image' | 'list'): UnitTypeId {
  return kind === 'list' ? UNIT_TYPES.manifestList : UNIT_TYPES.manifest;
}

function binaryToBuffer(b: Binary | Uint8Array | undefined): Buffer | undefined {
  if (b === undefined) return undefined;
  if (b instanceof Binary) return Buffer.from(b.buffer.buffer, b.buffer.byteOffset, b.position);
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function fromImageDoc(d: ManifestDoc): StoredManifest {
  const content = binaryToBuffer(d.content as Binary | undefined);
  return {
    id: d._id,
    digest: d.digest as Digest,
    mediaType: d.media_type,
    schemaVersion: d.schema_version,
    kind: 'image',
    size: d.size,
    configMediaType: d.config_media_type ?? null,
    subject: (d.subject_digest as Digest | null) ?? null,
    artifactType: d.artifact_type ?? null,
    annotations: d.annotations ?? null,
    manifests: [],
    ...(content ? { content } : {}),
  };
}

function fromListDoc(d: ManifestListDoc): StoredManifest {
  const content = binaryToBuffer(d.content as Binary | undefined);
  return {
    id: d._id,
    digest: d.digest as Digest,
    mediaType: d.media_type,
    schemaVersion: 2,
    kind: 'list',
    size: d.size,
    configMediaType: null,
    subject: (d.subject_digest as Digest | null) ?? null,
    artifactType: d.artifact_type ?? null,
    annotations: d.annotations ?? null,
    manifests: (d.manifests ?? []).map(
      (e): ManifestEntry => ({
        digest: e.digest as Digest,
        mediaType: e.media_type,
        size: e.size ?? 0,
        platform:
          e.os !== undefined && e.architecture !== undefined
            ? { os: e.os, architecture: e.architecture, ...(e.variant !== undefined ? { variant: e.variant } : {}) }
            : null,
      }),
    ),
    ...(content ? { content } : {}),
  };
}

function withoutContent(m: StoredManifest): StoredManifest {
  const { content: _content, ...rest } = m;
  return rest;
}

export class ManifestRepository {
  private readonly images: Collection<ManifestDoc>;
  private readonly lists: Collection<ManifestListDoc>;

  private readonly known: UnitCaches;
  private readonly held: HeldUnits;
  /** which manifest units exist, by id, kept while their marks stay put (a push's own inserts among them) */
  private readonly stored: Record<'image' | 'list', StoredUnits>;

  constructor(
    private readonly c: Collections,
    private readonly repoContent: RepoContentRepository,
  ) {
    this.images = c.manifests as unknown as Collection<ManifestDoc>;
    this.lists = c.manifestLists as unknown as Collection<ManifestListDoc>;
    this.known = unitCaches(c);
    this.held = heldUnits(c);
    const stored = (name: string): StoredUnits => ({ cache: new MarkedCache<boolean>(10_000), mark: c.marks?.reader(name) });
    this.stored = { image: stored(COLLECTIONS.manifests), list: stored(COLLECTIONS.manifestLists) };
  }

  /**
   * Stores a manifest unit unless one with its digest exists (the first bytes pushed under a
   * digest stay), and returns the unit either way. Racing inserts of one digest end with one unit.
   */
  async insertIfAbsent(parsed: ParsedManifest, body: Buffer): Promise<ManifestUnitRef> {
    const common = {
      _id: randomUUID(),
      digest: parsed.digest,
      media_type: parsed.mediaType,
      size: body.length,
      subject_digest: parsed.subject,
      artifact_type: parsed.artifactType,
      annotations: parsed.annotations,
      content: new Binary(body),
    };
    if (parsed.kind === 'list') {
      const doc: ManifestListDoc = {
        ...common,
        ...pulpFields(UNIT_TYPES.manifestList),
        schema_version: 2,
        manifest_digests: [...new Set(parsed.manifests.map((m) => m.digest))],
        manifests: parsed.manifests.map((m) => ({
          digest: m.digest,
          media_type: m.mediaType,
          size: m.size,
          ...(m.platform ? { os: m.platform.os, architecture: m.platform.architecture } : {}),
          ...(m.platform?.variant !== undefined ? { variant: m.platform.variant } : {}),
        })),
      };
      assertStorable('stored-docker-manifest-list', doc);
      const id = await this.upsertByDigest(this.lists, this.stored.list, doc);
      // what this push inserted is what a read would answer (an earlier push's unit keeps its own fields)
      if (id === doc._id) this.keep(fromListDoc(doc));
      return { id, kind: 'list' };
    }
    const doc: ManifestDoc = {
      ...common,
      ...pulpFields(UNIT_TYPES.manifest),
      schema_version: parsed.schemaVersion,
      config_digest: parsed.configDigest,
      config_media_type: parsed.configMediaType,
      blob_digests: parsed.blobDigests,
    };
    assertStorable('stored-docker-manifest', doc);
    const id = await this.upsertByDigest(this.images, this.stored.image, doc);
    if (id === doc._id) this.keep(fromImageDoc(doc));
    return { id, kind: 'image' };
  }

  private async upsertByDigest<D extends { _id: string; digest: string; _last_updated: number }>(coll: Collection<D>, stored: StoredUnits, doc: D): Promise<string> {
    const { digest, ...rest } = doc;
    // the marks of the unit this write may insert and of the one it is known to find, noted before it is sent
    const known = this.known.manifests.get(digest as Digest)?.id;
    const mark = stored.mark;
    const before = mark && { inserted: mark(doc._id), known: known !== undefined ? mark(known) : undefined };
    try {
      // one command answers the unit as it was (none: inserted now, under the id this push chose)
      const unit = await coll.findOneAndUpdate({ digest } as Filter<D>, upsertUnit(rest) as UpdateFilter<D>, {
        upsert: true,
        returnDocument: 'before',
        projection: { _id: 1, _last_updated: 1 },
      });
      const id = unit ? String(unit._id) : doc._id;
      // kept as existing while its mark stays where this write left it: moved by exactly this
      // write's one change, or not at all when the write changed nothing (a stamp within the same second)
      if (mark && !unit && before?.inserted !== undefined) stored.cache.keepWritten(id, before.inserted, () => mark(id), true);
      else if (mark && unit && id === known && before?.known !== undefined) {
        if (unit._last_updated !== doc._last_updated) stored.cache.keepWritten(id, before.known, () => mark(id), true);
        else stored.cache.keep(id, before.known, () => mark(id), true);
      }
      return id;
    } catch (err) {
      if (!isDuplicateKey(err)) throw err; // a racing push inserted it first
    }
    const existing = await coll.findOne({ digest } as Filter<D>, { projection: { _id: 1 } });
    if (!existing) throw new Error('manifest unit vanished after insert');
    return String(existing._id);
  }

  /** `tally`: a push's tally moves (RepoContentRepository.tally), written when it flushes them */
  async addToRepo(repo: string, unit: ManifestUnitRef, tally?: { flush(): Promise<void> }): Promise<boolean> {
    return this.repoContent.associate(repo, unitType(unit.kind), unit.id, tally);
  }

  async removeFromRepo(repo: string, unit: ManifestUnitRef): Promise<void> {
    await this.repoContent.disassociate(repo, unitType(unit.kind), [unit.id]);
  }

  /**
   * A manifest unit by digest, wherever it is held. `kind`, when the caller knows it (a tag
   * unit's manifest_type), saves looking in the other collection first.
   */
  async findByDigest(digest: Digest, opts: { content?: boolean; kind?: 'image' | 'list' } = {}): Promise<StoredManifest | null> {
    const options = opts.content ? {} : NO_CONTENT;
    const order: Array<'image' | 'list'> = opts.kind === 'list' ? ['list', 'image'] : ['image', 'list'];
    for (const kind of order) {
      const found = kind === 'image' ? await this.images.findOne({ digest }, options) : await this.lists.findOne({ digest }, options);
      if (found) return this.remember(kind === 'image' ? fromImageDoc(found as ManifestDoc) : fromListDoc(found as ManifestListDoc));
    }
    this.known.manifests.delete(digest);
    return null;
  }

  /**
   * A manifest by digest if this repository holds it. A unit remembered from earlier requests
   * (unit-cache.ts) needs only the association lookup; otherwise the unit is read first.
   */
  async findInRepo(repo: string, digest: Digest, opts: { content?: boolean; kind?: 'image' | 'list' } = {}): Promise<StoredManifest | null> {
    const known = this.known.manifests.get(digest);
    if (known && (!opts.content || known.content)) {
      if (await this.holds(repo, known)) return opts.content ? known : withoutContent(known);
      // not held, or the unit was collected and pushed again: ask for the current one
      const current = await this.findByDigest(digest, opts);
      if (!current || current.id === known.id) return null;
      return (await this.holds(repo, current)) ? current : null;
    }
    const m = await this.findByDigest(digest, opts);
    if (!m) return null;
    return (await this.holds(repo, m)) ? m : null;
  }

  /** Remembers a unit as read; an entry with the bytes is not replaced by the same unit without them. */
  private remember(m: StoredManifest): StoredManifest {
    const prev = this.known.manifests.get(m.digest);
    if (m.content || !prev?.content || prev.id !== m.id) this.keep(m);
    return m;
  }

  /**
   * The bytes are copied into memory of their own: read ones are a view of the driver's whole
   * reply (or socket chunk), pushed ones may be a slice of a pooled slab, and either would keep
   * far more than the manifest alive for as long as it is remembered.
   */
  private keep(m: StoredManifest): void {
    if (!m.content) {
      this.known.manifests.set(m.digest, m);
      return;
    }
    const own = Buffer.allocUnsafeSlow(m.content.length);
    m.content.copy(own);
    this.known.manifests.set(m.digest, { ...m, content: own });
  }

  private async holds(repo: string, m: StoredManifest): Promise<boolean> {
    return (await this.held.updated(repo, unitType(m.kind), m.id)) !== null;
  }

  /** Those of `digests` that are not manifests (or lists) held by the repository. */
  async missingInRepo(repo: string, digests: readonly Digest[]): Promise<Digest[]> {
    if (digests.length === 0) return [];
    const wanted = [...new Set(digests)];
    const proj = { projection: { _id: 1, digest: 1 } };
    const [images, lists] = await Promise.all([
      this.images.find({ digest: { $in: wanted } }, proj).toArray(),
      this.lists.find({ digest: { $in: wanted } }, proj).toArray(),
    ]);
    const held = await this.heldIds(repo, [
      ...images.map((d) => ({ id: d._id, type: UNIT_TYPES.manifest })),
      ...lists.map((d) => ({ id: d._id, type: UNIT_TYPES.manifestList })),
    ]);
    const present = new Set([...images, ...lists].filter((d) => held.has(d._id)).map((d) => d.digest));
    return wanted.filter((d) => !present.has(d));
  }

  /**
   * Those of `digests` that are not blobs held by the repository. Units remembered from earlier
   * requests are not read again (unit-cache.ts); one the repository does not hold is re-read in
   * case it was collected and pushed again.
   */
  async missingBlobsInRepo(repo: string, digests: readonly Digest[]): Promise<Digest[]> {
    if (digests.length === 0) return [];
    const wanted = [...new Set(digests)];
    const ids = new Map<Digest, string>();
    const remembered: Digest[] = [];
    for (const d of wanted) {
      const known = this.known.blobs.get(d);
      if (known) {
        ids.set(d, known.id);
        remembered.push(d);
      }
    }
    await this.readBlobIds(wanted.filter((d) => !ids.has(d)), ids);
    const held = await this.heldIds(repo, [...ids.values()].map((id) => ({ id, type: UNIT_TYPES.blob })));
    const doubtful = remembered.filter((d) => !held.has(ids.get(d) as string));
    if (doubtful.length > 0) {
      for (const d of doubtful) ids.delete(d);
      await this.readBlobIds(doubtful, ids);
      const again = await this.heldIds(repo, doubtful.flatMap((d) => (ids.has(d) ? [{ id: ids.get(d) as string, type: UNIT_TYPES.blob }] : [])));
      for (const id of again) held.add(id);
    }
    return wanted.filter((d) => !(ids.has(d) && held.has(ids.get(d) as string)));
  }

  private async readBlobIds(digests: Digest[], into: Map<Digest, string>): Promise<void> {
    if (digests.length === 0) return;
    const blobs = await this.c.blobs.find({ digest: { $in: digests } }, { projection: { _id: 1, digest: 1, size: 1 } }).toArray();
    for (const b of blobs) {
      into.set(b.digest as Digest, b._id);
      this.known.blobs.set(b.digest as Digest, { id: b._id, digest: b.digest as Digest, size: b.size });
    }
    for (const d of digests) if (!into.has(d)) this.known.blobs.delete(d);
  }

  /**
   * Does the repository still hold `unit` and every blob and manifest `parsed` references,
   * going by the units remembered from the push's own checks? One query. False when one of
   * them is not remembered or not held: the caller then looks closely.
   */
  async holdsAll(repo: string, unit: ManifestUnitRef, parsed: ParsedManifest): Promise<boolean> {
    // The unit itself too: a push that reused a unit a collection was deleting associates it
    // after the collection's last look, and that association would point at nothing.
    const exists = this.exists(unit);
    exists.catch(() => undefined);
    const wanted = [{ id: unit.id, type: unitType(unit.kind) }];
    for (const d of new Set(parsed.blobDigests)) {
      const known = this.known.blobs.get(d);
      if (!known) return false;
      wanted.push({ id: known.id, type: UNIT_TYPES.blob });
    }
    for (const d of new Set(parsed.manifests.map((m) => m.digest))) {
      const known = this.known.manifests.get(d);
      if (!known) return false;
      wanted.push({ id: known.id, type: unitType(known.kind) });
    }
    const held = await this.heldIds(repo, wanted);
    return wanted.every((w) => held.has(w.id)) && (await exists);
  }

  /**
   * Is the unit's document still there? Not answered from the unit cache, which outlives a
   * collection; with change marks, kept while the unit's mark stays put.
   */
  async exists(unit: ManifestUnitRef): Promise<boolean> {
    const coll = unit.kind === 'list' ? this.lists : this.images;
    const load = async (): Promise<boolean> => (await coll.findOne({ _id: unit.id } as never, { projection: { _id: 1 } })) !== null;
    const { mark, cache } = this.stored[unit.kind];
    if (!mark) return load();
    return cache.read(unit.id, () => mark(unit.id), load, (found) => found);
  }

  private async heldIds(repo: string, units: Array<{ id: string; type: UnitTypeId }>): Promise<Set<string>> {
    if (units.length === 0) return new Set();
    return this.held.heldIds(repo, units);
  }

  /** Digests of the indexes and manifest lists held by the repository that list `digest` among their manifests. */
  async listsInRepoReferencing(repo: string, digest: Digest): Promise<Digest[]> {
    const lists = await this.lists.find({ manifest_digests: digest }, { projection: { _id: 1, digest: 1 } }).toArray();
    const held = await this.heldIds(
      repo,
      lists.map((d) => ({ id: d._id, type: UNIT_TYPES.manifestList })),
    );
    return lists
      .filter((d) => held.has(d._id))
      .map((d) => d.digest as Digest)
      .sort();
  }

  /** Manifests and indexes held by the repository whose `subject` is `digest`. */
  async referrers(repo: string, subject: Digest): Promise<StoredManifest[]> {
    const [images, lists] = await Promise.all([
      this.images.find({ subject_digest: subject }, NO_CONTENT).toArray(),
      this.lists.find({ subject_digest: subject }, NO_CONTENT).toArray(),
    ]);
    const all = [...images.map((d) => fromImageDoc(d as ManifestDoc)), ...lists.map((d) => fromListDoc(d as ManifestListDoc))];
    const held = await this.heldIds(
      repo,
      all.map((m) => ({ id: m.id, type: unitType(m.kind) })),
    );
    return all.filter((m) => held.has(m.id)).sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  }
}
