import { isUtf8 } from 'node:buffer';
import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pack, type Header, type Pack } from 'tar-stream';
import { writeOrWait } from '../../domain/stream-write.ts';
import { headerAttributes, withFileSize } from '../../domain/volumes/entry-attributes.ts';
import { symlinkStaysInside } from '../../domain/volumes/entry-safety.ts';
import { holdsReplacementCharacter } from '../../domain/volumes/restorable-entry.ts';
import { DIR_FLAGS, fdPath, humanError, isNotADirectory, labelFd, O_PATH, unlabelFd } from './dir-fd.ts';
import { stagingLeftover } from './staging.ts';

/**
 * Packs a directory into a tar stream, streaming file contents (nothing is held whole in
 * memory). The root itself is the first entry (`./`), so a restore gets its mode and mtime
 * back. Entry names are relative, sorted, directories end in `/`. Kept: modes, mtimes (whole
 * seconds), numeric owners (as entry-attributes.ts writes them: pax records for what ustar can
 * not hold), symlinks (as links), hard links of files and symlinks (as `link` entries to the
 * first path), device files and fifos. Sockets cannot be archived and are skipped with a warning,
 * as is the work directory an interrupted pull left at the top (skipsLeftover).
 *
 * A file that changes while it is read (it grows, shrinks or is written to) fails the packing
 * (FileChangedError, naming it): its entry would hold neither version, or disagree with its
 * header. Exactly the size in the header is read, then the file's stat is compared with the
 * one the header was made from, as GNU tar's "file changed as we read it" does.
 *
 * A name (or symlink target) that is not valid UTF-8 cannot be archived faithfully (tar-stream,
 * and the restore side, read names as UTF-8 and would turn each bad byte into U+FFFD, so
 * `caf\xe9` and `caf\xe8` would come back as one file): packing fails with an error naming the
 * path, its bad bytes escaped. So does a name holding U+FFFD itself, which a restore refuses.
 * An entry removed between its parent's listing and its own reading (a live volume's temporary
 * file) is left out with a warning, as GNU tar does: what is archived is still whole. Any other
 * failure (such a name, a changed file, EACCES, EIO) ends the stream with that error. Entries a
 * pull restores only with a flag (outside symlinks, devices) and sparse files are archived
 * with a warning (PackNotes).
 */
export class UnarchivableNameError extends Error {
  override name = 'UnarchivableNameError';
}

export class FileChangedError extends Error {
  override name = 'FileChangedError';
  constructor(
    readonly path: string,
    how: string,
  ) {
    super(`${path} changed while it was being read (${how}); stop what writes to the volume, or back up a snapshot of it, and push again`);
  }
}

/** A name's bytes for a message: valid UTF-8 as text, each other byte (and controls, `\`) escaped. */
export function escapeNameBytes(bytes: Buffer): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    let len = 0;
    for (let n = 1; n <= 4 && i + n <= bytes.length; n++) {
      if (isUtf8(bytes.subarray(i, i + n))) {
        len = n;
        break;
      }
    }
    const b = bytes[i]!;
    if (len === 0 || (len === 1 && (b < 0x20 || b === 0x7f || b === 0x5c))) {
      out += b === 0x5c ? '\\\\' : `\\x${b.toString(16).padStart(2, '0')}`;
      i++;
    } else {
      out += bytes.subarray(i, i + len).toString('utf8');
      i += len;
    }
  }
  return out;
}

/** The name as a string, or an UnarchivableNameError naming `where` (what holds it) when it cannot be archived faithfully. */
function faithfulName(bytes: Buffer, where: () => string, what: string): string {
  if (!isUtf8(bytes)) {
    throw new UnarchivableNameError(`cannot archive ${where()}: its ${what} is not valid UTF-8 (bad bytes shown as \\xNN; rename it, e.g. with convmv)`);
  }
  const text = bytes.toString('utf8');
  if (holdsReplacementCharacter(text)) {
    throw new UnarchivableNameError(`cannot archive ${where()}: its ${what} holds U+FFFD (the replacement character), which a restore refuses as a name that lost bytes`);
  }
  return text;
}

