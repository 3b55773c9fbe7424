import { parse as parseYaml } from 'yaml';
import { isTag } from '../domain/names.ts';
import { userEntries } from './archive/staging.ts';
import { readSmallFile, SmallFileError } from './small-file.ts';
import { dockerVolumeProblem } from './volumes-root.ts';

/**
 * The docker-volume-manager lock file (`volumes.dvm.lock`), and the rules
 * `volreg restore` follows. Two lock file forms are read:
 *
 *   # YAML (or the same as JSON)
 *   downstream:
 *     app-data: tag:v1.4      # restore snapshot <prefix>app-data:v1.4
 *     db-data: "tag:2024-05-01"
 *     cache:                  # no tag: skipped with a warning
 *   upstream:                 # volumes this host produces; restore ignores them
 *     uploads: {}
 *
 *   # the classic line form: <volume> <upstream|downstream> [tag:<tag>]
 *   app-data   downstream  tag:v1.4
 *
 * The `tags` file beside the volumes, and what a volume name may be, are in volumes-root.ts.
 */
export class LockFileError extends Error {
  override name = 'LockFileError';
}

export interface LockEntry {
  volume: string;
  /** the locked tag; null when the volume is not locked to one */
  tag: string | null;
  /** why this entry cannot be used (bad volume name, bad lock value); restore reports it as an error */
  problem: string | null;
}

function entryFor(volume: string, value: unknown): LockEntry {
  const nameProblem = dockerVolumeProblem(volume);
  if (nameProblem !== null) return { volume, tag: null, problem: nameProblem };
  if (value === null || value === undefined || value === '') return { volume, tag: null, problem: null };
  let text: string | undefined;
  if (typeof value === 'string') text = value;
  else if (typeof value === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    if (typeof o.tag === 'string') text = `tag:${o.tag}`;
    else if (Object.keys(o).length === 0) return { volume, tag: null, problem: null };
  }
  if (text === undefined) return { volume, tag: null, problem: 'lock value must be "tag:<tag>"' };
  const m = /^tag:(.*)$/.exec(text.trim());
  if (!m) return { volume, tag: null, problem: `unknown lock option ${JSON.stringify(text.slice(0, 100))} (expected "tag:<tag>")` };
  const tag = m[1]!.trim();
  if (!isTag(tag)) return { volume, tag: null, problem: `invalid tag ${JSON.stringify(tag.slice(0, 130))}` };
  return { volume, tag, problem: null };
}

function parseLines(text: string): LockEntry[] {
  const out: LockEntry[] = [];
  // a volume listed twice would be restored twice, the second line's tag over the first's (as
  // YAML refuses a key given twice)
  const lineOf = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    // not /#.*$/: `.` stops at the \r of a CRLF file, and the comment would stay
    const line = raw.slice(0, raw.includes('#') ? raw.indexOf('#') : undefined).trim();
    if (line === '') return;
    const [volume, role, option, ...rest] = line.split(/\s+/);
    if (!volume || (role !== 'downstream' && role !== 'upstream') || rest.length > 0) {
      throw new LockFileError(`line ${i + 1}: expected "<volume> <upstream|downstream> [tag:<tag>]"`);
    }
    const first = lineOf.get(volume);
    if (first !== undefined) throw new LockFileError(`line ${i + 1}: volume ${JSON.stringify(volume)} is already listed on line ${first}`);
    lineOf.set(volume, i + 1);
    if (role === 'downstream') out.push(entryFor(volume, option ?? null));
  });
  return out;
}

/** The largest lock file read: far more than thousands of volumes take. */
export const MAX_LOCK_FILE_BYTES = 1024 * 1024;

/**
 * A lock file's text: the operator's file, a symlink to it followed. Only a regular file of at
 * most MAX_LOCK_FILE_BYTES (small-file.ts): a fifo is refused at once, never waited on.
 */
export async function readLockFile(path: string): Promise<string> {
  let text: string | null;
  try {
    text = await readSmallFile(path, { what: 'lock file', maxBytes: MAX_LOCK_FILE_BYTES, followSymlink: true });
  } catch (err) {
    throw err instanceof SmallFileError ? new LockFileError(err.message) : err;
  }
  if (text === null) throw new LockFileError(`lock file ${path} does not exist`);
  return text;
}

