import { randomUUID } from 'node:crypto';
import type { Filter } from 'mongodb';
import type { Digest } from '../domain/digest.ts';
import type { ManifestKind } from '../domain/manifests/parsed-manifest.ts';
import { VolregError } from '../domain/errors.ts';
import { hasPreconditions, refusal, type Preconditions } from '../domain/preconditions.ts';
import type { TagRecord, TagWrite } from '../domain/manifests/stored-manifest.ts';
import { COLLECTIONS, pulpFields, UNIT_TYPES, type Collections, type RefusedTagWriteDoc, type TagUnitDoc } from './collections.ts';
import { MarkedCache } from './marked-cache.ts';
import { isDuplicateKey, type RepoContentRepository } from './repo-content-repository.ts';
import { validate } from './schema-validator.ts';

/** A document this code built must match its stored schema; a mismatch is a bug (500, logged). */
function assertStorable(schemaId: string, doc: unknown): void {
  const problems = validate(schemaId, doc);
  if (problems.length > 0) throw new Error(`${schemaId} document invalid: ${JSON.stringify(problems)}`);
}

/**
 * Tag units (`units_docker_tag`), Pulp 2's shape: one unit per (name, schema_version, repo_id),
 * so a tag name can point at a schema 1 and a schema 2 manifest at the same time. A push is one
 * atomic upsert on that unique key; two racing first pushes of a tag meet on the unique index,
 * and the loser retries once, then finds the unit and updates it.
 *
 * Also the repository's v1 tags (`repos.scratchpad.tags`: one `{tag, image_id}` per tag name),
 * which a schema 1 push records.
 */

const NAME_ONLY = { projection: { _id: 0, name: 1 } } as const;

/**
 * The v1 tags one repository records. They live in the repository's one document, and MongoDB
 * refuses a document past 16 MiB: an entry takes up to 230 bytes (a 128-character tag, a
 * 64-character image id), so 50,000 take at most 11.5 MB and a push past them is refused with
 * a 4xx instead of failing in the database with a 5xx.
 */
export const MAX_V1_TAGS_PER_REPO = 50_000;

/** MongoDB's code for a distinct whose answer passes 16 MB */
const DISTINCT_TOO_BIG = 17217;

/** the fields toRecord reads (not the Pulp bookkeeping ones) */
const RECORD_FIELDS = { projection: { _id: 1, repo_id: 1, name: 1, manifest_digest: 1, schema_version: 1, manifest_type: 1, write_id: 1 } } as const;

function toRecord(d: Pick<TagUnitDoc, '_id' | 'repo_id' | 'name' | 'manifest_digest' | 'schema_version' | 'manifest_type' | 'write_id'>): TagRecord {
  return {
    id: d._id,
    repository: d.repo_id,
    name: d.name,
    manifestDigest: d.manifest_digest as Digest,
    schemaVersion: d.schema_version,
    manifestType: d.manifest_type,
    ...(d.write_id !== undefined ? { writeId: d.write_id } : {}),
  };
}

/** A write's own unit: by id, where it pointed it, and (when told apart) that it is still its write. */
function writtenBy(w: TagRecord): Filter<TagUnitDoc> {
  return { _id: w.id, manifest_digest: w.manifestDigest, ...(w.writeId !== undefined ? { write_id: w.writeId } : {}) };
}

export class TagRepository {
  private readonly kept: KeptTags | undefined;

  constructor(
    private readonly c: Collections,
    private readonly repoContent: RepoContentRepository,
    opts: { keptNamesPerRepo?: number } = {},
  ) {
    this.kept = c.marks && keptTags(c, c.marks.reader(COLLECTIONS.tags), opts.keptNamesPerRepo ?? KEPT_NAMES_PER_REPO);
  }

