import { isUtf8 } from 'node:buffer';
import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pack, type Header, type Pack } from 'tar-stream';
import { writeOrWait } from '../../domain/stream-write.ts';
import { headerAttributes } from '../../domain/volumes/entry-attributes.ts';
import { holdsReplacementCharacter } from '../../domain/volumes/restorable-entry.ts';
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
 * Any failure (such a name, a changed file, a file that vanished, EIO) ends the stream with
 * that error.
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

interface Walked {
  rel: string;
  abs: string;
}

async function* walk(root: string, rel: string): AsyncGenerator<Walked> {
  const dir = rel === '' ? root : join(root, rel);
  // as bytes: a name that is not UTF-8 would otherwise come back with U+FFFD and not be found
  const raw = await readdir(dir, { encoding: 'buffer' });
  const names = raw.map((b) => faithfulName(b, () => `${dir}/${escapeNameBytes(b)}`, 'name'));
  names.sort();
  for (const name of names) {
    const childRel = rel === '' ? name : `${rel}/${name}`;
    yield { rel: childRel, abs: join(root, childRel) };
  }
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
/** O_NONBLOCK: should the name have become a fifo since its lstat, the open does not hang (as in GNU tar). */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

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
 */
async function addFile(p: Pack, header: Partial<Header> & { name: string }, abs: string, before: BigIntStats, opts: PackOptions): Promise<void> {
  const file = await open(abs, READ_FLAGS);
  try {
    let sink!: ReturnType<Pack['entry']>;
    const finished = new Promise<void>((resolve, reject) => {
      sink = p.entry({ ...header, size: Number(before.size) }, (err) => (err ? reject(err) : resolve()));
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
  } finally {
    await file.close();
  }
}

/**
 * The name an inode with several names was first packed under (then this one becomes a `link`
 * entry to it), or undefined, noting `rel` as its first name. Only files and symlinks: a
 * restore links nothing else.
 */
function firstNameOf(seen: Map<string, string>, st: BigIntStats, rel: string): string | undefined {
  if (st.nlink <= 1n || !(st.isFile() || st.isSymbolicLink())) return undefined;
  const key = `${st.dev}:${st.ino}`;
  const first = seen.get(key);
  if (first === undefined) seen.set(key, rel);
  return first;
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

async function packTree(p: Pack, root: string, opts: PackOptions): Promise<void> {
  // bigint: nanosecond mtimes (entry-attributes.ts rounds them down) and exact change checks
  const rootStat = await lstat(root, { bigint: true });
  if (!rootStat.isDirectory()) throw new Error(`${root} is not a directory`);
  await addEntry(p, { name: './', type: 'directory', ...headerAttributes(rootStat) });
  const seenInodes = new Map<string, string>();
  const stack: Array<AsyncGenerator<Walked>> = [walk(root, '')];
  while (stack.length > 0) {
    const next = await stack[stack.length - 1]!.next();
    if (next.done) {
      stack.pop();
      continue;
    }
    const { rel, abs } = next.value;
    if (!rel.includes('/') && (await skipsLeftover(root, rel, opts))) continue;
    const st = await lstat(abs, { bigint: true });
    const base = headerAttributes(st);
    const first = firstNameOf(seenInodes, st, rel);
    if (first !== undefined) {
      await addEntry(p, { ...base, name: rel, type: 'link', linkname: first });
    } else if (st.isDirectory()) {
      await addEntry(p, { ...base, name: `${rel}/`, type: 'directory' });
      stack.push(walk(root, rel));
    } else if (st.isSymbolicLink()) {
      const target = await readlink(abs, { encoding: 'buffer' });
      const linkname = faithfulName(target, () => `the symlink ${abs} -> ${escapeNameBytes(target)}`, 'target');
      await addEntry(p, { ...base, name: rel, type: 'symlink', linkname });
    } else if (st.isFile()) {
      await addFile(p, { ...base, name: rel, type: 'file' }, abs, st, opts);
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      await addEntry(p, { ...base, name: rel, type: st.isCharacterDevice() ? 'character-device' : 'block-device', ...devNumbers(Number(st.rdev)) });
    } else if (st.isFIFO()) {
      await addEntry(p, { ...base, name: rel, type: 'fifo' });
    } else {
      opts.onWarning?.(`skipping ${rel}: sockets cannot be archived`);
    }
  }
}

/** The uncompressed tar of `root`, as a stream. A read error ends the stream with that error. */
export function packDirectory(root: string, opts: PackOptions = {}): Readable {
  const p = pack();
  packTree(p, root, opts).then(
    () => p.finalize(),
    (err: unknown) => p.destroy(err as Error),
  );
  return Readable.from(p as AsyncIterable<Buffer>, { objectMode: false });
}
