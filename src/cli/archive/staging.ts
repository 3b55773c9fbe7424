import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * volreg's own work directory inside a pull's target: `mkdtemp(<target>/.volreg-)` makes
 * `.volreg-` and six letters or digits, holding at most the download (`download`), the
 * staged tree (`root`), what its extraction keeps until the end (`spill`, spill-files.ts)
 * and, during the switch-over, the target's old contents (`old`, kept when they could not be
 * removed). One left behind by an interrupted pull does not make a target
 * "not empty"; anything else does, even a user's own `.volreg-something` (a pull without
 * --force must never delete it). Nor is one pushed (pack.ts), unless it holds old contents.
 */
export const STAGING_PREFIX = '.volreg-';
const STAGING_NAME = /^\.volreg-[A-Za-z0-9]{6}$/;
const STAGING_CONTENTS = new Set(['download', 'root', 'spill', 'old']);

/**
 * A staging directory an earlier pull left in `dir` under `name`, or null. `holdsOldContents`:
 * it was stopped during its switch-over, so `old` holds target contents it had moved aside.
 */
export async function stagingLeftover(dir: string, name: string): Promise<{ holdsOldContents: boolean } | null> {
  if (!STAGING_NAME.test(name)) return null;
  try {
    const st = await lstat(join(dir, name));
    if (!st.isDirectory()) return null;
    const entries = await readdir(join(dir, name));
    return entries.every((n) => STAGING_CONTENTS.has(n)) ? { holdsOldContents: entries.includes('old') } : null;
  } catch {
    return null;
  }
}

/** Is `name` in `dir` a staging directory an earlier pull left behind? */
export async function isStagingLeftover(dir: string, name: string): Promise<boolean> {
  return (await stagingLeftover(dir, name)) !== null;
}

/** The entries of `dir` that are not staging leftovers (what makes it "not empty"). */
export async function userEntries(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readdir(dir)) if (!(await isStagingLeftover(dir, n))) out.push(n);
  return out;
}