  /**
   * Points `name` (for `schemaVersion`) at a manifest in a repository: creates the tag unit or
   * moves it, then associates it with the repository (its tally moving with `tally`, if
   * given). The other schema version's unit of the same name is never touched.
   */
  async upsert(
    repo: string,
    name: string,
    schemaVersion: 1 | 2,
    manifestDigest: Digest,
    manifestType: ManifestKind,
    condition?: Preconditions,
    tally?: { flush(): Promise<void> },
  ): Promise<TagWrite> {
    const key = { name, schema_version: schemaVersion, repo_id: repo };
    const conditional = hasPreconditions(condition);
    const { filter, upsert } = conditional ? conditionalUpsert(key, condition, manifestDigest) : { filter: key, upsert: true };
    const fields = pulpFields(UNIT_TYPES.tag);
    const writeId = randomUUID();
    const inserted: TagUnitDoc = { _id: randomUUID(), ...key, manifest_digest: manifestDigest, manifest_type: manifestType, write_id: writeId, ...fields };
    assertStorable('stored-docker-tag', inserted);
    const update = {
      $set: { manifest_digest: manifestDigest, manifest_type: manifestType, write_id: writeId, _last_updated: fields._last_updated },
      $setOnInsert: { _id: inserted._id, _ns: fields._ns, _content_type_id: fields._content_type_id, pulp_user_metadata: {} },
    };
    let id: string;
    let previous: TagWrite['previous'];
    for (let attempt = 0; ; attempt++) {
      const kept = this.keptBeforeWrite(repo, name);
      try {
        // one command answers what the unit was (nothing: this inserted it with our id)
        const before = await this.c.tags.findOneAndUpdate(filter, update, { upsert, returnDocument: 'before', projection: { _id: 1, manifest_digest: 1, manifest_type: 1 } });
        if (!before && !upsert) throw await this.refusedWrite(key, condition!, name);
        id = before ? before._id : inserted._id;
        previous = before ? { manifestDigest: before.manifest_digest as Digest, manifestType: before.manifest_type } : null;
        const moved = !before || previous?.manifestDigest !== manifestDigest || previous.manifestType !== manifestType;
        if (kept && moved) this.keepWritten(kept, { id, repository: repo, name, manifestDigest, schemaVersion, manifestType, writeId });
        break;
      } catch (err) {
        // Two first pushes raced to insert: the unit exists now, so the retry updates it. Under
        // a precondition the insert was tried because no unit fitted it, so the one there does not.
        if (conditional && isDuplicateKey(err)) throw await this.refusedWrite(key, condition, name);
        if (!isDuplicateKey(err) || attempt >= 1) throw err;
      }
    }
    // at every write, not only the unit's creation: an association a crash lost right after
    // the unit's insert is made by the tag's next push (every unit a repository holds is associated)
    await this.repoContent.associate(repo, UNIT_TYPES.tag, id, tally);
    return { id, repository: repo, name, manifestDigest, schemaVersion, manifestType, writeId, previous };
  }

  /**
   * The error of a conditional write that found the unit not fitting: which condition failed is
   * read afterwards, for the error's code alone (nothing was written).
   */
  private async refusedWrite(key: { name: string; schema_version: 1 | 2; repo_id: string }, condition: Preconditions, name: string): Promise<Error> {
    const unit = await this.c.tags.findOne(key, { projection: { manifest_digest: 1 } });
    return refusal(condition, (unit?.manifest_digest as Digest | undefined) ?? null, `tag ${name}`);
  }

  /** The name's kept units and their mark, noted before this process writes one of them. */
  private keptBeforeWrite(repo: string, name: string): KeptName | undefined {
    const by = this.kept;
    if (!by) return undefined;
    const key = `${repo}\0${name}`;
    const mark = () => by.mark(repo, name);
    const before = mark();
    const units = by.units.lookup(key, before);
    return units && { key, mark, before, units };
  }

  /**
   * After this process moved or created one unit of a name whose units were kept: the kept
   * answer with that unit as written, if nothing else changed the name meanwhile (one move of
   * its mark). A pull right after a push of its tag then asks nothing.
   */
  private keepWritten(kept: KeptName, written: TagRecord): void {
    const units = [...kept.units.filter((u) => u.schemaVersion !== written.schemaVersion), written];
    this.kept?.units.keepWritten(kept.key, kept.before, kept.mark, Object.freeze(units));
  }

