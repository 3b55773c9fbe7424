import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { processClock } from '../domain/clock.ts';
import type { ByteRange } from '../domain/byte-range.ts';
import type { BlobReader } from '../storage/blob-store.ts';
import { digestOf, splitDigest, type Digest } from '../domain/digest.ts';
import { parseManifest } from '../domain/manifests/manifest-handlers.ts';
import { MEDIA_TYPES } from '../domain/media-types.ts';
import { explained, isVolregError, VolregError } from '../domain/errors.ts';
import { readCapped } from '../domain/read-capped.ts';
import { hasPreconditions, preconditionFailed, preconditionsHold, refusal, type Preconditions } from '../domain/preconditions.ts';
import type { RepositoryName, Tag } from '../domain/names.ts';
import { inspectArchive, type ArchiveInspection, type InspectOptions } from '../domain/volumes/archive-inspector.ts';
import { OCI_MANIFEST_MEDIA_TYPE, snapshotFileName } from '../domain/volumes/media-types.ts';
import { decodeSnapshotConfig, encodeSnapshotConfig, type VolumeSnapshotConfig } from '../domain/volumes/snapshot-config.ts';
import { buildSnapshotManifest, readSnapshotManifest } from '../domain/volumes/snapshot-manifest.ts';
import { volumeNameProblem } from '../domain/volumes/volume-name.ts';
import { writeOrWait } from '../domain/stream-write.ts';
import type { IndexedSnapshot, SnapshotInfo, SnapshotListQuery, VerifyResult, VolumeSummary } from '../domain/volumes/snapshot.ts';

/**
 * Volume snapshots (DESIGN.md section 4), on top of the blob and manifest services:
 *
 *   put:    layer (streamed once: stored, hashed, proven a complete tar) -> config blob
 *           -> push record (what only the push knows, by manifest) -> manifest + tag
 *           (manifest service) -> snapshot document (the index)
 *   read:   the tag decides (manifest service); the snapshot document supplies indexed
 *           metadata, and a snapshot without one (pushed through /v2, or tagged when a crash
 *           came) is described from its manifest, config blob and push record (and indexed)
 *   delete: tag (only where it still holds the snapshot read) -> snapshot document; the
 *           manifest and blobs become garbage for GC.
 *
 * The index is written after the tag, without a transaction, so it can lag behind it: two
 * pushes to one tag may index in the other order than they tagged, a crash can fall between
 * the two writes, and /v2 moves and deletes tags without touching it. Every reader compares a
 * document with the tag and mends it (reconcile) before answering from it. Mending loses
 * nothing: a document is described from the manifest, the config blob and the push record, and
 * replaces only the document the reader read, never one written since (a push's own index
 * write is such a mend too).
 */

/** The parts of the blob service a volume needs. */
export interface VolumeBlobs {
  ingest(
    repo: RepositoryName,
    source: Readable,
    opts: { expectedDigest?: Digest; expectedSize?: number; maxBytes?: number; validate?: (tee: Readable) => Promise<void> },
  ): Promise<{ digest: Digest; size: number }>;
  stat(repo: RepositoryName, digest: Digest): Promise<{ digest: Digest; size: number } | null>;
  /** `range` is an HTTP Range header value, resolved against the blob's size */
  open(repo: RepositoryName, digest: Digest, opts?: { range?: string }): Promise<{ range: ByteRange | null; stream: Readable }>;
  /** as `open`, read into the sender's own buffers (blob-service.ts) */
  openToSend(repo: RepositoryName, digest: Digest, opts?: { range?: string }): Promise<LayerToSend>;
  /** bytes that read back wrong: moved out of the store if they are damaged (blob-service.ts) */
  quarantineIfDamaged(digest: Digest): Promise<string | null>;
}

/** A snapshot's layer opened to be sent: the range served (null: all) and its reader. */
export interface LayerToSend {
  range: ByteRange | null;
  reader: BlobReader;
}

/** Accepting these, a tag answers with its schema 2 unit itself, whatever it is. */
const TAG_UNIT_TYPES = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList, OCI_MANIFEST_MEDIA_TYPE];

/** Does a stored manifest (read back as pushed, so it parses) list `digest` as an entry? */
function listsEntry(body: Buffer, mediaType: string, digest: Digest): boolean {
  const parsed = parseManifest(body, mediaType);
  return parsed.kind === 'list' && parsed.manifests.some((m) => m.digest === digest);
}

