import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * volreg's own work directory inside a pull's target: `mkdtemp(<target>/.volreg-)` makes
 * `.volreg-` and six letters or digits, holding at most the download (`download`), the
 * staged tree (`root`) and, during the switch-over, the target's old contents (`old`, kept
 * when they could not be removed). One left behind by an interrupted pull does not make a target
 * "not empty"; anything else does, even a user's own `.volreg-something` (a pull without
 * --force must never delete it).
 */
export const STAGING_PREFIX = '.volreg-';
const STAGING_NAME = /^\.volreg-[A-Za-z0-9]{6}$/;
const STAGING_CONTENTS = new Set(['download', 'root', 'old']);

/** Is `name` in `dir` a staging directory an earlier pull left behind? */
export async function isStagingLeftover(dir: string, name: string): Promise<boolean> {
  if (!STAGING_NAME.test(name)) return false;
  try {
    const st = await lstat(join(dir, name));
    if (!st.isDirectory()) return false;
    return (await readdir(join(dir, name))).every((n) => STAGING_CONTENTS.has(n));
  } catch {
    return false;
  }
}

/** The entries of `dir` that are not staging leftovers (what makes it "not empty"). */
export async function userEntries(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readdir(dir)) if (!(await isStagingLeftover(dir, n))) out.push(n);
  return out;
}