  /**
   * Takes back a push's write of a tag unit, if the unit still holds that push's write: back to
   * what it pointed at before, or removed when the push created it. A later push's write is
   * never undone, even one of the same manifest.
   */
  async undo(write: TagWrite): Promise<void> {
    const ours = writtenBy(write);
    if (write.previous === null) {
      const { deletedCount } = await this.c.tags.deleteOne(ours);
      if (deletedCount > 0) {
        await this.repoContent.disassociate(write.repository, UNIT_TYPES.tag, [write.id]);
        if (write.schemaVersion === 1) await this.removeV1Tags(write.repository, [write.name]);
      }
      return;
    }
    const { manifestDigest, manifestType } = write.previous;
    const { matchedCount } = await this.c.tags.updateOne(ours, { $set: { manifest_digest: manifestDigest, manifest_type: manifestType, _last_updated: pulpFields(UNIT_TYPES.tag)._last_updated } });
    // the name's v1 image id goes back with its schema-1 unit (a later push's is left alone with its write)
    const v1 = write.previousV1ImageId;
    if (matchedCount > 0 && v1 !== undefined) await (v1 === null ? this.removeV1Tags(write.repository, [write.name]) : this.setV1ImageId(write.repository, write.name, v1));
  }

  /**
   * Puts taken units back as they were, each with its own id, only where the name has no unit
   * of that schema version now (one written since stays); answers those put back. Keeping the
   * id keeps a unit the push's write: that push's undo finds it wherever it was put back from.
   */
  async restore(units: readonly TagRecord[]): Promise<TagRecord[]> {
    const restored: TagRecord[] = [];
    for (const u of units) {
      const doc: TagUnitDoc = {
        _id: u.id,
        name: u.name,
        schema_version: u.schemaVersion,
        repo_id: u.repository,
        manifest_digest: u.manifestDigest,
        manifest_type: u.manifestType,
        write_id: u.writeId ?? randomUUID(),
        ...pulpFields(UNIT_TYPES.tag),
      };
      assertStorable('stored-docker-tag', doc);
      try {
        await this.c.tags.insertOne(doc);
      } catch (err) {
        // the name has a unit of this version (or the unit is back already): it stays
        if (isDuplicateKey(err)) continue;
        throw err;
      }
      await this.repoContent.associate(u.repository, UNIT_TYPES.tag, u.id);
      restored.push(u);
    }
    return restored;
  }

  /**
   * Notes the units refused writes moved (not those they created: taking one back removes it),
   * with what each pointed at before, before the writes are undone: a delete by digest that
   * took such a unit meanwhile reads it back (refusedAmong).
   */
  async noteRefused(writes: readonly TagWrite[]): Promise<void> {
    const recorded = new Date();
    const docs: RefusedTagWriteDoc[] = [];
    for (const w of writes) {
      if (!w.previous || w.previous.manifestDigest === w.manifestDigest || w.writeId === undefined) continue;
      const doc: RefusedTagWriteDoc = {
        _id: w.writeId,
        unit_id: w.id,
        repo_id: w.repository,
        name: w.name,
        schema_version: w.schemaVersion,
        manifest_digest: w.manifestDigest,
        previous_digest: w.previous.manifestDigest,
        previous_type: w.previous.manifestType,
        recorded,
      };
      assertStorable('refused-tag-write', doc);
      docs.push(doc);
    }
    if (docs.length === 0) return;
    try {
      await this.c.refusedTagWrites.insertMany(docs, { ordered: false });
    } catch (err) {
      // noted already (one write is refused once; a retried note finds its own)
      if (!isDuplicateKey(err)) throw err;
    }
  }

  /**
   * Of units a delete took, those holding a write that was refused, as that push wrote them
   * (with what they pointed at before).
   */
  async refusedAmong(taken: readonly TagRecord[]): Promise<TagWrite[]> {
    const byWrite = new Map(taken.filter((t) => t.writeId !== undefined).map((t) => [t.writeId!, t]));
    if (byWrite.size === 0) return [];
    const docs = await this.c.refusedTagWrites.find({ _id: { $in: [...byWrite.keys()] } }).toArray();
    return docs.map((d) => ({
      ...byWrite.get(d._id)!,
      previous: { manifestDigest: d.previous_digest as Digest, manifestType: d.previous_type },
    }));
  }