/** The parts of the manifest service a volume needs. */
export interface VolumeManifests {
  put(repo: RepositoryName, reference: string, body: Buffer, contentType: string, opts?: { preconditions?: Preconditions }): Promise<{ digest: Digest }>;
  get(repo: RepositoryName, reference: string, accept: string[]): Promise<{ digest: Digest; mediaType: string; body: Buffer }>;
  /** by tag, `onlyAt` removes it only where it points at that manifest */
  delete(repo: RepositoryName, reference: string, opts?: { onlyAt?: Digest }): Promise<unknown>;
  /** what each tag's schema 2 unit points at, by repository */
  tagDigests(repos: readonly RepositoryName[]): Promise<Map<string, Map<string, Digest>>>;
  /** repositories a volume snapshot was ever pushed to */
  volumeRepositories(): Promise<string[]>;
}

/** The snapshot index (src/metadata/snapshot-repository.ts). */
export interface SnapshotIndex {
  /** keeps what a push through /api/v1 found in its archive, by the manifest it tags */
  recordPush(volume: string, manifestDigest: Digest, unsafeEntries: number): Promise<void>;
  /** what recordPush kept for a manifest; null: none (it came through /v2) */
  pushRecord(manifestDigest: Digest): Promise<{ unsafeEntries: number } | null>;
  /** records a snapshot in place of the document a reader read (`seen`; null: none), unless it was written since */
  replaceStale(info: SnapshotInfo, seen: IndexedSnapshot | null): Promise<void>;
  /** a tag's document, as replaceStale takes it */
  read(repo: string, tag: string): Promise<IndexedSnapshot | null>;
  /** the `created` of the volume's newest snapshot document; null: none */
  newestCreated(repo: string): Promise<Date | null>;
  /** moves whenever a volume's documents or tags change; null: no such marks, always read */
  volumeMark(repo: string): number | null;
  /** moves whenever any volume's documents, tags or holdings change, or a repository is noted as a volume; null: no such marks */
  storeMark(): number | null;
  list(repo: string, q: SnapshotListQuery): Promise<ListedPage<SnapshotInfo>>;
  volumeNames(): Promise<string[]>;
  /** the manifest each snapshot document names, by volume and tag */
  indexedDigests(repos: readonly string[]): Promise<Map<string, Array<{ tag: string; manifestDigest: Digest }>>>;
  /** volumes with no snapshot document are left out */
  summaries(repos: readonly string[]): Promise<Map<string, VolumeSummary>>;
  recordVerify(repo: string, tag: string, manifestDigest: Digest, result: VerifyResult): Promise<void>;
  delete(repo: string, tag: string, manifestDigest?: Digest): Promise<void>;
}


/** A page of a listing: `total` counts the whole list, `more` says whether entries follow the page. */
export interface ListedPage<T> {
  items: T[];
  total: number;
  more: boolean;
}

export interface PutSnapshotOptions {
  /** what the client says the body hashes to, at most one per algorithm; each is checked */
  expectedDigests?: readonly Digest[];
  host: string | null;
  labels: Record<string, string>;
  maxBytes?: number;
  /** the body's declared length, when known (checked against free space before any byte is read) */
  contentLength?: number;
  /** If-Match / If-None-Match on the tag's manifest digest (If-None-Match: * never replaces a snapshot) */
  preconditions?: Preconditions;
}

const CONFIG_READ_LIMIT = 64 * 1024;
/** volumes a listing reads the tags and snapshot documents of at once */
const VOLUMES_PER_READ = 500;
/** volumes remembered as in line with their tags (a number each) */
const RECONCILED_KEPT = 50_000;


type Settled<T> = { ok: true; value: T } | { ok: false; err: unknown };

function settled<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true, value }),
    (err: unknown) => ({ ok: false, err }),
  );
}

/** A refusal that is about the archive's bytes (not a tar, truncated, corrupt): a verify's finding. */
function isArchiveVerdict(err: unknown): err is VolregError {
  return isVolregError(err) && err.code === 'ARCHIVE_INVALID';
}

/** An inspection that gave no verdict, as the verify's own failure (503 from the inspector stays 503). */
function notVerified(err: unknown): unknown {
  return explained(err, 'UNAVAILABLE', 'the snapshot was not verified, and nothing was recorded');
}