export interface PackOptions {
  onWarning?: (message: string) => void;
  /** called with the bytes of each file as they are read, for progress */
  onFileBytes?: (n: number) => void;
}

/**
 * Did the entry go (removed, or a parent replaced by a file) between its parent's listing and
 * its own lstat, open or listing? On a live volume that is no damage: the snapshot leaves out
 * what is no longer there, with a warning, as GNU tar does ("File removed before we read it").
 */
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function vanishedWarning(rel: string): string {
  return `skipping ${rel}: it was removed while the volume was being read`;
}

interface Walked {
  rel: string;
  /** the entry's name in its directory */
  name: string;
  /** the directory holding it, open (dir-fd.ts): the entry is reached through it, never by its path */
  parent: FileHandle;
  /** the volume's path of the entry, for messages */
  abs: string;
}

/**
 * The entries of the directory `dir` (open; packTree closes it once its walk ends): listed through its
 * descriptor, so a directory of the volume swapped for a symlink after it was opened still lists
 * its own entries, never those of where the symlink points.
 */
async function* walk(root: string, rel: string, dir: FileHandle, opts: PackOptions): AsyncGenerator<Walked> {
  {
    let raw: Buffer[];
    try {
      // as bytes: a name that is not UTF-8 would otherwise come back with U+FFFD and not be found
      raw = await readdir(fdPath(dir.fd), { encoding: 'buffer' });
    } catch (err) {
      // its directory entry is archived already: it stays, empty, as in GNU tar
      if (rel === '' || !vanished(err)) throw err;
      opts.onWarning?.(`the contents of ${rel}: it was removed while the volume was being read`);
      return;
    }
    const where = rel === '' ? root : join(root, rel);
    const names = raw.map((b) => faithfulName(b, () => `${where}/${escapeNameBytes(b)}`, 'name'));
    names.sort();
    for (const name of names) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      yield { rel: childRel, name, parent: dir, abs: join(root, childRel) };
    }
  }
}

/**
 * Opens the directory an lstat found, through its parent's descriptor, and checks it is the one
 * the lstat saw: null when it was removed since, a FileChangedError when something else (a
 * symlink, another directory) took its name, so the walk never follows a swap out of the volume.
 */
async function openWalkedDir(entry: Walked, st: BigIntStats): Promise<FileHandle | null> {
  let dir: FileHandle;
  try {
    dir = await open(fdPath(entry.parent.fd, entry.name), DIR_FLAGS);
  } catch (err) {
    if (isNotADirectory(err)) throw new FileChangedError(entry.abs, 'the directory was replaced by something else');
    if (vanished(err)) return null;
    throw err;
  }
  const now = await dir.stat({ bigint: true }).catch(async (err: unknown) => {
    await dir.close();
    throw err;
  });
  if (now.dev !== st.dev || now.ino !== st.ino) {
    await dir.close();
    throw new FileChangedError(entry.abs, 'another directory took its name');
  }
  labelFd(dir.fd, entry.abs);
  return dir;
}

function devNumbers(rdev: number): { devmajor: number; devminor: number } {
  // Linux encoding of dev_t (see makedev(3))
  const devmajor = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const devminor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
  return { devmajor, devminor };
}

function addEntry(p: Pack, header: Header | (Partial<Header> & { name: string })): Promise<void> {
  return new Promise((resolve, reject) => p.entry(header, (err) => (err ? reject(err) : resolve())));
}

const READ_CHUNK = 256 * 1024;
/**
 * The file is first named by an O_PATH descriptor (no open of a device or fifo that took its
 * name since the lstat), checked against the lstat, and only then opened for reading, through
 * that descriptor: exactly the inode checked. O_NONBLOCK and O_NOCTTY as GNU tar opens files.
 */
const NAME_FLAGS = O_PATH | constants.O_NOFOLLOW;
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * Opens for reading the regular file an lstat found (`before`), through its parent's descriptor;
 * a FileChangedError before a byte is read when anything else took its name (a symlink to a
 * file outside the volume, a device, another file), null when it was removed.
 */
