import { createHash } from 'node:crypto';
import { closeSync, constants, createReadStream, mkdirSync, mkdtempSync, openSync } from 'node:fs';
import { mkdir, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import cliProgress from 'cli-progress';
import { decompressedTar } from '../../domain/volumes/decompress.ts';
import { isVolregError } from '../../domain/errors.ts';
import type { Compression } from '../../domain/volumes/media-types.ts';
import type { DigestAlgorithm } from '../../domain/digest.ts';
import { blobPath, byteCounter, OversizedReplyError, parseSnapshotRef, RegistryError, UsageError, type SnapshotJson, type VolregClient } from '../client.ts';
import { compressor } from './compress.ts';
import { packDirectory } from './pack.ts';
import { CorruptArchiveError, type ExtractedTree, extractTree, type ExtractOptions } from './safe-extract.ts';
import { STAGING_PREFIX, userEntries } from './staging.ts';
import { replaceContents } from './switch-over.ts';
import { DIR_FLAGS, fdPath, humanError, humanPath, labelFd, openDirAt, removeTreeAt, unlabelFd } from './dir-fd.ts';
import { syncDirectories } from './durable-tree.ts';
import { fsyncDir, isOutOfSpace } from '../../storage/fs-ops.ts';
import { isFilesystemFailure } from '../../storage/storage-failure.ts';
import { human } from '../byte-size.ts';
import { TransferRate } from '../transfer-rate.ts';

/**
 * Push and pull as the host agent does them, shared by push/pull and backup/restore:
 *
 * push: directory -> tar (pack.ts) -> gzip|zstd -> PUT (chunked), the server's layer digest
 *       checked against the one computed here;
 * pull: GET content -> temp file inside the target, hashed -> digest compared with the
 *       snapshot's -> only then extracted (safe-extract.ts) into a staging directory inside
 *       the target -> the target's old contents replaced by the staged ones, all or nothing
 *       (switch-over.ts) -> directories' modes and mtimes applied -> the old ones deleted ->
 *       the target's own mode and mtime applied.
 *
 * Staging inside the target (not beside it) keeps a Docker volume's mount point in place:
 * a mount point cannot be renamed, its contents can. It is in reach of whoever else writes the
 * volume (a container using it): the work directory, the staging and the old contents are
 * opened once and reached through their descriptors from then on (dir-fd.ts), never by a path
 * through the volume's entries, so what that writer swaps in (a symlink to the host) is never
 * followed; and below the target no system call is given more than a descriptor's path and a
 * name, however deep the tree (paths past PATH_MAX, 4095 bytes, are restored as any other).
 */
export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

export class TargetNotEmptyError extends Error {
  override name = 'TargetNotEmptyError';
}

export interface Progress {
  start(total: number | null, label: string): void;
  add(n: number): void;
  stop(): void;
}

/**
 * A progress bar on stderr when it is a terminal, nothing otherwise: the bytes so far (of the
 * total, when known) and the rate now, redrawn every second so that a stalled link shows as one.
 */
export function progressFor(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { start() {}, add() {}, stop() {} };
  let bar: cliProgress.SingleBar | null = null;
  let value = 0;
  let rate = new TransferRate();
  let ticker: NodeJS.Timeout | undefined;
  const draw = (): void => bar?.update(Math.min(value, bar.getTotal()), { done: human(value), rate: rate.describe() });
  return {
    start(total, label) {
      value = 0;
      rate = new TransferRate();
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: total
            ? `${label} [{bar}] {percentage}% {done}/{size} at {rate}`
            : `${label} {done} at {rate}`,
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total ?? 1, 0, { done: human(0), size: human(total ?? 0), rate: rate.describe() });
      clearInterval(ticker);
      ticker = setInterval(draw, 1000).unref();
    },
    add(n) {
      value += n;
      rate.add(n);
      draw();
    },
    stop() {
      clearInterval(ticker);
      bar?.stop();
      bar = null;
    },
  };
}