/**
 * The manifest push found the layer or config this very request had stored gone: a garbage
 * collection with a grace period shorter than the push took them in between. The client sent
 * nothing wrong (MANIFEST_BLOB_UNKNOWN, a 400 about a manifest it never wrote, would tell it to
 * give up) and nothing was kept, so it is asked to send the snapshot again, which succeeds.
 */
function collectedMeanwhile(err: unknown): unknown {
  if (!isVolregError(err) || err.code !== 'MANIFEST_BLOB_UNKNOWN') return err;
  return new VolregError(
    'UNAVAILABLE',
    "garbage collection removed this snapshot's layer or config before its tag was written (VOLREG_GC_GRACE is shorter than the push); nothing was kept: push it again",
    err.detail,
    { 'Retry-After': '1' },
  );
}

/** How archives are inspected: `inspectArchive` here, or the same on a worker thread (the service wiring's choice). */
export type Inspect = (source: Readable, opts?: InspectOptions) => Promise<ArchiveInspection>;

export class VolumeService {
  /** volumes found in line with their tags, by the mark they had then (SnapshotIndex.volumeMark) */
  private readonly reconciledAt = new Map<string, number>();

  constructor(
    private readonly blobs: VolumeBlobs,
    private readonly manifests: VolumeManifests,
    private readonly snapshots: SnapshotIndex,
    private readonly inspect: Inspect = inspectArchive,
  ) {}

  /** Stores a snapshot from a tar / tar.gz / tar.zst stream. Nothing is tagged unless the whole body checks out. */
  async put(repo: RepositoryName, tag: Tag, body: Readable, opts: PutSnapshotOptions): Promise<SnapshotInfo> {
    const badName = volumeNameProblem(repo);
    if (badName !== null) throw new VolregError('NAME_INVALID', badName, { name: repo });
    // Refused before a byte of the body is read, when the tag already says so; the tag's own
    // write checks again, in one step with it (manifest-service.ts).
    const preconditions = hasPreconditions(opts.preconditions) ? opts.preconditions : undefined;
    // (a new snapshot is new content, with its own time: create-only refuses any tag holding one)
    if (preconditions) {
      const current = await this.taggedDigest(repo, tag);
      if (!preconditionsHold(preconditions, current)) throw refusal(preconditions, current, `snapshot ${repo}:${tag}`);
    }
    let inspection: ArchiveInspection | undefined;
    const expected = opts.expectedDigests ?? [];
    // The layer is stored under its sha256, which names a snapshot's content everywhere (the
    // host agent, content.sha256); a sha512 the client gave is checked beside it.
    const sha512 = expected.find((d) => d.startsWith('sha512:'));
    const layer = await this.blobs.ingest(repo, body, {
      expectedDigest: expected.find((d) => d.startsWith('sha256:')),
      expectedSize: opts.contentLength,
      maxBytes: opts.maxBytes,
      validate: async (tee) => {
        if (!sha512) {
          inspection = await this.inspect(tee, { skipPlainHash: true });
          return;
        }
        const hash = createHash('sha512');
        const hashed = new PassThrough({ highWaterMark: 1 << 20 });
        tee.on('data', (chunk: Buffer) => hash.update(chunk));
        tee.once('error', (err) => hashed.destroy(err));
        tee.pipe(hashed);
        // the inspection reads to the end before it answers yes, so the hash has seen every byte
        inspection = await this.inspect(hashed, { skipPlainHash: true });
        const actual = `sha512:${hash.digest('hex')}`;
        if (actual !== sha512) throw new VolregError('DIGEST_INVALID', 'provided digest did not match uploaded content', { expected: sha512, actual });
      },
    });
    if (!inspection) throw new VolregError('UNKNOWN', 'archive was not inspected');
    // a plain tar is its own uncompressed stream: its digest is the layer's
    const uncompressedDigest = inspection.uncompressedDigest ?? layer.digest;
    const created = await this.createdNow(repo);
    const configBytes = encodeSnapshotConfig({
      volume: repo,
      created,
      host: opts.host,
      labels: opts.labels,
      uncompressedDigest,
      uncompressedSize: inspection.uncompressedSize,
      entries: inspection.entries,
      compression: inspection.compression,
    });
    const config = await this.blobs.ingest(repo, Readable.from([configBytes]), {
      expectedDigest: digestOf(configBytes),
      expectedSize: configBytes.length,
    });
    const manifest = buildSnapshotManifest({
      config,
      layer: { ...layer, compression: inspection.compression, title: snapshotFileName(repo, tag, inspection.compression) },
      created,
    });
    const view = readSnapshotManifest(manifest)!;
    const info: SnapshotInfo = {
      volume: repo,
      tag,
      manifestDigest: digestOf(manifest),
      configDigest: config.digest,
      layer: { digest: layer.digest, size: layer.size, mediaType: view.layer.mediaType },
      compression: inspection.compression,
      uncompressed: { digest: uncompressedDigest, size: inspection.uncompressedSize },
      entries: inspection.entries,
      unsafeEntries: inspection.unsafeEntries,
      host: opts.host,
      labels: opts.labels,
      created,
      lastVerify: null,
      source: 'api',
    };
    // What only this push knows about its archive is kept before the tag, by manifest: whatever
    // order the index's writes land in, or a crash between the tag and them, the snapshot is
    // described again whole from its tag (describe).
    await this.snapshots.recordPush(repo, info.manifestDigest, inspection.unsafeEntries);
    try {
      await this.manifests.put(repo, tag, manifest, OCI_MANIFEST_MEDIA_TYPE, preconditions ? { preconditions } : {});
    } catch (err) {
      throw collectedMeanwhile(err);
    }
    // The index brought in line with what the tag holds now: this snapshot, or one a racing push
    // tagged after it; never over a document written since this look (get).
    await this.get(repo, tag, info).catch((err: unknown) => {
      if (!isVolregError(err) || err.code !== 'SNAPSHOT_UNKNOWN') throw err; // deleted meanwhile
    });
    return info;
  }