async function openWalkedFile(entry: Walked, before: BigIntStats): Promise<FileHandle | null> {
  let named: FileHandle;
  try {
    named = await open(fdPath(entry.parent.fd, entry.name), NAME_FLAGS);
  } catch (err) {
    if (vanished(err)) return null;
    throw err;
  }
  try {
    const now = await named.stat({ bigint: true });
    if (!now.isFile() || now.dev !== before.dev || now.ino !== before.ino) throw new FileChangedError(entry.abs, 'another file took its name');
    labelFd(named.fd, entry.abs); // an EACCES of the open below names the file
    return await open(fdPath(named.fd), READ_FLAGS).catch((err: unknown) => Promise.reject(humanError(err)));
  } finally {
    unlabelFd(named.fd);
    await named.close();
  }
}

/** How a file's stat after reading differs from the one its header was made from, or null. */
function changeSince(before: BigIntStats, after: BigIntStats): string | null {
  if (after.dev !== before.dev || after.ino !== before.ino) return 'another file took its name';
  if (after.size !== before.size) return `it ${after.size > before.size ? 'grew' : 'shrank'} from ${before.size} to ${after.size} bytes`;
  if (after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs) return 'it was modified';
  return null;
}

/**
 * Adds a regular file: exactly the `before.size` bytes its header announces, read from one open
 * descriptor whose fstat must then still match `before` (the lstat the header was made from).
 * False when it was removed before it could be opened (nothing added).
 */
async function addFile(p: Pack, header: Partial<Header> & { name: string }, entry: Walked, before: BigIntStats, opts: PackOptions): Promise<boolean> {
  const abs = entry.abs;
  const file = await openWalkedFile(entry, before);
  if (file === null) {
    opts.onWarning?.(vanishedWarning(header.name));
    return false;
  }
  try {
    let sink!: ReturnType<Pack['entry']>;
    const finished = new Promise<void>((resolve, reject) => {
      sink = p.entry(withFileSize(header, Number(before.size)), (err) => (err ? reject(err) : resolve()));
    });
    finished.catch(() => undefined); // awaited below; a failure before then is reported there
    // The entry's failure is reported by the callback above. Its 'error' event, when the packer is
    // torn down under it (a refused upload), has no other listener, and an unheard 'error' would
    // take the process down: a backup's other volumes with it.
    sink.on('error', () => undefined);
    try {
      let left = Number(before.size);
      // a torn down packer (a refused upload) takes nothing more: `finished` says why
      while (left > 0 && !sink.destroyed) {
        const want = Math.min(READ_CHUNK, left);
        const { bytesRead, buffer } = await file.read(Buffer.allocUnsafe(want), 0, want, null);
        if (bytesRead === 0) throw new FileChangedError(abs, `it shrank below ${before.size} bytes`);
        left -= bytesRead;
        opts.onFileBytes?.(bytesRead);
        await writeOrWait(sink, buffer.subarray(0, bytesRead));
      }
      const change = sink.destroyed ? null : changeSince(before, await file.stat({ bigint: true }));
      if (change !== null) throw new FileChangedError(abs, change);
      sink.end(null);
    } catch (err) {
      sink.destroy(err as Error);
      throw err;
    }
    await finished;
    return true;
  } finally {
    await file.close();
  }
}

/**
 * The name an inode with several names was first packed under (then this one becomes a `link`
 * entry to it), or undefined, noting `rel` as its first name. Files, symlinks, fifos and
 * devices: what a restore links (safe-extract.ts); a directory has no second name.
 */
function firstNameOf(seen: Map<string, string>, st: BigIntStats, rel: string): string | undefined {
  if (st.nlink <= 1n || !(st.isFile() || st.isSymbolicLink() || st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice())) return undefined;
  const key = `${st.dev}:${st.ino}`;
  const first = seen.get(key);
  if (first === undefined) seen.set(key, rel);
  return first;
}

/** Undoes firstNameOf's note of `rel` when it could not be archived: a later name becomes the first. */
function forget(seen: Map<string, string>, st: BigIntStats, rel: string): void {
  const key = `${st.dev}:${st.ino}`;
  if (seen.get(key) === rel) seen.delete(key);
}

