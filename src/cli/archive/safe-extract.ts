import { execFile } from 'node:child_process';
import { chmodSync, closeSync, constants, type Stats, fchmodSync, fchownSync, fstatSync, futimesSync, lstatSync, mkdirSync, opendirSync, openSync, readFileSync, readlinkSync, rmdirSync, unlinkSync } from 'node:fs';
import { lchown, link, lutimes, mkdtemp, readlink, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { Header } from 'tar-stream';
import { entryAttributes, type EntryAttributes } from '../../domain/volumes/entry-attributes.ts';
import { entryKind, normalizeEntryName, symlinkStaysInside } from '../../domain/volumes/entry-safety.ts';
import { NameHashSet } from '../../domain/volumes/name-hash-set.ts';
import { unrestorableReason } from '../../domain/volumes/restorable-entry.ts';
import { feedParser, tarParser } from '../../domain/volumes/tar-feed.ts';
import { TarFraming } from '../../domain/volumes/tar-framing.ts';
import { DirChain, fdPath, fdPathForChild, humanError, humanPath, TreeDirs, UnreachableDirError, unlabelFd } from './dir-fd.ts';
import { FileSyncs } from './durable-tree.ts';
import { SparseWriter } from './sparse-write.ts';
import { SpillFiles } from './spill-files.ts';
import { writeFullySync } from './write-fully.ts';

/**
 * Extracts a tar stream into a directory without ever writing outside it:
 *
 * - names that are absolute or contain `..` are refused;
 * - nothing is ever written through a symlink: every parent directory is checked with lstat
 *   (a symlink or non-directory parent is refused), files are created with O_EXCL|O_NOFOLLOW
 *   after removing whatever entry of the same name the archive created before;
 * - a symlink whose target leaves the directory (absolute, or `..` past the root) is refused,
 *   unless `keepOutsideSymlinks` (it is then created as is, and still never written through);
 *   that lexical check sees one link at a time, so once every entry is extracted each symlink
 *   created is also resolved component by component against the extracted tree, following the
 *   links in it (`y -> .` then `l -> y/y/../../etc` leaves the root although its text does
 *   not): one that leaves the root, or does not resolve within 40 links (a loop), is refused;
 * - a hard link may only point at a regular file, symlink, fifo or device this same extraction
 *   already made (GNU tar links a symlink's further names to it, bsdtar and busybox a fifo's;
 *   link(2) does not follow the symlink, so the new name is that symlink too, one inode, and is
 *   checked as a symlink at its own place). The names made are kept as 64-bit hashes
 *   (name-hash-set.ts), so a name never made may match one that was (about n / 2^64 for a link
 *   among n names, or on purpose: the hash is not secret); a match is therefore also checked on
 *   the disk: every parent of the target a real directory (opened with O_NOFOLLOW, dir-fd.ts),
 *   the target itself a file, symlink, fifo or device. The target directory starts empty, so
 *   what is there was made by this extraction: a collision can at most link a name to an entry
 *   this archive made, never to anything outside it or not extracted, and never refuses a valid
 *   archive;
 * - the same name twice: the later entry wins, as in tar -x; a directory made by an earlier
 *   entry is replaced only while empty (GNU tar and bsdtar fail on a full one too), and the
 *   attributes it was to get are dropped with it;
 * - a regular file entry whose name ends in `/` is a directory, as tar -x makes it
 *   (entry-safety.ts, entryKind);
 * - character and block devices only with `allowDevices` (they need root and `mknod`);
 * - entries that can not be restored exactly are refused, never skipped (restorable-entry.ts,
 *   the server's rule on push too, for archives stored before it or through /v2): a name or link
 *   target holding U+FFFD (tar-stream's stand-in for bytes that are not UTF-8, so `caf\xe9` and
 *   `caf\xe8` would both become `caf\uFFFD`), GNU sparse files (`tar -S`: a type tar-stream
 *   does not know, or `GNU.sparse.*` pax records), and any other entry type it does not know;
 * - the archive ends at its end-of-archive marker, as GNU tar reads it: anything but zero
 *   padding after it (a second archive appended) makes it not a readable tar (the server's
 *   framing rule, tar-framing.ts), rather than more entries.
 *
 * Any refusal aborts the whole extraction (UnsafeArchiveError): callers extract into a fresh
 * staging directory and throw it away on failure, so a refused archive leaves nothing behind.
 * Modes, mtimes and (when running as root) owners are restored as entry-attributes.ts reads
 * them, pax records included. Directories get theirs last, deepest first, so read-only ones
 * can still be filled: extractTar does that at the end, extractTree leaves every directory
 * writable and returns their attributes, for a caller that moves the tree into place first.
 *
 * Memory does not grow with the number of entries but by the 16 to 32 bytes of a name's hash:
 * the directories' attributes and the names of the symlinks created wait for the end in spill
 * files (spill-files.ts), and the directories held open are TreeDirs' few (dir-fd.ts).
 */
export interface ExtractOptions {
  allowDevices?: boolean;
  keepOutsideSymlinks?: boolean;
  /** blocks of zeros in files are left as holes (sparse-write.ts) */
  sparse?: boolean;
  /** default: when running as root */
  preserveOwner?: boolean;
  onWarning?: (message: string) => void;
  /** bytes of file data written, for progress */
  onFileBytes?: (n: number) => void;
}

/** Links followed while resolving one symlink before giving up (Linux's own limit, MAXSYMLINKS). */
export const MAX_SYMLINK_HOPS = 40;

/**
 * Resolves the path `rel` (relative to `root`) the way the kernel would, component by component,
 * following every symlink met on disk (a target relative to the link's directory), `..` popping.
 * 'outside' as soon as it leaves the root (an absolute target, or `..` at the root); 'loop' after
 * MAX_SYMLINK_HOPS links; otherwise 'inside'. A component that does not exist, or is not a
 * directory, is taken as a directory that may be created later (the most an innocent later
 * `mkdir` could make of it): what follows it is taken lexically until a `..` climbs back out.
 *
 * The directories on disk are entered by descriptor (dir-fd.ts, DirChain), each with O_NOFOLLOW:
 * each component is looked up in the one before, however long the path (past PATH_MAX too).
 */
export async function resolveInside(root: string, rel: string): Promise<'inside' | 'outside' | 'loop'> {
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  const chain = new DirChain(rootFd);
  try {
    return resolveFrom(chain, rel);
  } finally {
    chain.close();
    closeSync(rootFd);
  }
}

function resolveFrom(chain: DirChain, rel: string): 'inside' | 'outside' | 'loop' {
  /** the components taken so far; the first chain.depth of them are the chain's directories */
  let depth = 0;
  const queue: string[] = rel.split('/');
  let hops = 0;
  while (queue.length > 0) {
    const part = queue.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (depth === 0) return 'outside';
      if (chain.depth === depth) chain.leave();
      depth--;
      continue;
    }
    depth++;
    if (chain.depth < depth - 1) continue; // beneath a component that is not a directory
    const parentFd = chain.fd();
    try {
      chain.enter(part);
      continue; // a directory on disk
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENAMETOOLONG') continue;
      if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
    }
    const st = lstatSyncOrNull(fdPath(parentFd, part));
    if (st === null || !st.isSymbolicLink()) continue;
    if (++hops > MAX_SYMLINK_HOPS) return 'loop';
    const target = readlinkSync(fdPath(parentFd, part));
    if (target.startsWith('/')) return 'outside';
    depth--;
    queue.unshift(...target.split('/'));
  }
  return 'inside';
}