  /** The manifest a tag's schema 2 unit points at, or null. */
  private async taggedDigest(repo: RepositoryName, tag: Tag): Promise<Digest | null> {
    try {
      return (await this.manifests.get(repo, tag, [OCI_MANIFEST_MEDIA_TYPE, '*/*'])).digest;
    } catch (err) {
      if (isVolregError(err) && (err.code === 'MANIFEST_UNKNOWN' || err.code === 'NAME_UNKNOWN')) return null;
      throw err;
    }
  }

  /**
   * The snapshot a tag holds now. The tag (manifest service) is the truth: a snapshot document
   * that does not match it is replaced by what the manifest, config and push record say (or by
   * `justTagged`, the snapshot a push of this process has just tagged, when the tag holds it),
   * or removed when the tag is gone or holds something else.
   */
  async get(repo: RepositoryName, tag: Tag, justTagged?: SnapshotInfo): Promise<SnapshotInfo> {
    // The document before the tag: a document mended from this look at the tag then never
    // replaces one written from a later look (a push's, a reader's) or a verify's (replaceStale).
    const indexed = await this.snapshots.read(repo, tag);
    let manifest: { digest: Digest; body: Buffer } | null;
    try {
      manifest = await this.manifests.get(repo, tag, [OCI_MANIFEST_MEDIA_TYPE]);
    } catch (err) {
      if (!isVolregError(err) || (err.code !== 'MANIFEST_UNKNOWN' && err.code !== 'NAME_UNKNOWN')) throw err;
      manifest = null;
    }
    if (manifest && indexed?.info.manifestDigest === manifest.digest) return indexed.info;
    const derived = !manifest ? null : justTagged?.manifestDigest === manifest.digest ? justTagged : await this.describe(repo, tag, manifest.digest, manifest.body);
    if (derived) {
      await this.snapshots.replaceStale(derived, indexed);
      return derived;
    }
    if (indexed) await this.snapshots.delete(repo, tag, indexed.info.manifestDigest);
    throw manifest
      ? new VolregError('SNAPSHOT_UNKNOWN', 'the tag does not hold a volume snapshot', { volume: repo, tag })
      : new VolregError('SNAPSHOT_UNKNOWN', 'no snapshot with this tag', { volume: repo, tag });
  }