/**
 * Is `name` at the top of the tree the work directory an interrupted pull left there (staging.ts)?
 * Its partial download and extraction are volreg's, never the volume's: skipped, with a warning.
 * One that holds old contents (the pull was stopped while switching them over) is the volume's
 * data: archived, with a warning naming it.
 */
async function skipsLeftover(root: string, name: string, opts: PackOptions): Promise<boolean> {
  const leftover = await stagingLeftover(root, name);
  if (leftover === null) return false;
  if (leftover.holdsOldContents) {
    opts.onWarning?.(`${name} holds contents an interrupted pull moved aside (in ${name}/old): archived with the rest; see what they are, then remove the directory`);
    return false;
  }
  opts.onWarning?.(`skipping ${name}: the partial download and extraction of an interrupted pull, not the volume's contents (a later pull or restore removes it, or remove it by hand)`);
  return true;
}

/** Warnings of one kind while packing: the first few in full, then how many more at the end. */
class CappedWarnings {
  private count = 0;
  constructor(
    private readonly opts: PackOptions,
    private readonly what: string,
  ) {}

  note(message: string): void {
    if (++this.count <= WARNINGS_SHOWN) this.opts.onWarning?.(message);
  }

  finish(): void {
    if (this.count > WARNINGS_SHOWN) this.opts.onWarning?.(`${this.count - WARNINGS_SHOWN} more ${this.what}`);
  }
}

const WARNINGS_SHOWN = 3;
/** A file this much smaller on disk than its size is called sparse (a few blocks of slack are not). */
const SPARSE_SLACK = 1024n * 1024n;

/**
 * What a push warns about, as it is archived: entries a pull restores only with a flag
 * (symlinks leading out of the volume, device files), and sparse files, whose holes are
 * archived as zeros and written out in full by a restore.
 */
interface PackNotes {
  outsideLinks: CappedWarnings;
  devices: CappedWarnings;
  sparse: CappedWarnings;
}

function packNotes(opts: PackOptions): PackNotes {
  return {
    outsideLinks: new CappedWarnings(opts, 'symlinks pointing outside the volume'),
    devices: new CappedWarnings(opts, 'device files'),
    sparse: new CappedWarnings(opts, 'sparse files'),
  };
}

function noteEntry(notes: PackNotes, rel: string, st: BigIntStats, linkname?: string): void {
  if (linkname !== undefined && !symlinkStaysInside(rel, linkname)) {
    notes.outsideLinks.note(`${rel} -> ${linkname} points outside the volume: archived as a symlink, which pull and restore create only with --keep-outside-symlinks`);
  } else if (st.isCharacterDevice() || st.isBlockDevice()) {
    notes.devices.note(`${rel} is a device file: archived, and created by pull and restore only with --allow-devices (as root)`);
  } else if (st.isFile() && st.blocks * 512n + SPARSE_SLACK < st.size) {
    notes.sparse.note(`${rel} is sparse (${st.blocks * 512n} of ${st.size} bytes on disk): its holes are archived as zeros, and a restore writes all ${st.size} bytes unless it runs with --sparse`);
  }
}