/**
 * What a failure while extracting says: a refused entry or a failed system call (writing the
 * tree, reading the downloaded file) as it is; anything else comes from decoding or parsing
 * the archive, which is then not a readable tar.
 */
function archiveFault(err: unknown): unknown {
  if (err instanceof UnsafeArchiveError) return err;
  if (err instanceof Error && typeof (err as NodeJS.ErrnoException).syscall === 'string') return err;
  return new CorruptArchiveError(err);
}

/** The archive could not be decoded or read as tar (after its digest checked out: it was stored so). */
export class CorruptArchiveError extends Error {
  override name = 'CorruptArchiveError';
  constructor(cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(`the snapshot is not a readable tar archive: ${reason.slice(0, 300)}`);
  }
}

export class UnsafeArchiveError extends Error {
  constructor(
    readonly entry: string,
    reason: string,
  ) {
    super(`refusing archive entry ${JSON.stringify(entry.slice(0, 300))}: ${reason}`);
    this.name = 'UnsafeArchiveError';
  }
}

const run = promisify(execFile);

/**
 * mknod or mkfifo: a failure (root without CAP_MKNOD in a container, say) is this entry that
 * can not be restored, in the tool's own words, not an archive that can not be read.
 */
async function special(entry: string, tool: 'mknod' | 'mkfifo', args: string[]): Promise<void> {
  try {
    await run(tool, args);
  } catch (err) {
    const said = String((err as { stderr?: unknown }).stderr ?? '').trim().split('\n').pop() || (err as Error).message;
    throw new UnsafeArchiveError(entry, `${tool} failed: ${said}`);
  }
}

