import { constants } from 'node:fs';
import { access, lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Whether this process may change what it must in the data directory, checked once at start:
 * a directory it does not own (another user's, or root's after volreg ran as root before)
 * would otherwise be found only by the first push or purge that writes there, as a 503.
 *
 * Checked: the data directory, every directory of the layout in paths.ts (blobs/ with its
 * algorithm and two-hex directories, uploads/ with its sessions, quarantine/, db/) and the
 * files written in place (an upload session's, the embedded engine's). Not the blobs: they are
 * only read, renamed or unlinked, which their directory decides, and there may be millions.
 */
export interface NotWritable {
  /** relative to the data directory; a directory ends with `/` */
  path: string;
  uid: number;
}

/** Which directories of the layout hold which (entries' children are walked as given). */
const LAYOUT: ReadonlyArray<{ dir: string; children: 'dirs' | 'files' | 'none'; grandchildren: 'dirs' | 'files' | 'none' }> = [
  { dir: '', children: 'none', grandchildren: 'none' },
  { dir: 'blobs', children: 'dirs', grandchildren: 'dirs' },
  { dir: 'uploads', children: 'dirs', grandchildren: 'files' },
  { dir: 'quarantine', children: 'dirs', grandchildren: 'none' },
  { dir: 'db', children: 'files', grandchildren: 'none' },
];

const DIR_ACCESS = constants.W_OK | constants.X_OK;
const FILE_ACCESS = constants.R_OK | constants.W_OK;

export async function notWritable(root: string): Promise<NotWritable[]> {
  const found: NotWritable[] = [];
  const check = async (rel: string, isDir: boolean): Promise<void> => {
    const abs = join(root, rel);
    try {
      await access(abs, isDir ? DIR_ACCESS : FILE_ACCESS);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // removed meanwhile
      const st = await lstat(abs).catch(() => null);
      found.push({ path: isDir ? `${rel}/`.replace(/^\//, '') : rel, uid: st?.uid ?? -1 });
    }
  };
  const entries = async (rel: string, kind: 'dirs' | 'files'): Promise<string[]> => {
    const list = await readdir(join(root, rel), { withFileTypes: true }).catch(() => []);
    return list.filter((e) => (kind === 'dirs' ? e.isDirectory() : e.isFile())).map((e) => join(rel, e.name));
  };
  for (const { dir, children, grandchildren } of LAYOUT) {
    const st = await lstat(join(root, dir)).catch(() => null);
    if (!st?.isDirectory()) continue;
    await check(dir, true);
    if (children === 'none') continue;
    for (const child of await entries(dir, children)) {
      await check(child, children === 'dirs');
      if (children === 'dirs' && grandchildren !== 'none') {
        for (const grandchild of await entries(child, grandchildren)) await check(grandchild, grandchildren === 'dirs');
      }
    }
  }
  return found;
}

/**
 * Creates the data directory if needed and refuses one this process may not change, with an
 * error saying what to do (a message for the operator, thrown as is).
 */
export async function ensureWritableDataDir(root: string): Promise<void> {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  try {
    await mkdir(root, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    throw new Error(`cannot create the data directory ${root} (${code}): this user (uid ${uid}) may not create it there; create it for this user: mkdir -p ${root} && chown ${uid}:${gid} ${root}`);
  }
  const found = await notWritable(root);
  if (found.length === 0) return;
  const shown = found.slice(0, 3).map((f) => `${f.path || './'} (owned by uid ${f.uid})`).join(', ');
  const more = found.length > 3 ? ` and ${found.length - 3} more` : '';
  throw new Error(
    `the data directory ${root} holds what this user (uid ${uid}) may not change: ${shown}${more}; ` +
      `was volreg run as another user (root?) on it before? Give the data directory to this user: chown -R ${uid}:${gid} ${root}`,
  );
}
