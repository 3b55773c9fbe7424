import { isUtf8 } from 'node:buffer';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pack, type Header, type Pack } from 'tar-stream';
import { writeOrWait } from '../../domain/stream-write.ts';
import { headerAttributes } from '../../domain/volumes/entry-attributes.ts';
import { holdsReplacementCharacter } from '../../domain/volumes/restorable-entry.ts';

/**
 * Packs a directory into a tar stream, streaming file contents (nothing is held whole in
 * memory). The root itself is the first entry (`./`), so a restore gets its mode and mtime
 * back. Entry names are relative, sorted, directories end in `/`. Kept: modes, mtimes (whole
 * seconds), numeric owners (as entry-attributes.ts writes them: pax records for what ustar can
 * not hold), symlinks (as links), hard links (as `link` entries to the first path), device
 * files and fifos. Sockets cannot be archived and are skipped with a warning.
 *
 * A name (or symlink target) that is not valid UTF-8 cannot be archived faithfully (tar-stream,
 * and the restore side, read names as UTF-8 and would turn each bad byte into U+FFFD, so
 * `caf\xe9` and `caf\xe8` would come back as one file): packing fails with an error naming the
 * path, its bad bytes escaped. So does a name holding U+FFFD itself, which a restore refuses.
 * Any failure (such a name, a file that vanished, EIO) ends the stream with that error.
 */
export class UnarchivableNameError extends Error {
  override name = 'UnarchivableNameError';
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

async function addFile(p: Pack, header: Partial<Header> & { name: string }, abs: string, opts: PackOptions): Promise<void> {
  let sink!: ReturnType<Pack['entry']>;
  const finished = new Promise<void>((resolve, reject) => {
    sink = p.entry(header, (err) => (err ? reject(err) : resolve()));
  });
  finished.catch(() => undefined); // awaited below; a failure before then is reported there
  // The entry's failure is reported by the callback above. Its 'error' event, when the packer is
  // torn down under it (a refused upload), has no other listener, and an unheard 'error' would
  // take the process down: a backup's other volumes with it.
  sink.on('error', () => undefined);
  const file = createReadStream(abs, { highWaterMark: 256 * 1024 });
  try {
    for await (const chunk of file) {
      opts.onFileBytes?.((chunk as Buffer).length);
      await writeOrWait(sink, chunk as Buffer);
      if (sink.destroyed) break; // the packer was torn down (a refused upload): `finished` says why
    }
    sink.end(null);
  } catch (err) {
    sink.destroy(err as Error);
    throw err;
  }
  await finished;
}

async function packTree(p: Pack, root: string, opts: PackOptions): Promise<void> {
  const rootStat = await lstat(root);
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
    const st = await lstat(abs);
    const base = headerAttributes(st);
    if (st.isDirectory()) {
      await addEntry(p, { ...base, name: `${rel}/`, type: 'directory' });
      stack.push(walk(root, rel));
    } else if (st.isSymbolicLink()) {
      const target = await readlink(abs, { encoding: 'buffer' });
      const linkname = faithfulName(target, () => `the symlink ${abs} -> ${escapeNameBytes(target)}`, 'target');
      await addEntry(p, { ...base, name: rel, type: 'symlink', linkname });
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? seenInodes.get(key) : undefined;
      if (first !== undefined) {
        await addEntry(p, { ...base, name: rel, type: 'link', linkname: first });
        continue;
      }
      if (st.nlink > 1) seenInodes.set(key, rel);
      await addFile(p, { ...base, name: rel, type: 'file', size: st.size }, abs, opts);
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      await addEntry(p, { ...base, name: rel, type: st.isCharacterDevice() ? 'character-device' : 'block-device', ...devNumbers(st.rdev) });
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