/** The downstream volumes of a lock file, in file order. A file that is neither form is a LockFileError. */
export function parseLockFile(text: string): LockEntry[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (yamlError) {
    try {
      return parseLines(text);
    } catch (lineError) {
      // a file that starts its mapping as YAML does is YAML with a mistake, not a bad line
      if (/^\s*(downstream|upstream|version)\s*:/m.test(text)) {
        throw new LockFileError(`not valid YAML: ${(yamlError as Error).message.split('\n')[0]}`);
      }
      throw lineError;
    }
  }
  if (typeof doc === 'string' || doc === null || doc === undefined) return parseLines(text);
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new LockFileError('lock file must be a mapping with a "downstream" key');
  const root = doc as Record<string, unknown>;
  for (const key of Object.keys(root)) {
    if (key !== 'downstream' && key !== 'upstream' && key !== 'version') throw new LockFileError(`unknown key ${JSON.stringify(key)} in lock file`);
  }
  const downstream = root.downstream ?? {};
  if (typeof downstream !== 'object' || downstream === null || Array.isArray(downstream)) {
    throw new LockFileError('"downstream" must map volume names to "tag:<tag>"');
  }
  return Object.entries(downstream as Record<string, unknown>).map(([volume, value]) => entryFor(volume, value));
}

/** The repository a volume's snapshots live in: `<prefix><volume>` (lower-cased, as OCI names must be). */
export function volumeRepository(prefix: string, volume: string): string {
  return `${prefix}${volume}`.toLowerCase();
}

/**
 * Volumes (distinct names) that would share a repository (`Data` and `data`: the repository is
 * lower-cased), as a message, or null when there are none. Run together, one would overwrite
 * the other's snapshot (backup) or receive the other's content (restore).
 */
export function repositoryClash(prefix: string, volumes: Iterable<string>): string | null {
  const byRepo = new Map<string, string[]>();
  for (const v of volumes) {
    const repo = volumeRepository(prefix, v);
    const names = byRepo.get(repo) ?? [];
    if (!names.includes(v)) names.push(v);
    byRepo.set(repo, names);
  }
  const clashes = [...byRepo].filter(([, names]) => names.length > 1);
  if (clashes.length === 0) return null;
  const list = clashes.map(([repo, names]) => `${names.map((n) => JSON.stringify(n)).join(' and ')} both map to the repository ${JSON.stringify(repo)}`).join('; ');
  return `${list} (repository names are lower-cased); handle them in separate runs with different --prefix values`;
}

export type RestoreDecision =
  | { action: 'skip'; reason: string }
  | { action: 'error'; reason: string }
  | { action: 'up-to-date'; reason: string }
  | { action: 'restore'; tag: string; replace: boolean };

/**
 * Is a directory missing or empty? Only volreg's own staging leftovers (`.volreg-XXXXXX` as a
 * pull makes them, see archive/staging.ts) do not count; a user's `.volreg-data` does.
 */
export async function isEmptyVolume(dir: string): Promise<boolean> {
  try {
    return (await userEntries(dir)).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
}

/**
 * What restore does with one lock entry, before asking the registry (which can still turn a
 * `restore` or an `error` into a missing-snapshot error), given the volume's directory (null:
 * there is none yet; anything but a directory there is refused before, volumes-root.ts):
 * - no tag: skipped with a warning;
 * - the tags file says the volume already holds the locked tag and it is not empty: up to date,
 *   with or without `force` (to fetch it again, `volreg pull --force`);
 * - a non-empty volume is replaced only with `force`, else error.
 * Entries with a problem never get here: restore refuses the whole lock file first.
 */
export async function decideRestore(entry: LockEntry, volumeDir: string | null, currentTag: string | undefined, force: boolean): Promise<RestoreDecision> {
  if (entry.problem !== null) return { action: 'error', reason: entry.problem };
  if (entry.tag === null) return { action: 'skip', reason: 'not locked to a tag' };
  const empty = volumeDir === null || (await isEmptyVolume(volumeDir));
  if (!empty && currentTag === entry.tag) return { action: 'up-to-date', reason: '(the volume already holds it)' };
  if (!empty && !force) return { action: 'error', reason: 'volume is not empty (use --force to replace it)' };
  return { action: 'restore', tag: entry.tag, replace: !empty };
}