  /**
   * The units of a tag name in a repository (at most one per schema version). Read for every
   * pull by tag: with the engine's change marks a name found is kept until that name's units
   * change (marked-cache.ts).
   */
  async findByName(repo: string, name: string): Promise<readonly TagRecord[]> {
    const load = async (): Promise<readonly TagRecord[]> => Object.freeze((await this.c.tags.find({ repo_id: repo, name }, RECORD_FIELDS).toArray()).map(toRecord));
    const by = this.kept;
    if (!by) return load();
    return by.units.read(`${repo}\0${name}`, () => by.mark(repo, name), load, (units) => units.length > 0);
  }

  /** What each tag name's unit of one schema version points at, by repository (those with none are left out). */
  async digestsByName(repos: readonly string[], schemaVersion: 1 | 2): Promise<Map<string, Map<string, Digest>>> {
    const out = new Map<string, Map<string, Digest>>();
    const docs = this.c.tags.find({ repo_id: { $in: [...repos] }, schema_version: schemaVersion }, { projection: { _id: 0, repo_id: 1, name: 1, manifest_digest: 1 } });
    for await (const d of docs) {
      let names = out.get(d.repo_id);
      if (!names) out.set(d.repo_id, (names = new Map()));
      names.set(d.name, d.manifest_digest as Digest);
    }
    return out;
  }

  /** The tag units of a repository that point at a manifest. */
  async findByManifest(repo: string, manifestDigest: Digest): Promise<TagRecord[]> {
    const docs = await this.c.tags.find({ repo_id: repo, manifest_digest: manifestDigest }, RECORD_FIELDS).toArray();
    return docs.map(toRecord);
  }

  /**
   * Tag names of a repository in byte order, each once, after `last` (exclusive); at most `n`
   * when given. `more` says whether names follow the page.
   */
  async listNames(repo: string, page: { n?: number; last?: string }): Promise<{ names: string[]; more: boolean }> {
    const kept = this.kept;
    // Every name of the repository, kept until one of its tags changes (marked-cache.ts), so
    // the pages of a listing are cut from one read. A repository with more names than are
    // kept is read page by page, as without the engine's marks; one without any (or a name
    // nobody pushed to) is not kept.
    if (kept && !(page.n !== undefined && kept.large.has(repo))) {
      const all = await kept.names.read(repo, () => kept.mark(repo), () => this.allNames(repo), (names) => names.length > 0 && names.length <= kept.namesPerRepo);
      if (all.length > kept.namesPerRepo) kept.markLarge(repo);
      else kept.large.delete(repo);
      return pageOf(all, page);
    }
    if (page.n === undefined) return { names: [...(await this.allNames(repo, page.last))], more: false };
    return this.pageFromDatabase(repo, page.n, page.last);
  }

  /** Every tag name of a repository (after `after`), sorted. */
  private async allNames(repo: string, after?: string): Promise<readonly string[]> {
    // distinct answers one array of strings instead of a document per unit. Tag names are
    // ASCII (the OCI tag grammar), so sorting by code units is byte order.
    const filter = after !== undefined ? { repo_id: repo, name: { $gt: after } } : { repo_id: repo };
    try {
      return Object.freeze(((await this.c.tags.distinct('name', filter)) as string[]).sort());
    } catch (err) {
      // MongoDB's reply to distinct holds at most 16 MB (about 120,000 names of 128 characters):
      // past it, the names come from a cursor, in batches
      if ((err as { code?: unknown }).code !== DISTINCT_TOO_BIG) throw err;
    }
    const names: string[] = [];
    for await (const d of this.c.tags.find(filter, NAME_ONLY).sort({ name: 1 })) if (names[names.length - 1] !== d.name) names.push(d.name);
    return Object.freeze(names);
  }

  private async pageFromDatabase(repo: string, n: number, last: string | undefined): Promise<{ names: string[]; more: boolean }> {
    const names: string[] = [];
    const take = (docs: Array<{ name: string }>): void => {
      for (const d of docs) if (names[names.length - 1] !== d.name) names.push(d.name);
    };
    const filterAfter = (after: string | undefined) => (after !== undefined ? { repo_id: repo, name: { $gt: after } } : { repo_id: repo });
    const query = (after: string | undefined, limit: number): Promise<Array<{ name: string }>> =>
      // a batch as large as the limit: the answer comes in the find's reply, without a getMore
      this.c.tags.find(filterAfter(after), NAME_ONLY).sort({ name: 1 }).limit(limit).batchSize(limit).toArray();
    // n + 1 units tell whether a page follows. A name has up to two units (schema 1 and 2): when
    // some come twice, ask again after the last name seen until n + 1 names are known.
    for (let after = last; ; after = names[names.length - 1]) {
      const want = n + 1 - names.length;
      const docs = await query(after, want);
      take(docs);
      if (docs.length < want || names.length > n) break;
    }
    return { names: names.slice(0, n), more: names.length > n };
  }

