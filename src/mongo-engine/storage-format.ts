import fs from 'node:fs';
import path from 'node:path';
import { syncDirectory } from './journal.ts';
import { newerFormat } from './journal-format.ts';

/**
 * The version of the on-disk layout under dbPath, kept in `dbPath/FORMAT`, so that an engine
 * never reads (and then compacts away) what a newer one wrote in a way it does not know: it
 * refuses to start instead. A newer engine raises the number when what it writes would be
 * misread by this one.
 *
 *   1  snapshot and journal records (PUT, REMOVE, DDL)
 *   2  every journal write batch ends in a COMMIT record
 */
export const STORAGE_FORMAT = 2;

const FILE = 'FORMAT';
const LINE = /^volreg-engine-format (\d+)\n?$/;

/** Refuses a directory a newer engine wrote; else records this engine's format (before any write). */
export async function claimStorageFormat(dbPath: string): Promise<void> {
  const file = path.join(dbPath, FILE);
  let text: string | null = null;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text !== null) {
    const m = LINE.exec(text);
    if (!m) throw new Error(`${file} is not a format marker this engine knows; refusing to start`);
    const found = Number(m[1]);
    if (found > STORAGE_FORMAT) throw newerFormat(dbPath, `storage format ${found}; this version reads up to ${STORAGE_FORMAT}`);
    if (found === STORAGE_FORMAT) return;
  }
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, `volreg-engine-format ${STORAGE_FORMAT}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  await syncDirectory(dbPath);
}
