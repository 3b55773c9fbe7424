import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { lstat, mkdir, readdir, readlink, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { replaceFile } from '../storage/fs-ops.ts';
import { fdPath, humanError, isNotADirectory, labelFd, O_PATH, unlabelFd } from './archive/dir-fd.ts';
import { notWritable } from './archive/transfer.ts';
import { readSmallFile, SmallFileError } from './small-file.ts';
import { DEFAULT_TAGS_LOCK_WAIT_SECONDS, tagsLockProblem, withTagsLock } from './tags-lock.ts';

/**
 * What `backup` and `restore` keep in the volumes root (--volumes-root, default /volumes):
 *
 *   <volumes-root>/
 *     <volume>/              one directory per volume, named by the Docker volume name grammar
 *     tags                   one line `<volume> <tag>` per volume: the snapshot tag it holds
 *     .tags.<16 hex>.tmp     the next tags file while it is written (renamed over `tags`)
 *     .tags.lock             held (flock) around each read-modify-write of `tags` (tags-lock.ts)
 *
 * The root is the operator's directory, but it may be one a container writes too (a volume
 * mounted as the root, or the root of a shared bind mount), while the agent runs as root. So
 * nothing in it is reached through a symlink: the tags file is read only as a regular file and
 * replaced by a new file created exclusively under an unpredictable name, and a volume's
 * directory is opened once, refusing a link in its place (withVolumeDir), then reached by that
 * descriptor only.
 */
export const TAGS_FILE = 'tags';

/** The largest tags file read: one line per volume, far more than thousands of volumes take (as the lock file). */
export const MAX_TAGS_FILE_BYTES = 1024 * 1024;

// Docker's volume name grammar: a name is one directory of the volumes root, never a path
const DOCKER_VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * Why a volume name given to backup or restore (on the command line or in a lock file) can not
 * be one, as a message, or null: one rule for both, so that what backup takes restore can
 * restore. Not a Docker volume name (`a/b` would be a directory below another volume, `..` the
 * root's parent), or named as the tags file beside the volumes (its directory would be that file).
 */
export function dockerVolumeProblem(volume: string): string | null {
  if (!DOCKER_VOLUME_NAME.test(volume)) return 'not a valid Docker volume name (a letter or digit, then letters, digits, "_", "." or "-")';
  if (volume === TAGS_FILE) return `a volume named "${TAGS_FILE}" can not be handled: the tags file of the volumes root has that name`;
  return null;
}

/** A tags file that can not be read or replaced: what stands there, and what to do, in one line. */
export class TagsFileError extends Error {
  override name = 'TagsFileError';
}

const HINTS: Record<SmallFileError['kind'], string> = {
  symlink: ': replace it with a regular file',
  directory: `: the tags file of the volumes root goes there (move the volume named "${TAGS_FILE}" elsewhere)`,
  special: ': the tags file of the volumes root goes there (remove it)',
  'too-large': '',
  unreadable: '',
};

/**
 * Why backup or restore can not work in this volumes root, as a message, or null: it is empty
 * (`''` would put the volumes and the tags file in the current directory), not a directory, or
 * its tags file can not be read (readTagsFile). A root that does not exist yet is fine.
 */
export async function volumesRootProblem(volumesRoot: string): Promise<string | null> {
  if (volumesRoot === '') return '--volumes-root (VOLREG_VOLUMES_ROOT) is empty: name the directory holding the volumes';
  // the operator's path, followed as given
  const st = await stat(volumesRoot).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    if (err.code === 'ENOTDIR') return 'not a directory';
    throw err;
  });
  if (st === null) return null;
  if (st === 'not a directory' || !st.isDirectory()) return `--volumes-root (VOLREG_VOLUMES_ROOT) ${volumesRoot} is not a directory`;
  try {
    await readTagsFile(volumesRoot);
  } catch (err) {
    if (err instanceof TagsFileError) return err.message;
    throw err;
  }
  return tagsLockProblem(volumesRoot);
}

export function parseTagsFile(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const [volume, tag] = raw.trim().split(/\s+/);
    if (volume && tag) map.set(volume, tag);
  }
  return map;
}

/** The tags file's lines (none when it does not exist); a TagsFileError when it is not a regular file of at most MAX_TAGS_FILE_BYTES. */
export async function readTagsFile(volumesRoot: string): Promise<Map<string, string>> {
  try {
    const text = await readSmallFile(join(volumesRoot, TAGS_FILE), { what: 'tags file', maxBytes: MAX_TAGS_FILE_BYTES, followSymlink: false });
    return text === null ? new Map() : parseTagsFile(text);
  } catch (err) {
    if (err instanceof SmallFileError) throw new TagsFileError(`${err.message}${HINTS[err.kind]}`);
    throw err;
  }
}

/**
 * Sets `<volume> <tag>` lines in the tags file, or removes a volume's line (tag null), keeping
 * the others; atomically and durably (a new temporary file, fsync, rename over the old one).
 * The read, change and rename happen under the tags lock (tags-lock.ts), so that two runs in one
 * volumes root keep each other's lines; a TagsLockTimeoutError when another run holds it for
 * more than `lockWaitSeconds`.
 */
