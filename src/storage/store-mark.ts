import { randomUUID } from 'node:crypto';
import { link, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDir, isMissing } from './fs-ops.ts';
import { storeMarkPath } from './paths.ts';

/**
 * The mark in `blobs/` naming the metadata database its blobs are recorded in (the rule that
 * uses it is metadata/store-binding.ts). Kept inside `blobs/`, so a copy of `blobs/` (the
 * README's running backup copies `db/` and `blobs/`) carries it along.
 */

/** The id the mark names, or null when there is none. */
export async function readStoreMark(root: string): Promise<string | null> {
  try {
    const id = (await readFile(storeMarkPath(root), 'utf8')).trim();
    return id === '' ? null : id;
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
}

/**
 * Writes the mark naming `id` unless there is one, and returns the id the mark names now:
 * written whole beside it, synced, then linked into place (a link never replaces), so of
 * processes marking at once one wins and the others read its id.
 */
export async function claimStoreMark(root: string, id: string): Promise<string> {
  const path = storeMarkPath(root);
  const tmp = `${path}.${randomUUID()}.tmp`;
  const fh = await open(tmp, 'wx');
  try {
    await fh.writeFile(`${id}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
    await fsyncDir(dirname(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  return (await readStoreMark(root)) ?? id;
}