  /**
   * Brings volumes' documents in line with their tags (see the class comment), from one read of
   * the tags and one of the documents for all of them: a document that does not name what its
   * tag holds is mended or removed, and a tag without a document (a snapshot pushed through /v2,
   * or tagged when a crash came) is described and indexed, if it holds a snapshot. A volume
   * found in line, whose documents and tags have not changed since, is not read again: a
   * listing then costs no read of a volume nobody pushed to or deleted from.
   */
  private async reconcile(all: readonly RepositoryName[]): Promise<void> {
    const repos = all.filter((repo) => {
      const mark = this.snapshots.volumeMark(repo);
      return mark === null || this.reconciledAt.get(repo) !== mark;
    });
    if (repos.length === 0) return;
    const before = repos.map((repo) => [repo, this.snapshots.volumeMark(repo)] as const);
    const [byRepo, docsByRepo] = await Promise.all([this.manifests.tagDigests(repos), this.snapshots.indexedDigests(repos)]);
    for (const repo of repos) {
      const tags = byRepo.get(repo) ?? new Map<string, Digest>();
      const docs = docsByRepo.get(repo) ?? [];
      const indexed = new Set(docs.map((d) => d.tag));
      const stale = [...docs.filter((d) => tags.get(d.tag) !== d.manifestDigest).map((d) => d.tag), ...[...tags.keys()].filter((t) => !indexed.has(t))];
      for (const tag of stale) {
        await this.get(repo, tag as Tag).catch((err: unknown) => {
          if (!isVolregError(err) || err.code !== 'SNAPSHOT_UNKNOWN') throw err; // not a snapshot
        });
      }
    }
    // in line as read, unless something changed meanwhile (a mend made here included)
    for (const [repo, mark] of before) {
      if (mark === null || this.snapshots.volumeMark(repo) !== mark) continue;
      this.reconciledAt.delete(repo);
      this.reconciledAt.set(repo, mark);
      if (this.reconciledAt.size > RECONCILED_KEPT) this.reconciledAt.delete(this.reconciledAt.keys().next().value!);
    }
  }

  /**
   * Describes a snapshot from its manifest, its config blob and what its push through /api/v1
   * recorded (none: it came through /v2); null: the manifest is not a volume snapshot. This is
   * all a push writes to the index, so a document rebuilt from it loses nothing.
   */
  private async describe(repo: RepositoryName, tag: Tag, manifestDigest: Digest, body: Buffer): Promise<SnapshotInfo | null> {
    const view = readSnapshotManifest(body);
    if (!view) return null;
    const [config, pushed] = await Promise.all([this.readConfig(repo, view.configDigest), this.snapshots.pushRecord(manifestDigest)]);
    return {
      volume: repo,
      tag,
      manifestDigest,
      configDigest: view.configDigest,
      layer: { digest: view.layer.digest, size: view.layer.size, mediaType: view.layer.mediaType },
      compression: view.layer.compression,
      uncompressed: config ? { digest: config.uncompressedDigest, size: config.uncompressedSize } : null,
      entries: config?.entries ?? null,
      unsafeEntries: pushed?.unsafeEntries ?? null,
      host: config?.host ?? null,
      labels: config?.labels ?? {},
      created: config?.created ?? view.created ?? new Date().toISOString(),
      lastVerify: null,
      source: pushed ? 'api' : 'oci',
    };
  }

  /** A snapshot's config blob, decoded; null when it is missing or not a snapshot config. */
  private async readConfig(repo: RepositoryName, digest: Digest): Promise<VolumeSnapshotConfig | null> {
    try {
      const bytes = await readCapped((await this.blobs.open(repo, digest)).stream, CONFIG_READ_LIMIT);
      return bytes ? decodeSnapshotConfig(bytes) : null;
    } catch (err) {
      if (!isVolregError(err) || err.code !== 'BLOB_UNKNOWN') throw err;
      return null;
    }
  }

  /**
   * The time a snapshot pushed now is created at: the wall clock's, but never before the
   * volume's newest snapshot (a millisecond after it). A clock stepped back (a host that booted
   * with the wrong date, set right later) would otherwise list the new backup below older ones,
   * and a retention job deleting the oldest, or all older than a date, would take it first.
   */
  private async createdNow(repo: RepositoryName): Promise<string> {
    const [now, newest] = [processClock.now(), await this.snapshots.newestCreated(repo)];
    return (newest !== null && newest >= now ? new Date(newest.getTime() + 1) : now).toISOString();
  }

  /** A volume's snapshots, newest first (the index brought in line with the tags first). */
  async list(repo: RepositoryName, q: SnapshotListQuery): Promise<ListedPage<SnapshotInfo>> {
    await this.reconcile([repo]);
    return this.snapshots.list(repo, q);
  }