/** Linux's O_PATH (Node names no constant for it): a descriptor that names an inode without opening it. */
const O_PATH = 0o10000000;

/**
 * Gives the fifo or device node just made at `abs` its whole mode (mkfifo -m and mknod -m take
 * only the permission bits). Through an O_PATH descriptor: it never follows a symlink put in its
 * place by whoever else writes the volume, and unlike an open it never runs a device's driver;
 * chmod of its /proc/self/fd link changes that very inode.
 */
function chmodSpecialNode(abs: string, mode: number, entry: string, isExpected: (st: Stats) => boolean): void {
  const fd = openSync(abs, O_PATH | constants.O_NOFOLLOW);
  try {
    if (!isExpected(fstatSync(fd))) throw new UnsafeArchiveError(entry, 'the node it made was replaced while the pull ran');
    chmodSync(`/proc/self/fd/${fd}`, mode);
  } finally {
    closeSync(fd);
  }
}

const FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export interface ExtractResult {
  entries: number;
  files: number;
  bytes: number;
}

export interface ExtractedTree extends ExtractResult {
  /** what the directories are to get once the tree is in place; remove() once done or given up */
  directories: DeferredDirectories;
}

/** The spill file of the directories `depth` components deep. */
function depthFile(depth: number): string {
  return `directories-${depth}`;
}

const SYMLINKS_FILE = 'symlinks';

/** A directory record's fixed part: mode, mtime, uid, gid, each a double. */
const DIRECTORY_RECORD = 32;

/**
 * The attributes of the extracted directories, applied once the tree is in place: in a spill
 * file per depth (in the order of the archive), the root's in memory. A directory named again
 * gets the later entry's attributes (applied after the earlier's); one replaced by a
 * non-directory gets none (it is no longer a directory when they are applied), and no warning.
 */
export class DeferredDirectories {
  private deepest = 0;
  private root: EntryAttributes | null = null;
  /** directories an entry replaced (hashes: a collision only spares a warning) */
  private readonly replaced = new NameHashSet();

  constructor(private readonly spill: SpillFiles) {}

  add(rel: string, a: EntryAttributes): void {
    if (rel === '') {
      this.root = a;
      return;
    }
    let depth = 1;
    for (let at = rel.indexOf('/'); at !== -1; at = rel.indexOf('/', at + 1)) depth++;
    const name = Buffer.from(rel);
    const record = Buffer.allocUnsafe(DIRECTORY_RECORD + name.length);
    record.writeDoubleLE(a.mode, 0);
    record.writeDoubleLE(a.mtime, 8);
    record.writeDoubleLE(a.uid, 16);
    record.writeDoubleLE(a.gid, 24);
    name.copy(record, DIRECTORY_RECORD);
    this.spill.append(depthFile(depth), record);
    this.deepest = Math.max(this.deepest, depth);
  }

  /** The directory `rel` was removed for a later entry of its name. */
  replacedByEntry(rel: string): void {
    this.replaced.add(rel);
  }