  /**
   * Removes a tag name's units (with `only`, those it accepts as found) and returns the units
   * of the name it found: a push moving one meanwhile keeps it (a unit is removed only while it
   * points where it was found), and the delete took effect before that push.
   */
  async deleteByName(repo: string, name: string, opts: { only?: (unit: TagRecord) => boolean } = {}): Promise<TagRecord[]> {
    const found = [...(await this.findByName(repo, name))];
    await this.remove(opts.only === undefined ? found : found.filter(opts.only));
    return found;
  }

  /** Removes every tag unit of the repository pointing at a manifest; returns what was removed. */
  async deleteByManifest(repo: string, manifestDigest: Digest): Promise<TagRecord[]> {
    return this.remove(await this.findByManifest(repo, manifestDigest));
  }

  // Each unit only if it still points where it was read: one a push moved meanwhile is a newer
  // tag, which a delete of the old one must not take with it. The unit goes first (readers look
  // tags up by repo_id), then its association; a crash in between leaves only an association to
  // a missing unit, which garbage collection drops.
  private async remove(tags: TagRecord[]): Promise<TagRecord[]> {
    const removed: TagRecord[] = [];
    for (const t of tags) {
      const { deletedCount } = await this.c.tags.deleteOne({ _id: t.id, manifest_digest: t.manifestDigest });
      if (deletedCount > 0) removed.push(t);
    }
    if (removed.length === 0) return [];
    await this.repoContent.disassociate(removed[0]!.repository, UNIT_TYPES.tag, removed.map((t) => t.id));
    const v1 = removed.filter((t) => t.schemaVersion === 1).map((t) => t.name);
    if (v1.length > 0) await this.removeV1Tags(removed[0]!.repository, v1);
    return removed;
  }

  /**
   * Records a v1 tag in `repos.scratchpad.tags`: exactly one `{tag, image_id}` per tag name,
   * replaced on re-push. Each step is a single-document conditional update, so racing pushes
   * never leave two entries for one name. Answers the image id it replaced, read just before
   * (what a refused push puts back).
   */
  async setV1ImageId(repo: string, tag: string, imageId: string): Promise<string | null> {
    const before = await this.v1ImageId(repo, tag);
    for (let attempt = 0; attempt < 5; attempt++) {
      const replaced = await this.c.repos.updateOne(
        { _id: repo, 'scratchpad.tags.tag': tag },
        { $set: { 'scratchpad.tags.$.image_id': imageId, _last_updated: Math.floor(Date.now() / 1000) } },
      );
      if (replaced.matchedCount > 0) return before;
      const last = `scratchpad.tags.${MAX_V1_TAGS_PER_REPO - 1}`;
      const added = await this.c.repos.updateOne(
        // only while there is room: the check and the push are one step, whatever races
        { _id: repo, 'scratchpad.tags.tag': { $ne: tag }, [last]: { $exists: false } },
        { $push: { 'scratchpad.tags': { tag, image_id: imageId } }, $set: { _last_updated: Math.floor(Date.now() / 1000) } },
      );
      if (added.matchedCount > 0) return before;
      if (await this.c.repos.findOne({ _id: repo, 'scratchpad.tags.tag': { $ne: tag }, [last]: { $exists: true } }, { projection: { _id: 1 } })) {
        throw new VolregError(
          'DENIED',
          `repository ${repo} records ${MAX_V1_TAGS_PER_REPO} schema 1 tags, the most one repository can: delete some, or push this image as schema 2`,
          { limit: MAX_V1_TAGS_PER_REPO },
        );
      }
      // neither matched: another push added the entry in between, so replace it next round
    }
    throw new Error('could not record the v1 tag');
  }