  /**
   * Volumes by name that hold at least one snapshot, each with its snapshot count, total layer
   * bytes and latest snapshot. Candidates are the volumes with index documents and every
   * repository a snapshot was pushed to through either API (a volume pushed only through /v2
   * has no document until it is read); each is brought in line with its tags before it is
   * counted, so `total` is exact. A listing reads every volume's tags and documents,
   * VOLUMES_PER_READ volumes to a read. A page starts `offset` volumes in, or after the volume
   * named `after` (which need not exist any more). `visible`: the volumes the caller may see
   * (the others are left out before counting and paging).
   */
  async listVolumes(page: { limit: number; offset: number; after?: string }, visible?: (volume: string) => boolean): Promise<ListedPage<VolumeSummary>> {
    const held = await this.heldVolumes(visible);
    const start = page.after === undefined ? page.offset : held.filter((v) => v.volume <= page.after!).length;
    return { items: held.slice(start, start + page.limit), total: held.length, more: held.length > start + page.limit };
  }

  /** Every volume that holds a snapshot, by name, as the volume list counts and summarizes it (listVolumes). */
  async heldVolumes(visible: (volume: string) => boolean = () => true): Promise<VolumeSummary[]> {
    const [indexed, pushed] = await Promise.all([this.snapshots.volumeNames(), this.manifests.volumeRepositories()]);
    const names = [...new Set([...indexed, ...pushed])].filter((n) => volumeNameProblem(n) === null && visible(n)).sort();
    const held: VolumeSummary[] = [];
    // a few reads per batch of volumes, not per volume: a store has thousands
    for (let i = 0; i < names.length; i += VOLUMES_PER_READ) {
      const batch = names.slice(i, i + VOLUMES_PER_READ) as RepositoryName[];
      await this.reconcile(batch);
      const summaries = await this.snapshots.summaries(batch);
      for (const volume of batch) {
        const summary = summaries.get(volume);
        if (summary) held.push(summary); // none: its last snapshot went away
      }
    }
    return held;
  }

  /**
   * A number that moves whenever anything a volume listing reads may have changed, in any
   * volume (SnapshotIndex.storeMark); null when the database shares no change marks.
   */
  storeMark(): number | null {
    return this.snapshots.storeMark();
  }

  fileName(info: SnapshotInfo): string {
    return snapshotFileName(info.volume, info.tag, info.compression);
  }

  /** The snapshot and the stored size of its layer (for content headers, before any byte is read). */
  async content(repo: RepositoryName, tag: Tag): Promise<{ info: SnapshotInfo; size: number; fileName: string }> {
    const info = await this.get(repo, tag);
    const stat = await this.blobs.stat(repo, info.layer.digest);
    if (!stat) throw new VolregError('BLOB_UNKNOWN', 'the snapshot layer is missing from the blob store', { digest: info.layer.digest });
    return { info, size: stat.size, fileName: this.fileName(info) };
  }

  /** The layer exactly as stored, whole or the range an HTTP Range header value asks for. */
  async openLayer(info: SnapshotInfo, range?: string): Promise<LayerToSend> {
    return this.blobs.openToSend(info.volume, info.layer.digest, range !== undefined ? { range } : {});
  }