export interface PushOptions {
  compression: Compression;
  level?: number;
  host?: string;
  labels?: Record<string, string>;
  progress: Progress;
  onWarning?: (message: string) => void;
  /** refuse (PRECONDITION_FAILED) when the tag already holds a snapshot */
  noOverwrite?: boolean;
}

/**
 * Pushes a directory (or an already made archive stream) as `<name>:<tag>`. Every stage is
 * joined with stream.pipeline, so a failure anywhere (a name that cannot be archived, a file
 * it may not read, EIO, zstd dying) aborts the upload and is what this throws: a plain failure of
 * this push, never an unhandled 'error' event taking the process (and a backup's other volumes)
 * down.
 */
export async function pushSource(client: VolregClient, source: string | Readable, name: string, tag: string, opts: PushOptions): Promise<SnapshotJson> {
  if (typeof source !== 'string') return pushOnce(client, source, name, tag, opts);
  // A source that is not there, or not a directory, is the command line's mistake (exit 2, as a
  // pull into a file is); one it may not read is a failure of the packing (exit 1). In the
  // operator's words, not Node's: "ENOENT: no such file or directory, stat '…'"
  const st = await stat(source).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new UsageError(`${source} does not exist`);
    if (err.code === 'ENOTDIR') throw new UsageError(`${source} does not exist (a part of its path is not a directory)`);
    if (err.code === 'EACCES') throw new Error(`${source} can not be read (permission denied)`);
    throw err;
  });
  if (!st.isDirectory()) throw new UsageError(`${source} is not a directory (to send an archive file: volreg push - <ref> < file)`);
  // A registry refusing with Retry-After (429, 503) stored nothing: a directory is packed and
  // sent again, as the client sends its bodiless requests again (an archive from stdin can not be)
  for (;;) {
    try {
      return await pushOnce(client, source, name, tag, opts);
    } catch (err) {
      if (!(err instanceof RegistryError) || err.retryAfter === null) throw err;
      const wait = client.retryDelay(err.retryAfter);
      if (wait === null) throw err;
      opts.onWarning?.(`${err.message} (HTTP ${err.status}); packing and sending ${name}:${tag} again in ${Math.ceil(wait / 1000)} s`);
      await client.waitBeforeSendingAgain(wait);
    }
  }
}

async function pushOnce(client: VolregClient, source: string | Readable, name: string, tag: string, opts: PushOptions): Promise<SnapshotJson> {
  opts.progress.start(null, `pushing ${name}:${tag}`);
  const hash = createHash('sha256');
  const counter = byteCounter((chunk) => {
    hash.update(chunk);
    opts.progress.add(chunk.length);
  });
  let failure: Error | null = null;
  const noteFailure = (err: Error | null | undefined): void => {
    if (err) failure ??= err;
  };
  const counted: Readable =
    typeof source === 'string'
      ? pipeline(packDirectory(source, { onWarning: opts.onWarning }), compressor(opts.compression, opts.level), counter, noteFailure)
      : pipeline(source, counter, noteFailure);
  try {
    let result: SnapshotJson;
    try {
      result = await client.put(name, tag, counted, { host: opts.host, labels: opts.labels, noOverwrite: opts.noOverwrite });
    } catch (err) {
      // the stream's own failure is the cause; the aborted request is only its consequence
      throw failure ?? err;
    }
    if (failure) throw failure;
    const sent = `sha256:${hash.digest('hex')}`;
    if (result.layer.digest !== sent) {
      throw new IntegrityError(`the registry stored ${result.layer.digest} but ${sent} was sent`);
    }
    return result;
  } finally {
    // a refused upload leaves the packer (and zstd) nothing to write to: stop them
    if (!counted.destroyed) counted.destroy();
    opts.progress.stop();
  }
}

export interface PullOptions extends ExtractOptions {
  force: boolean;
  progress: Progress;
  /**
   * Called once the new contents are verified and staged, before the target starts to change:
   * from then on, until the pull returns, the target may hold part of the old contents and part
   * of the new (a pull killed there stays so). Restore forgets the volume's tag here.
   */
  beforeSwitchOver?: () => Promise<void>;
  /**
   * Called once the new contents are wholly in place, before the pull returns. A signal that came
   * during the switch-over waits for it too: restore records the volume's new tag here, so a
   * restore stopped by SIGTERM mid switch-over leaves a volume it need not fetch again.
   */
  afterSwitchOver?: () => Promise<void>;
}