  /**
   * Gives the directories below `root` (where the tree now is) their owners, modes and mtimes,
   * deepest first: filling or moving them would have changed their mtimes, and a read-only mode
   * would have stopped it. Not the root's own: see applyToRoot. Each through its own descriptor,
   * reached without following a symlink: a directory the volume's writers replaced meanwhile (by
   * a symlink to the host, say) keeps what it is, with a warning, and nothing outside is changed.
   */
  async applyBelowRoot(root: string, opts: { preserveOwner?: boolean; onWarning?: (message: string) => void } = {}): Promise<void> {
    const preserveOwner = ownersPreserved(opts);
    const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
    const dirs = new TreeDirs(rootFd, humanPath(root));
    try {
      for (let depth = this.deepest; depth > 0; depth--) {
        for await (const record of this.spill.records(depthFile(depth))) {
          const rel = record.toString('utf8', DIRECTORY_RECORD);
          // the spill file lies in the volume: a name it holds must be one the extraction could write
          if (record.length < DIRECTORY_RECORD || rel === '' || normalizeEntryName(rel) !== rel) throw new Error(`a spill file of the pull holds ${JSON.stringify(rel.slice(0, 300))}, not a directory it extracted`);
          let fd: number;
          try {
            fd = dirs.dir(rel);
          } catch (err) {
            if (!(err instanceof UnreachableDirError)) throw err;
            if (!this.replaced.has(rel)) opts.onWarning?.(`${rel}: not given its owner, mode and mtime, as ${err.message} (changed while the pull ran)`);
            continue;
          }
          if (!fstatSync(fd).isDirectory()) continue;
          applyAttributes(fd, { mode: record.readDoubleLE(0), mtime: record.readDoubleLE(8), uid: record.readDoubleLE(16), gid: record.readDoubleLE(24) }, preserveOwner);
        }
      }
    } catch (err) {
      throw humanError(err);
    } finally {
      dirs.close();
      unlabelFd(rootFd);
      closeSync(rootFd);
    }
  }

  /** The root's attributes, when the archive has an entry for it: last, after every change to what it holds. */
  applyToRoot(root: string, opts: { preserveOwner?: boolean } = {}): void {
    if (this.root === null) return;
    const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      applyAttributes(rootFd, this.root, ownersPreserved(opts));
    } finally {
      closeSync(rootFd);
    }
  }

  /** Removes the spill files (again is nothing); applyBelowRoot can not run after. */
  remove(): void {
    this.spill.remove();
  }
}

function applyAttributes(fd: number, a: EntryAttributes, preserveOwner: boolean): void {
  if (ownerApplies(preserveOwner, a)) fchownSync(fd, a.uid, a.gid);
  fchmodSync(fd, a.mode);
  futimesSync(fd, fsTime(a.mtime), fsTime(a.mtime));
}

/** null when nothing is there; a name too long for the filesystem can not be there either. */
function lstatSyncOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENAMETOOLONG') return null;
    throw err;
  }
}

/**
 * As a user who is not root, owners are not restored: every entry becomes this user's. Said
 * once, with how many entries belonged to someone else, and how many of those keep a setuid or
 * setgid bit, now of this user (as `tar -xp` keeps them; plain `tar -x` drops them).
 */
class OwnersNotRestored {
  private readonly uid = process.getuid?.() ?? -1;
  private readonly gid = process.getgid?.() ?? -1;
  private others = 0;
  private setid = 0;
  private first: { name: string; uid: number; gid: number } | null = null;

  constructor(private readonly preserved: boolean) {}

  note(name: string, a: EntryAttributes): void {
    if (!Number.isInteger(a.uid) || !Number.isInteger(a.gid)) return;
    if (this.preserved ? ownerApplies(true, a) : a.uid === this.uid && a.gid === this.gid) return;
    this.others++;
    this.first ??= { name, uid: a.uid, gid: a.gid };
    if ((a.mode & 0o6000) !== 0) this.setid++;
  }

  warning(): string | null {
    if (this.first === null) return null;
    const { name, uid, gid } = this.first;
    if (this.preserved) {
      return (
        `owners of ${this.others} ${this.others === 1 ? 'entry' : 'entries'} are not restored: this user namespace does not map their ids ` +
        `(${JSON.stringify(name.slice(0, 200))}: ${uid}:${gid}${this.others > 1 ? ', ...' : ''}; see /proc/self/uid_map), so they are ${this.uid}:${this.gid}` +
        (this.setid > 0 ? `, ${this.setid} with a setuid or setgid bit kept` : '') +
        '; restore outside the container, or map those ids, to keep them'
      );
    }
    return (
      `owners are not restored: this runs as uid ${this.uid}, not root, and ${this.others} ${this.others === 1 ? 'entry' : 'entries'} of other owners ` +
      `(${JSON.stringify(name.slice(0, 200))}: ${uid}:${gid}${this.others > 1 ? ', ...' : ''}) ${this.others === 1 ? 'is' : 'are'} now ${this.uid}:${this.gid}` +
      (this.setid > 0 ? `, ${this.setid} with a setuid or setgid bit kept` : '') +
      '; restore as root to keep owners'
    );
  }
}