  /**
   * Re-hashes config and layer from the blob store, re-reads the tar, and records the result.
   * Only what the bytes say is a result: a check that could not be made (the inspection
   * unavailable, the store failing to read) fails the request and records nothing, and sets
   * nothing aside, so it can never report a healthy backup as damaged.
   */
  async verify(repo: RepositoryName, tag: Tag): Promise<SnapshotInfo> {
    const info = await this.get(repo, tag);
    const problems: string[] = [];
    const check = async (what: string, digest: Digest, inspect: boolean): Promise<void> => {
      let stream: Readable;
      try {
        stream = (await this.blobs.open(repo, digest)).stream;
      } catch (err) {
        if (isVolregError(err) && err.code === 'BLOB_UNKNOWN') {
          problems.push(`${what} ${digest} is missing`);
          return;
        }
        throw err;
      }
      const [alg] = splitDigest(digest);
      const hash = createHash(alg);
      const tee = new PassThrough();
      // the inspector learns of failures by reading; a tee it stopped reading must not crash us
      tee.on('error', () => undefined);
      const inspected: Promise<Settled<ArchiveInspection> | null> = inspect ? settled(this.inspect(tee)) : Promise.resolve(null);
      // once the inspector has its answer (it stops reading on a bad tar), let the rest flow away
      void inspected.then(() => tee.resume());
      try {
        await pipeline(stream, async function* (src: AsyncIterable<Buffer>) {
          for await (const chunk of src) {
            hash.update(chunk);
            if (inspect) await writeOrWait(tee, chunk);
            yield chunk;
          }
          tee.end();
        }, async function (src: AsyncIterable<Buffer>) {
          for await (const chunk of src) void chunk;
        });
      } catch (err) {
        tee.destroy(); // or the inspection would wait for the rest for ever
        throw err;
      }
      const result = await inspected;
      if (result && !result.ok && !isArchiveVerdict(result.err)) throw notVerified(result.err);
      const actual = `${alg}:${hash.digest('hex')}`;
      if (actual !== digest) problems.push(`${what} content hashes to ${actual}, not ${digest}; ${await this.setAside(digest)}`);
      if (result && !result.ok) problems.push(`${what} is not a complete tar: ${(result.err as VolregError).message}`);
      else if (result?.ok && info.uncompressed && result.value.uncompressedDigest !== info.uncompressed.digest) {
        problems.push(`${what} uncompressed tar hashes to ${result.value.uncompressedDigest}, not ${info.uncompressed.digest}`);
      }
    };
    await check('config', info.configDigest, false);
    await check('layer', info.layer.digest, true);
    const result: VerifyResult = { ok: problems.length === 0, at: new Date().toISOString(), problems };
    await this.snapshots.recordVerify(repo, tag, info.manifestDigest, result);
    return { ...info, lastVerify: result };
  }

  /** What became of bytes that read back wrong, for a verify's problem list. */
  private async setAside(digest: Digest): Promise<string> {
    const place = await this.blobs.quarantineIfDamaged(digest);
    return place === null
      ? 'the bytes now stored are right (the content was pushed again meanwhile)'
      : `the damaged bytes were moved to ${place} in the data directory; pushing the same content again stores it again`;
  }

  /**
   * Removes the tag of a snapshot (its schema 2 unit, which points at the snapshot's manifest or
   * at an index whose linux/amd64 entry the snapshot is, pushed through /v2) and its snapshot
   * document, and says which snapshot it held. A push moving the tag meanwhile keeps it: this
   * delete then took effect just before that push. The layer stays while another tag uses it.
   *
   * `preconditions` (If-Match, If-None-Match) are about the snapshot's manifest digest: a
   * retention job deletes a tag only while it still holds the snapshot the job judged old.
   */
  async delete(repo: RepositoryName, tag: Tag, opts: { preconditions?: Preconditions } = {}): Promise<SnapshotInfo> {
    const conditions = hasPreconditions(opts.preconditions) ? opts.preconditions : undefined;
    for (let attempt = 1; ; attempt++) {
      const info = await this.get(repo, tag); // 404 SNAPSHOT_UNKNOWN unless the tag holds a snapshot
      if (conditions && !preconditionsHold(conditions, info.manifestDigest)) throw preconditionFailed(`snapshot ${repo}:${tag}`);
      const unit = await this.manifests.get(repo, tag, TAG_UNIT_TYPES).catch((err: unknown) => {
        if (isVolregError(err) && err.code === 'MANIFEST_UNKNOWN') return null;
        throw err;
      });
      // Read twice: a push moving the tag in between is read again, a delete taking it is the end.
      const same = unit !== null && (unit.digest === info.manifestDigest || listsEntry(unit.body, unit.mediaType, info.manifestDigest));
      if (unit !== null && !same && attempt < 3) continue;
      try {
        if (!unit || !same) throw new VolregError('MANIFEST_UNKNOWN');
        await this.manifests.delete(repo, tag, { onlyAt: unit.digest });
      } catch (err) {
        if (!isVolregError(err) || err.code !== 'MANIFEST_UNKNOWN') throw err;
        // another delete took the tag meanwhile
        await this.snapshots.delete(repo, tag, info.manifestDigest);
        throw new VolregError('SNAPSHOT_UNKNOWN', 'no snapshot with this tag', { volume: repo, tag });
      }
      await this.snapshots.delete(repo, tag, info.manifestDigest);
      return info;
    }
  }
}