/** A target this user may not write into: said as such, before anything is downloaded. */
export function notWritable(err: unknown, dir: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== 'EACCES' && code !== 'EPERM') return err;
  return new Error(`cannot write into ${dir} (${code}): restore as a user who may write there (its owner, or root)`);
}

/**
 * Removes a pull's work directory; never throws (the pull's own result or error is what counts).
 * The download and the staging go (the staging's directories are writable until the switch-over
 * is done); the target's old contents (`old`) only once the switch-over is complete. What of
 * them can not be removed, or was not put back after a failed switch-over, is kept, with a
 * warning naming where.
 */
async function discardWork(work: string, workFd: number, switched: boolean, onWarning?: (message: string) => void): Promise<void> {
  const old = join(work, 'old');
  try {
    await rm(fdPath(workFd, 'download'), { force: true });
    removeTreeAt(fdPath(workFd), 'spill');
    removeTreeAt(fdPath(workFd), 'root');
    try {
      if (switched) removeTreeAt(fdPath(workFd), 'old');
      else await rmdir(fdPath(workFd, 'old')).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    } catch (err) {
      onWarning?.(`kept ${old}: old contents of the target that could not be ${switched ? 'removed' : 'put back'} (${humanPath((err as Error).message)}); remove it by hand`);
      return;
    }
    removeWorkDirectory(work);
  } catch (err) {
    onWarning?.(`could not remove ${work}: ${humanPath((err as Error).message)}`);
  }
}

/** rm -rf of a pull's work directory, by name in the target (a path the volume's writers can not change) and by descriptor below. */
function removeWorkDirectory(work: string): void {
  removeTreeAt(dirname(work), basename(work));
}

/**
 * SIGINT/SIGTERM/SIGHUP during a pull: its work directory (download, staging) is removed and
 * the signal re-raised, so an interrupted pull leaves the target as it was. From the
 * switch-over on (old contents aside, staged contents in, old ones removed, directories' modes
 * applied) the signal waits until the pull is done: removing the work directory then would lose
 * the half not yet moved.
 */
interface ActivePull {
  work: string | null;
  switching: boolean;
  pending: NodeJS.Signals | null;
}

const INTERRUPTS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const activePulls = new Set<ActivePull>();

function onInterrupt(signal: NodeJS.Signals): void {
  let deferred = false;
  for (const pull of activePulls) {
    if (pull.switching) {
      pull.pending = signal;
      deferred = true;
    } else {
      if (pull.work !== null) removeWorkDirectory(pull.work);
      activePulls.delete(pull);
    }
  }
  if (!deferred) reraise(signal);
}

function reraise(signal: NodeJS.Signals): never {
  for (const s of INTERRUPTS) process.removeListener(s, onInterrupt);
  process.kill(process.pid, signal);
  // the default action ends the process; should it not, still do not carry on
  process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as Record<string, number>)[signal]!);
}

function watchInterrupts(): ActivePull {
  if (activePulls.size === 0) for (const s of INTERRUPTS) process.on(s, onInterrupt);
  const pull: ActivePull = { work: null, switching: false, pending: null };
  activePulls.add(pull);
  return pull;
}

function unwatchInterrupts(pull: ActivePull): void {
  activePulls.delete(pull);
  if (activePulls.size === 0) for (const s of INTERRUPTS) process.removeListener(s, onInterrupt);
  if (pull.pending) reraise(pull.pending);
}

/** A failure of the target's disk said as such (what was left where), any other error unchanged. */
function diskFailure(err: unknown, left: string): unknown {
  if (isFilesystemFailure(err) || isOutOfSpace(err)) {
    // the code stays, for what the commands add to a full disk (pull.ts, withSparseHint)
    return Object.assign(new Error(`the target's disk failed to store the restored files (${(err as Error).message}); ${left}`, { cause: err }), {
      code: (err as NodeJS.ErrnoException).code,
    });
  }
  return err;
}