async function packTree(p: Pack, root: string, opts: PackOptions): Promise<void> {
  const notes = packNotes(opts);
  // The root is the operator's path, followed as given; everything beneath it by descriptor.
  const rootDir = await open(root, constants.O_RDONLY | constants.O_DIRECTORY).catch((err: unknown) => {
    throw (err as NodeJS.ErrnoException).code === 'ENOTDIR' ? new Error(`${root} is not a directory`) : err;
  });
  const stack: Array<{ entries: AsyncGenerator<Walked>; dir: FileHandle }> = [];
  const stillOpen = new Set<FileHandle>([rootDir]);
  labelFd(rootDir.fd, root);
  try {
    // bigint: nanosecond mtimes (entry-attributes.ts rounds them down) and exact change checks
    const rootStat = await rootDir.stat({ bigint: true });
    await addEntry(p, { name: './', type: 'directory', ...headerAttributes(rootStat) });
    const seenInodes = new Map<string, string>();
    stack.push({ entries: walk(root, '', rootDir, opts), dir: rootDir });
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const next = await top.entries.next();
      if (next.done) {
        stack.pop();
        stillOpen.delete(top.dir);
        unlabelFd(top.dir.fd);
        await top.dir.close();
        continue;
      }
      const entry = next.value;
      const { rel } = entry;
      if (!rel.includes('/') && (await skipsLeftover(fdPath(rootDir.fd), rel, opts))) continue;
      const st = await lstat(fdPath(entry.parent.fd, entry.name), { bigint: true }).catch((err: unknown) => (vanished(err) ? null : Promise.reject(err)));
      if (st === null) {
        opts.onWarning?.(vanishedWarning(rel));
        continue;
      }
      const base = headerAttributes(st);
      const first = firstNameOf(seenInodes, st, rel);
      if (first !== undefined) {
        await addEntry(p, { ...base, name: rel, type: 'link', linkname: first });
      } else if (st.isDirectory()) {
        const dir = st.dev === rootStat.dev ? await openWalkedDir(entry, st) : null;
        if (dir === null && st.dev === rootStat.dev) {
          opts.onWarning?.(vanishedWarning(rel));
          continue;
        }
        await addEntry(p, { ...base, name: `${rel}/`, type: 'directory' });
        // GNU tar's --one-file-system: a mount point's own entry is archived, not what is mounted there
        if (dir === null) opts.onWarning?.(`${rel} is on another filesystem (a mount point in the volume): archived as an empty directory, its contents left out`);
        else {
          stillOpen.add(dir);
          stack.push({ entries: walk(root, rel, dir, opts), dir });
        }
      } else if (st.isSymbolicLink()) {
        const target = await readlink(fdPath(entry.parent.fd, entry.name), { encoding: 'buffer' }).catch((err: unknown) => (vanished(err) ? null : Promise.reject(err)));
        if (target === null) {
          opts.onWarning?.(vanishedWarning(rel));
          forget(seenInodes, st, rel);
          continue;
        }
        const linkname = faithfulName(target, () => `the symlink ${entry.abs} -> ${escapeNameBytes(target)}`, 'target');
        noteEntry(notes, rel, st, linkname);
        await addEntry(p, { ...base, name: rel, type: 'symlink', linkname });
      } else if (st.isFile()) {
        if (await addFile(p, { ...base, name: rel, type: 'file' }, entry, st, opts)) noteEntry(notes, rel, st);
        else forget(seenInodes, st, rel);
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        noteEntry(notes, rel, st);
        await addEntry(p, { ...base, name: rel, type: st.isCharacterDevice() ? 'character-device' : 'block-device', ...devNumbers(Number(st.rdev)) });
      } else if (st.isFIFO()) {
        await addEntry(p, { ...base, name: rel, type: 'fifo' });
      } else {
        opts.onWarning?.(`skipping ${rel}: sockets cannot be archived`);
      }
    }
    for (const kind of Object.values(notes)) kind.finish();
  } catch (err) {
    throw humanError(err); // while the descriptors it names are still labelled
  } finally {
    // a failed walk: the directories it still held
    for (const dir of stillOpen) {
      unlabelFd(dir.fd);
      await dir.close().catch(() => undefined);
    }
  }
}

/** A file or directory of the volume the agent may not read: what to do about it, not only the errno. */
export class UnreadableEntryError extends Error {
  override name = 'UnreadableEntryError';
  readonly code = 'EACCES';
  constructor(path: string) {
    super(`cannot read ${path}: permission denied; push a volume as a user who may read all of it (root, or its owner)`);
  }
}

function readFailure(err: unknown): Error {
  const e = humanError(err) as NodeJS.ErrnoException;
  return (e.code === 'EACCES' || e.code === 'EPERM') && typeof e.path === 'string' ? new UnreadableEntryError(e.path) : (err as Error);
}

/** The uncompressed tar of `root`, as a stream. A read error ends the stream with that error. */
export function packDirectory(root: string, opts: PackOptions = {}): Readable {
  const p = pack();
  packTree(p, root, opts).then(
    () => p.finalize(),
    (err: unknown) => p.destroy(readFailure(err)),
  );
  return Readable.from(p as AsyncIterable<Buffer>, { objectMode: false });
}