  /** The v1 image id recorded for a tag name, if any. */
  async v1ImageId(repo: string, tag: string): Promise<string | null> {
    const doc = await this.c.repos.findOne({ _id: repo }, { projection: { 'scratchpad.tags': 1 } });
    return doc?.scratchpad?.tags?.find((t) => t.tag === tag)?.image_id ?? null;
  }

  async removeV1Tags(repo: string, tags: string[]): Promise<void> {
    await this.c.repos.updateOne({ _id: repo }, { $pull: { 'scratchpad.tags': { tag: { $in: tags } } } });
  }
}

/**
 * The tag upsert's filter and whether it may insert, for preconditions on the unit it writes:
 * one command then both checks and writes, so no other push can move the tag in between. A
 * unit that exists but does not fit makes the insert collide with it on the unique key.
 */
function conditionalUpsert(key: { name: string; schema_version: 1 | 2; repo_id: string }, p: Preconditions, writing: Digest): { filter: Filter<TagUnitDoc>; upsert: boolean } {
  const digest: Record<string, unknown> = {};
  const allowed = [...(p.ifMatch !== undefined && p.ifMatch !== '*' ? [p.ifMatch] : []), ...(p.createOnly ? [[writing]] : [])];
  // create-only: a unit that is there must already hold what is written (with If-Match, the digests both allow)
  if (allowed.length > 0) digest['$in'] = allowed.reduce((a, b) => a.filter((d) => b.includes(d)));
  if (p.ifNoneMatch === '*') digest['$exists'] = false;
  else if (p.ifNoneMatch !== undefined) digest['$nin'] = p.ifNoneMatch;
  const filter = Object.keys(digest).length > 0 ? { ...key, manifest_digest: digest } : key;
  // If-Match needs a unit to be there; without it, no unit is as good as one that fits
  return { filter: filter as Filter<TagUnitDoc>, upsert: p.ifMatch === undefined };
}

/** A tag name's kept units, as read at mark `before`. */
interface KeptName {
  key: string;
  mark: () => number;
  before: number;
  units: readonly TagRecord[];
}

/** A repository's names are kept while it has at most this many (about 50 bytes each)... */
const KEPT_NAMES_PER_REPO = 20_000;
/** ...and all repositories' together at most this many. */
const KEPT_NAMES = 100_000;
/** Repositories remembered as having more names than are kept. */
const LARGE_REPOS = 1000;

class KeptTags {
  /** a tag name's units, by `repo\0name` */
  readonly units = new MarkedCache<readonly TagRecord[]>(10_000);
  /** every name of a repository, sorted, by repository (never empty: unknown names are not kept) */
  readonly names = new MarkedCache<readonly string[]>(KEPT_NAMES, (names) => names.length);
  /** repositories last seen with more names than are kept, whose pages are read one by one */
  readonly large = new Set<string>();

  constructor(
    /** the mark of a tag name's units, or with the repository alone of all its names' */
    readonly mark: (repo: string, name?: string) => number,
    readonly namesPerRepo: number,
  ) {}

  markLarge(repo: string): void {
    this.large.delete(repo);
    this.large.add(repo);
    if (this.large.size > LARGE_REPOS) this.large.delete(this.large.values().next().value as string);
  }
}

const tagCaches = new WeakMap<Collections, KeptTags>();

/** One cache per database handle, shared by every TagRepository on it. */
function keptTags(c: Collections, read: (...key: string[]) => number, namesPerRepo: number): KeptTags {
  let kept = tagCaches.get(c);
  if (!kept) {
    kept = new KeptTags((repo, name) => (name === undefined ? read(repo) : read(repo, name)), namesPerRepo);
    tagCaches.set(c, kept);
  }
  return kept;
}

/** The page of sorted `all` after `last` (exclusive), at most `n` names. */
function pageOf(all: readonly string[], page: { n?: number; last?: string }): { names: string[]; more: boolean } {
  let start = 0;
  if (page.last !== undefined) {
    // the first name after `last`, by binary search
    let end = all.length;
    while (start < end) {
      const mid = (start + end) >>> 1;
      if (all[mid]! > page.last) end = mid;
      else start = mid + 1;
    }
  }
  const end = page.n === undefined ? all.length : Math.min(all.length, start + page.n);
  return { names: all.slice(start, end), more: end < all.length };
}