/** how often a pull by tag follows the tag to another snapshot when the one it read has gone */
const MAX_TAG_MOVES = 3;

/**
 * Pulls `<name>:<tag>` or `<name>@<manifest digest>` into `dir`. Nothing in `dir` changes unless
 * the download matched its digest and extracted cleanly.
 */
export async function pullInto(client: VolregClient, ref: string, dir: string, opts: PullOptions): Promise<{ digest: string; size: number; entries: number; snapshot: SnapshotJson | null }> {
  const parsed = parseSnapshotRef(ref);
  let expected: { digest: string; size: number };
  let snapshot: SnapshotJson | null = null;
  if ('tag' in parsed) {
    snapshot = await client.get(parsed.name, parsed.tag);
    expected = { digest: snapshot.layer.digest, size: snapshot.layer.size };
  } else {
    expected = await client.layerByManifestDigest(parsed.name, parsed.digest);
  }
  const algorithmOf = (digest: string): DigestAlgorithm => {
    const algorithm = digest.startsWith('sha256:') ? 'sha256' : digest.startsWith('sha512:') ? 'sha512' : null;
    if (algorithm === null) throw new IntegrityError(`cannot verify ${digest}: only sha256 and sha512 are supported`);
    return algorithm;
  };
  algorithmOf(expected.digest); // refused before anything is written

  await mkdir(dir, { recursive: true }).catch((err: unknown) => {
    // mkdir -p of a path that is, or runs through, a file
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') throw new UsageError(`${dir} is not a directory (a file, or a path through one): pull into a directory`);
    throw notWritable(err, dir);
  });
  // only volreg's own leftovers (staging.ts) do not count; a user's `.volreg-x` does
  const existing = await userEntries(dir);
  if (existing.length > 0 && !opts.force) throw new TargetNotEmptyError(`${dir} is not empty (use --force to replace its contents)`);

  // created synchronously, right after the handlers: a signal can not fall between the two
  const interrupts = watchInterrupts();
  let work: string;
  try {
    work = mkdtempSync(join(dir, STAGING_PREFIX));
  } catch (err) {
    unwatchInterrupts(interrupts);
    throw notWritable(err, dir);
  }
  interrupts.work = work;
  // From here on the work directory is reached through this descriptor only (see the top)
  let workFd: number;
  try {
    workFd = labelFd(openSync(work, DIR_FLAGS), work);
  } catch (err) {
    unwatchInterrupts(interrupts);
    throw err;
  }
  const held: number[] = [workFd];
  let tree: ExtractedTree | null = null;
  let switched = false;
  let discarded = false;
  const discard = async (): Promise<void> => {
    if (!discarded) await discardWork(work, workFd, switched, opts.onWarning);
    discarded = true;
  };
  try {
    const file = fdPath(workFd, 'download');
    let got: { digest: string; size: number; announced: string | null } | null = null;
    for (let moves = 0; got === null; moves++) {
      opts.progress.start(expected.size, `pulling ${ref}`);
      try {
        // By digest, not by tag: a push moving the tag after it was resolved must not hand this
        // pull another snapshot's bytes (which would fail the digest check, and read as damage).
        got = await client.download(blobPath(parsed.name, expected.digest), file, algorithmOf(expected.digest), expected.size, {
          onBytes: (n) => opts.progress.add(n),
          onResume: (written, why) => opts.onWarning?.(`the download of ${ref} broke off after ${written} of ${expected.size} bytes (${why}); resuming from there`),
        });
      } catch (err) {
        if (!(err instanceof RegistryError && err.code === 'BLOB_UNKNOWN')) {
          if (!(err instanceof OversizedReplyError)) throw err;
          throw new IntegrityError(`download of ${ref}: the registry ${OversizedReplyError.how(err.announced)} the snapshot's ${expected.size} bytes; stopped there, nothing was extracted`);
        }
        // A tag moved since it was read, and garbage collection took the layer only the old
        // snapshot had: that is no damage. The tag's snapshot as it is now is the one to pull.
        const now = 'tag' in parsed && moves < MAX_TAG_MOVES ? await client.get(parsed.name, parsed.tag) : null;
        if (now === null || now.layer.digest === expected.digest) {
          throw new RegistryError(
            err.status,
            err.code,
            `${ref}: the snapshot layer is missing from the registry's blob store: ${expected.digest} (set aside as damaged, or lost; pushing the same content again mends it)`,
          );
        }
        opts.onWarning?.(`${ref} moved to another snapshot while this pull started (${now.manifestDigest}); pulling that one`);
        snapshot = now;
        expected = { digest: now.layer.digest, size: now.layer.size };
      } finally {
        opts.progress.stop();
      }
    }
    if (got.digest !== expected.digest || got.size !== expected.size || (got.announced !== null && got.announced !== expected.digest)) {
      throw new IntegrityError(
        `download of ${ref} hashes to ${got.digest} (${got.size} bytes), expected ${expected.digest} (${expected.size} bytes); nothing was extracted. ` +
          `If the registry's copy is damaged, \`volreg verify ${ref}\` says so and sets it aside, and pushing the same content again mends it`,
      );
    }
    mkdirSync(fdPath(workFd, 'root'));
    const stagingFd = labelFd(openDirAt(workFd, 'root'), join(work, 'root'));
    held.push(stagingFd);
    const staging = fdPath(stagingFd);
    // never through a symlink put in the download's place
    const downloaded = createReadStream('', { fd: openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW), highWaterMark: 256 * 1024 });
    const { tar } = await decompressedTar(downloaded).catch((err: unknown) => {
      // an empty body or a compression volreg does not decode: the archive's fault, not the pull's
      throw isVolregError(err) && err.code === 'ARCHIVE_INVALID' ? new CorruptArchiveError(err) : err;
    });
    // directories stay writable (for the moves, and for removing the staging after a failure)
    tree = await extractTree(tar, staging, fdPath(workFd, 'spill'), opts).catch((err: unknown) => {
      throw diskFailure(err, `nothing in ${dir} was changed`);
    });
    await syncDirectories(staging).catch((err: unknown) => {
      throw diskFailure(err, `nothing in ${dir} was changed`);
    });
    await rm(file, { force: true });

    await opts.beforeSwitchOver?.();
    // The one switch-over, all or nothing: a failure puts the old contents back.
    interrupts.switching = true;
    mkdirSync(fdPath(workFd, 'old'));
    const asideFd = labelFd(openDirAt(workFd, 'old'), join(work, 'old'));
    held.push(asideFd);
    // the target by its descriptor too: with an entry's name, its path may be past PATH_MAX
    const targetFd = labelFd(openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY), dir);
    held.push(targetFd);
    const target = fdPath(targetFd);
    await replaceContents(target, staging, fdPath(asideFd), { keep: basename(work), onWarning: (m) => opts.onWarning?.(humanPath(m)) });
    // the moves themselves on the disk before the old contents go
    await fsyncDir(target).catch((err: unknown) => {
      throw diskFailure(err, `the new contents were moved into ${dir}, the old ones are kept in ${join(work, 'old')}`);
    });
    // The new contents are in place: nothing from here on undoes the pull.
    switched = true;
    // Last, after every change to the tree (each move or removal changes a parent's mtime): the
    // directories' owners, modes and mtimes, read from the work directory's spill files before it
    // goes (removing it changes nothing below the target), then the target's own, only when the
    // archive has a root entry, once the work directory is gone from it.
    await tree.directories.applyBelowRoot(target, opts);
    tree.directories.remove();
    await discard();
    tree.directories.applyToRoot(target, opts);
    await opts.afterSwitchOver?.();
    return { digest: got.digest, size: got.size, entries: tree.entries, snapshot };
  } catch (err) {
    throw humanError(err);
  } finally {
    try {
      tree?.directories.remove();
    } catch {
      // discard() removes the work directory and the spill files in it, or warns
    }
    await discard();
    for (const fd of held) {
      unlabelFd(fd);
      closeSync(fd);
    }
    unwatchInterrupts(interrupts);
  }
}