/**
 * Whether an entry gets its owner: when owners are preserved and this user namespace maps its
 * ids. Root in a rootless container maps only a range (/proc/self/uid_map); a chown to an id
 * outside it fails (EINVAL), and such entries stay root's there, as with `tar -x`, said once.
 */
function ownerApplies(preserved: boolean, a: EntryAttributes): boolean {
  return preserved && Number.isInteger(a.uid) && Number.isInteger(a.gid) && ID_MAPS.uid(a.uid) && ID_MAPS.gid(a.gid);
}

const ID_MAPS = { uid: idMap('/proc/self/uid_map'), gid: idMap('/proc/self/gid_map') };

/** Which ids a user namespace map (`inside outside count` lines) holds; every id where there is none to read. */
function idMap(path: string): (id: number) => boolean {
  let ranges: Array<[number, number]>;
  try {
    ranges = readFileSync(path, 'utf8').trim().split('\n').map((line) => {
      const [inside, , count] = line.trim().split(/\s+/).map(Number);
      return [inside!, inside! + count!] as [number, number];
    });
  } catch {
    return () => true;
  }
  return (id) => ranges.some(([from, to]) => id >= from && id < to);
}

function ownersPreserved(opts: { preserveOwner?: boolean }): boolean {
  return opts.preserveOwner ?? process.getuid?.() === 0;
}

/** An mtime in seconds as the fs functions take it: Node turns a negative number into "now". */
function fsTime(seconds: number): number | Date {
  return seconds >= 0 ? seconds : new Date(seconds * 1000);
}

/** The tar's bytes, checked against its block framing on their way to the parser. */
async function* framed(tar: AsyncIterable<Buffer>, framing: TarFraming): AsyncGenerator<Buffer> {
  for await (const chunk of tar) {
    const archive = framing.write(chunk);
    if (archive > 0) yield archive === chunk.length ? chunk : chunk.subarray(0, archive);
  }
  framing.finish();
}

/** Whether the directory held by `fd` is empty (one entry read, not all). */
function isEmptyDirectory(fd: number): boolean {
  const dir = opendirSync(fdPath(fd));
  try {
    return dir.readSync() === null;
  } finally {
    dir.closeSync();
  }
}

/**
 * Extracts `tar` into `target`, an empty staging directory, with every directory left writable;
 * see extractTar. `spill` is a directory to create for what waits for the end (spill-files.ts:
 * its parent a path the volume's writers can not change), never inside `target`: removed here
 * when the extraction fails, else by the caller (`directories.remove()`) once it has applied the
 * directories' attributes or given up.
 */
export async function extractTree(tar: Readable, target: string, spill: string, opts: ExtractOptions = {}): Promise<ExtractedTree> {
  // The stream may fail (a cut gzip) while the target is checked, before anything reads it: that
  // is no unhandled 'error' event; reading it then throws the failure (archiveFault).
  tar.on('error', () => undefined);
  // The target as the caller names it (a pull: its staging directory's own descriptor); every
  // entry beneath it by descriptor (dir-fd.ts): a staged directory swapped for a symlink by whoever
  // else writes the volume is never written through.
  const rootFd = openSync(target, constants.O_RDONLY | constants.O_DIRECTORY);
  const dirs = new TreeDirs(rootFd, humanPath(target));
  let spilled: SpillFiles | null = null;
  try {
    // the hard-link rule counts on it: whatever is in there, this extraction made
    if (!isEmptyDirectory(rootFd)) throw new Error(`${humanPath(target)} is not empty: an archive is extracted into an empty staging directory`);
    spilled = SpillFiles.create(spill);
    return await extractInto(tar, dirs, spilled, opts);
  } catch (err) {
    try {
      spilled?.remove();
    } catch {
      // the extraction's own failure is the one to report; the caller removes its work directory too
    }
    throw humanError(err);
  } finally {
    dirs.close();
    unlabelFd(rootFd);
    closeSync(rootFd);
  }
}

/** `rel`'s parent directory and its own name. */
function splitRel(rel: string): { parent: string; base: string } {
  const slash = rel.lastIndexOf('/');
  return slash === -1 ? { parent: '', base: rel } : { parent: rel.slice(0, slash), base: rel.slice(slash + 1) };
}