export async function updateTagsFile(
  volumesRoot: string,
  updates: ReadonlyMap<string, string | null>,
  opts: { lockWaitSeconds?: number } = {},
): Promise<void> {
  if (updates.size === 0) return;
  const volumes = [...updates.keys()].join(', ');
  await withTagsLock(volumesRoot, opts.lockWaitSeconds ?? DEFAULT_TAGS_LOCK_WAIT_SECONDS, `the tags file line of ${volumes} was not changed`, async () => {
    const map = await readTagsFile(volumesRoot);
    let changed = false;
    for (const [v, t] of updates) {
      if (t === null ? !map.has(v) : map.get(v) === t) continue;
      if (t === null) map.delete(v);
      else map.set(v, t);
      changed = true;
    }
    if (!changed) return;
    const text = [...map].map(([v, t]) => `${v} ${t}\n`).join('');
    // Not `.tags.<pid>.tmp`: run in a container the agent is pid 1, and a link planted under that
    // name would have the file it points to truncated. The rename replaces whatever took the name
    // `tags` since it was read (a link too), never writing through it.
    const tmp = join(volumesRoot, `.${TAGS_FILE}.${randomBytes(8).toString('hex')}.tmp`);
    await replaceFile(join(volumesRoot, TAGS_FILE), tmp, text, { exclusive: true });
    await removeTagsLeftovers(volumesRoot);
  });
}

/** The names updateTagsFile writes the next tags file under. */
const TAGS_TEMPORARY = new RegExp(`^\\.${TAGS_FILE}\\.[0-9a-f]{16}\\.tmp$`);

/**
 * How old a temporary tags file must be to count as left by a run that died. One lives for the
 * write, fsync and rename of a few lines (milliseconds, seconds on a struggling disk). The tags
 * lock keeps runs of this volreg out while one is written, but a younger one may still be a live
 * run's of a volreg from before the lock, during an upgrade.
 */
export const TAGS_LEFTOVER_AGE_MS = 60 * 60 * 1000;

/**
 * Removes the temporary tags files that runs killed between writing one and renaming it (kill -9,
 * a power loss) left in the volumes root. Only what such a run leaves is removed: a regular file
 * of that name's pattern, of this user's, with no other name (a hard link is someone else's
 * file), older than TAGS_LEFTOVER_AGE_MS. A symlink, directory, fifo, another user's file or a
 * younger one (a concurrent run's) is left alone; unlink(2) never follows a link nor removes a
 * directory, whatever took the name since its lstat. Best effort: a name that can not be removed
 * now is tried again by the next run that writes the tags file.
 */
export async function removeTagsLeftovers(volumesRoot: string): Promise<void> {
  const names = await readdir(volumesRoot).catch(() => [] as string[]);
  const now = Date.now();
  const uid = process.geteuid?.();
  for (const name of names) {
    if (!TAGS_TEMPORARY.test(name)) continue;
    const path = join(volumesRoot, name);
    const st = await lstat(path).catch(() => null);
    if (st === null || !st.isFile() || st.uid !== uid || st.nlink !== 1 || now - st.mtimeMs < TAGS_LEFTOVER_AGE_MS) continue;
    await unlink(path).catch(() => undefined);
  }
}

/** A volume's directory that backup or restore will not use: what stands there, in one line. */
export class VolumeDirError extends Error {
  override name = 'VolumeDirError';
}

/**
 * Runs `use` with the directory of a volume, `<volumes-root>/<volume>`, held open: `use` gets a
 * path (`/proc/self/fd/<fd>`, dir-fd.ts) that names that directory whatever takes its name
 * meanwhile, or null when it does not exist (and `create` is false; with `create`, a missing one
 * is made first). Errors `use` throws name the volume's path, not the descriptor's (humanError);
 * its warnings are to go through humanPath before `use` returns.
 *
 * The one rule for every volume directory the agent touches: never through a symlink. Whoever
 * writes the volumes root (a container whose volume is mounted as the root, a bind mount a
 * container shares, a user owning a plain directory) could otherwise put `app-data -> /etc` there
 * and have a root `restore` replace /etc's contents, or a `backup` read /root into the store. A
 * symlink (dangling too) or anything but a directory there is a VolumeDirError, before anything is
 * read or written; a swap after the open changes nothing, as the descriptor is used from then on.
 */
export async function withVolumeDir<T>(volumesRoot: string, volume: string, opts: { create: boolean }, use: (dir: string | null) => Promise<T>): Promise<T> {
  const path = join(volumesRoot, volume);
  let fd = await openVolumeDir(path);
  if (fd === null && opts.create) {
    // mkdir(2) never follows a link in the name's place (EEXIST): the open below judges it
    await mkdir(volumesRoot, { recursive: true })
      .then(() => mkdir(path))
      .catch((err: NodeJS.ErrnoException) => (err.code === 'EEXIST' ? undefined : Promise.reject(notWritable(err, path))));
    fd = await openVolumeDir(path);
  }
  if (fd === null) return use(null);
  labelFd(fd, path);
  try {
    return await use(fdPath(fd));
  } catch (err) {
    throw humanError(err);
  } finally {
    unlabelFd(fd);
    closeSync(fd);
  }
}

/** The volume's directory opened O_PATH (no permission on it needed, as a path would not), or null when nothing is there. */
async function openVolumeDir(path: string): Promise<number | null> {
  try {
    return openSync(path, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    if (!isNotADirectory(err)) throw err;
  }
  const st = await lstat(path).catch(() => null);
  if (st?.isSymbolicLink()) {
    const target = await readlink(path).catch(() => '?');
    throw new VolumeDirError(
      `${path} is a symlink to ${JSON.stringify(target)}, not a directory: a volume's directory is never reached through a link (put the volume's directory itself there)`,
    );
  }
  throw new VolumeDirError(`${path} is not a directory`);
}
