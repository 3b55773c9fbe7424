import { createHash } from 'node:crypto';
import { chmod, link, lstat, mkdir, readdir, readFile, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pack } from 'tar-stream';

/**
 * Test helpers for volume snapshots: a sample tree with everything a volume can hold, a
 * description of a tree to compare two of them, and hostile tars built entry by entry.
 */
export interface TreeEntry {
  type: 'dir' | 'file' | 'symlink' | 'fifo' | 'character-device' | 'block-device';
  mode: number;
  mtime: number;
  sha256?: string;
  target?: string;
  ino?: number;
  /** a device's major and minor numbers */
  rdev?: number;
}

/** Builds the sample tree: nested dirs, an empty dir, symlinks, unicode names, modes, a hard link, a large file. */
export async function makeSampleTree(root: string, largeBytes = 3 * 1024 * 1024 + 17): Promise<void> {
  await mkdir(join(root, 'a/b/c'), { recursive: true });
  await mkdir(join(root, 'empty'));
  await mkdir(join(root, 'private'), { mode: 0o700 });
  await writeFile(join(root, 'a/b/c/deep.txt'), 'deep content\n');
  await writeFile(join(root, 'ünïcødé ☃ файл.txt'), 'snow\n');
  await writeFile(join(root, 'private/secret.key'), 'k');
  await chmod(join(root, 'private/secret.key'), 0o600);
  await writeFile(join(root, 'run.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(root, 'run.sh'), 0o755);
  const big = Buffer.alloc(largeBytes);
  let x = 0x9e3779b9;
  for (let i = 0; i < big.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    big[i] = x & 0xff;
  }
  await writeFile(join(root, 'a/large.bin'), big);
  await symlink('b/c/deep.txt', join(root, 'a/link-to-deep'));
  await symlink('../run.sh', join(root, 'a/up-link'));
  await link(join(root, 'run.sh'), join(root, 'a/hardlink-to-run'));
  await writeFile(join(root, 'n'.repeat(120) + '.long-name'), 'long');
  const old = new Date('2021-03-04T05:06:07Z');
  await utimes(join(root, 'a/b/c/deep.txt'), old, old);
  await utimes(join(root, 'a/b'), old, old);
}

/** A comparable description of a tree (mtimes in whole seconds, as tar keeps them). */
export async function describeTree(root: string): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  async function visit(rel: string): Promise<void> {
    const names = (await readdir(rel === '' ? root : join(root, rel))).sort();
    for (const name of names) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, r);
      const st = await lstat(abs);
      const base = { mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isDirectory()) {
        out[r] = { type: 'dir', ...base };
        await visit(r);
      } else if (st.isSymbolicLink()) {
        out[r] = { type: 'symlink', mode: 0, mtime: base.mtime, target: await readlink(abs) };
      } else if (st.isFIFO()) {
        out[r] = { type: 'fifo', ...base };
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        // never read: a device's contents are its driver's (/dev/zero never ends)
        out[r] = { type: st.isCharacterDevice() ? 'character-device' : 'block-device', ...base, rdev: st.rdev };
      } else {
        out[r] = { type: 'file', ...base, sha256: createHash('sha256').update(await readFile(abs)).digest('hex') };
      }
    }
  }
  await visit('');
  return out;
}

export interface HostileEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'fifo';
  linkname?: string;
  body?: string | Buffer;
  mode?: number;
  /** defaults to now */
  mtime?: Date;
  devmajor?: number;
  devminor?: number;
  /** pax records written before the entry (tar-stream adds path and linkpath) */
  pax?: Record<string, string>;
}

/** A tar of regular files, the same bytes each time for the same files (mtime 0): an image layer. */
export function tarOfFiles(files: Record<string, Buffer>): Promise<Buffer> {
  return buildTar(Object.entries(files).map(([name, body]) => ({ name, body, mtime: new Date(0) })));
}

/** A tar built entry by entry with tar-stream (so it can say anything a hostile tar says). */
export async function buildTar(entries: HostileEntry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(Buffer.from(c as Uint8Array));
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) =>
      p.entry(
        { name: e.name, type: e.type ?? 'file', linkname: e.linkname, mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644), mtime: e.mtime, devmajor: e.devmajor, devminor: e.devminor, pax: e.pax },
        e.body ?? '',
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}