async function extractInto(tar: Readable, dirs: TreeDirs, spill: SpillFiles, opts: ExtractOptions): Promise<ExtractedTree> {
  const root = fdPath(dirs.rootFd);
  const preserveOwner = ownersPreserved(opts);
  /** files, symlinks, fifos and devices made, as hashes: what a hard link may name (see linkTarget) */
  const linkable = new NameHashSet();
  const directories = new DeferredDirectories(spill);
  const result: ExtractResult = { entries: 0, files: 0, bytes: 0 };
  const syncs = new FileSyncs();
  const owners = new OwnersNotRestored(preserveOwner);

  /**
   * The descriptor of `rel`'s parent, missing parents made (as tar does: umask applies); a
   * symlink or non-directory on the way refuses the entry.
   */
  function parentOf(rel: string, name: string): { fd: number; base: string } {
    const { parent, base } = splitRel(rel);
    try {
      return { fd: dirs.dir(parent, 0o777), base };
    } catch (err) {
      if (!(err instanceof UnreachableDirError)) throw err;
      throw new UnsafeArchiveError(name, err.what === 'symlink' ? `its parent ${err.at} is a symlink` : `its parent ${err.at} is not a directory`);
    }
  }

  /**
   * Clears the way for a non-directory entry: a previous entry of that name is replaced, a
   * directory only while empty. Everything known of a directory removed goes with it, above all
   * its descriptor: a symlink taking its place must not be passed through.
   */
  function clearPath(parentFd: number, base: string, rel: string, name: string): void {
    const abs = fdPath(parentFd, base);
    const st = lstatSyncOrNull(abs);
    if (st === null) return;
    if (!st.isDirectory()) {
      unlinkSync(abs);
      return;
    }
    try {
      rmdirSync(abs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new UnsafeArchiveError(name, 'it would replace a directory that is not empty');
      throw err;
    }
    dirs.forget(rel);
    directories.replacedByEntry(rel);
  }

  async function setOwner(abs: string, a: EntryAttributes): Promise<void> {
    if (ownerApplies(preserveOwner, a)) await lchown(abs, a.uid, a.gid);
  }

  // A file's steps are synchronous calls: a pull extracts from a file already downloaded and
  // checked, so nothing waits on this thread, and a round trip through the thread pool per step
  // (behind the syncs of the files before) cost more than each step itself.
  async function writeFile(rel: string, h: Header, a: EntryAttributes, body: AsyncIterable<Buffer>): Promise<void> {
    const { fd: parentFd, base } = parentOf(rel, h.name);
    clearPath(parentFd, base, rel, h.name);
    const fd = openSync(fdPath(parentFd, base), FILE_FLAGS, 0o600);
    try {
      const holes = opts.sparse ? new SparseWriter(fd) : null;
      for await (const chunk of body) {
        if (holes) holes.write(chunk);
        else writeFullySync(fd, chunk);
        result.bytes += chunk.length;
        opts.onFileBytes?.(chunk.length);
      }
      holes?.end();
      if (ownerApplies(preserveOwner, a)) fchownSync(fd, a.uid, a.gid);
      fchmodSync(fd, a.mode);
      futimesSync(fd, fsTime(a.mtime), fsTime(a.mtime));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    linkable.add(rel);
    result.files++;
    await syncs.add(fd); // synced and closed meanwhile, the next entries extracted (durable-tree.ts)
  }

  /** A symlink at `rel` pointing at `target` must stay inside, unless keepOutsideSymlinks (checked again once all is extracted). */
  function checkSymlinkTarget(rel: string, name: string, target: string): void {
    if (!opts.keepOutsideSymlinks && !symlinkStaysInside(rel, target)) {
      throw new UnsafeArchiveError(name, `symlink target ${JSON.stringify(target.slice(0, 300))} leaves the target directory (--keep-outside-symlinks creates it, never writing through it)`);
    }
  }

  /** A symlink made at `rel` (its own entry or a hard link to one): resolved against the whole tree at the end. */
  function noteSymlink(rel: string): void {
    linkable.add(rel);
    if (!opts.keepOutsideSymlinks) spill.append(SYMLINKS_FILE, Buffer.from(rel));
  }

  /**
   * The hard link `name`'s target `targetRel`, made by an earlier entry: its hash among those of
   * the names made, then on the disk (a hash may collide): every parent a real directory (never
   * made here), the target a file, symlink, fifo or device. Its lstat, or a refusal.
   */
  function linkTarget(targetRel: string | null, name: string): Stats {
    const refuse = (): never => {
      throw new UnsafeArchiveError(name, 'hard link to something that is not a file, symlink, fifo or device extracted from this archive');
    };
    if (targetRel === null || targetRel === '' || !linkable.has(targetRel)) return refuse();
    const { parent, base } = splitRel(targetRel);
    let fd: number;
    try {
      fd = dirs.dir(parent);
    } catch (err) {
      if (err instanceof UnreachableDirError) return refuse();
      throw err;
    }
    const st = lstatSyncOrNull(fdPath(fd, base));
    if (st === null || !(st.isFile() || st.isSymbolicLink() || st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice())) return refuse();
    return st;
  }

  async function handle(entry: AsyncIterable<Buffer> & { header: Header; resume(): unknown }, mtimeField: Uint8Array): Promise<void> {
    const h = entry.header;
    // refused, never skipped (restorable-entry.ts, the rule the server applies on push too)
    const unrestorable = unrestorableReason(h);
    if (unrestorable !== null) throw new UnsafeArchiveError(h.name, `it can not be restored exactly: ${unrestorable}`);
    const rel = normalizeEntryName(h.name);
    if (rel === null) throw new UnsafeArchiveError(h.name, 'absolute path or ".." in name');
    const a = entryAttributes(h, mtimeField);
    const kind = entryKind(h);
    owners.note(h.name, a);
    if (rel === '') {
      if (kind !== 'directory') throw new UnsafeArchiveError(h.name, 'only a directory may name the root');
      directories.add('', a);
      return;
    }
    parentOf(rel, h.name); // refused early, whatever the entry
    /** the entry's place, through its parent's descriptor: valid until the next parentOf */
    const at = (): string => {
      const { fd, base } = parentOf(rel, h.name);
      return fdPath(fd, base);
    };
    const clear = (): void => {
      const { fd, base } = parentOf(rel, h.name);
      clearPath(fd, base, rel, h.name);
    };
    switch (kind) {
      case 'file':
        await writeFile(rel, h, a, entry);
        return;
      case 'directory': {
        const st = lstatSyncOrNull(at());
        if (st !== null && !st.isDirectory()) clear();
        if (st === null || !st.isDirectory()) mkdirSync(at(), { mode: 0o700 });
        directories.add(rel, a);
        return;
      }
      case 'symlink': {
        checkSymlinkTarget(rel, h.name, h.linkname ?? '');
        clear();
        await symlink(h.linkname!, at());
        noteSymlink(rel);
        await setOwner(at(), a);
        await lutimes(at(), fsTime(a.mtime), fsTime(a.mtime));
        return;
      }
      case 'link': {
        const targetRel = normalizeEntryName(h.linkname ?? '');
        const st = linkTarget(targetRel, h.name);
        const targetAt = (): string => {
          const { fd, base } = parentOf(targetRel!, h.name);
          return fdPath(fd, base);
        };
        if (st.isSymbolicLink()) checkSymlinkTarget(rel, h.name, await readlink(targetAt()));
        clear();
        // both parents held at once (TreeDirs keeps far more than two open)
        const from = targetAt();
        await link(from, at()); // link(2) does not follow a symlink: this links the symlink itself
        if (st.isSymbolicLink()) noteSymlink(rel);
        else linkable.add(rel);
        return;
      }
      case 'character-device':
      case 'block-device': {
        if (!opts.allowDevices) throw new UnsafeArchiveError(h.name, 'device files need --allow-devices');
        const uid = process.getuid?.();
        if (uid !== 0) throw new UnsafeArchiveError(h.name, `a device file can only be created by root (this runs as uid ${uid})`);
        clear();
        const { fd, base } = parentOf(rel, h.name);
        // mknod -m takes only the permission bits: setuid, setgid and sticky are set after the owner (chown clears them)
        await special(h.name, 'mknod', ['-m', (a.mode & 0o777).toString(8), fdPathForChild(fd, base), kind === 'character-device' ? 'c' : 'b', String(h.devmajor), String(h.devminor)]);
        await setOwner(at(), a);
        if ((a.mode & ~0o777) !== 0) chmodSpecialNode(at(), a.mode, h.name, (st) => (kind === 'character-device' ? st.isCharacterDevice() : st.isBlockDevice()));
        await lutimes(at(), fsTime(a.mtime), fsTime(a.mtime));
        linkable.add(rel);
        return;
      }
      case 'fifo': {
        clear();
        const { fd, base } = parentOf(rel, h.name);
        // mkfifo -m takes only the permission bits: setuid, setgid and sticky are set after the owner (chown clears them)
        await special(h.name, 'mkfifo', ['-m', (a.mode & 0o777).toString(8), fdPathForChild(fd, base)]);
        await setOwner(at(), a);
        if ((a.mode & ~0o777) !== 0) chmodSpecialNode(at(), a.mode, h.name, (st) => st.isFIFO());
        await lutimes(at(), fsTime(a.mtime), fsTime(a.mtime));
        linkable.add(rel);
        return;
      }
      default:
        // every type tar-stream knows is handled above (pax and GNU long-name records it consumes)
        throw new UnsafeArchiveError(h.name, `unsupported entry type ${String(h.type)}`);
    }
  }

  /** The target of the symlink at `rel`, for a message ('' when it can no longer be read). */
  async function symlinkTarget(rel: string): Promise<string> {
    try {
      const { parent, base } = splitRel(rel);
      return await readlink(fdPath(dirs.dir(parent), base));
    } catch {
      return '';
    }
  }

  const parser = tarParser();
  const framing = new TarFraming({ keepMtimeFields: true });
  const feeding = feedParser(framed(tar, framing), parser);
  feeding.catch(() => undefined);
  try {
    for await (const entry of parser) {
      result.entries++;
      await handle(entry as unknown as AsyncIterable<Buffer> & { header: Header; resume(): unknown }, framing.takeMtimeField());
      // drain what a non-file entry carried (normally nothing)
      for await (const chunk of entry as AsyncIterable<Buffer>) void chunk;
    }
    await feeding;
    // as the server checks it: the parser and the framing must have seen the same entries
    if (framing.entries !== result.entries) throw new Error('tar structure is inconsistent');
    await syncs.settle();
  } catch (err) {
    parser.destroy();
    await feeding.catch(() => undefined);
    await syncs.settle().catch(() => undefined);
    throw archiveFault(err);
  }

  // Links through links: only the extracted tree as a whole tells where a symlink leads (and
  // the order of the entries must not matter), so every one created is resolved now, before
  // directory modes are applied and before the caller moves anything into place.
  if (!opts.keepOutsideSymlinks) {
    for await (const record of spill.records(SYMLINKS_FILE)) {
      const rel = record.toString('utf8');
      const where = await resolveInside(root, rel);
      if (where === 'inside') continue;
      const target = await symlinkTarget(rel);
      throw new UnsafeArchiveError(
        rel,
        where === 'outside'
          ? `symlink target ${JSON.stringify(target.slice(0, 300))} leaves the target directory through the links it passes (--keep-outside-symlinks creates it, never writing through it)`
          : `symlink target ${JSON.stringify(target.slice(0, 300))} does not resolve within ${MAX_SYMLINK_HOPS} links (a loop); --keep-outside-symlinks restores it unchecked`,
      );
    }
  }

  const ownersWarning = owners.warning();
  if (ownersWarning !== null) opts.onWarning?.(ownersWarning);

  return { ...result, directories };
}

/**
 * Extracts `tar` into `target` (an empty directory), directories' attributes applied at the end
 * (see above); what waits for the end is spilled in a temporary directory of its own, removed
 * before this returns.
 */
export async function extractTar(tar: Readable, target: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  // as in extractTree, which hears the stream only once the spill directory is made: a decoder
  // failing meanwhile is the extraction's failure, not an unhandled 'error' event
  tar.on('error', () => undefined);
  const spillParent = await mkdtemp(join(tmpdir(), 'volreg-extract-'));
  try {
    const { directories, ...result } = await extractTree(tar, target, join(spillParent, 'spill'), opts);
    try {
      await directories.applyBelowRoot(target, opts);
    } finally {
      directories.remove();
    }
    directories.applyToRoot(target, opts);
    return result;
  } finally {
    await rm(spillParent, { recursive: true, force: true });
  }
}
