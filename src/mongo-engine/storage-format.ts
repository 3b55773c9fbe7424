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
 *   3  every file starts with a HEAD record (generation, store id), every snapshot ends in a
 *      SEAL: recovery refuses a missing, foreign or incomplete file (persistence.ts)
 */
export const STORAGE_FORMAT = 3;

const FILE = 'FORMAT';
const LINE = /^volreg-engine-format (\d+)\n?$/;

/**
 * The format `dbPath/FORMAT` names, or null when there is none (a new directory, or one written
 * before the marker). Refuses a directory a newer engine wrote, and a marker it cannot read.
 */
export function readStorageFormat(dbPath: string): number | null {
  const file = path.join(dbPath, FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read ${file}: ${(err as Error).message}; refusing to start`);
  }
  const m = LINE.exec(text);
  if (!m) throw new Error(`${file} is not a format marker this engine knows; refusing to start`);
  const found = Number(m[1]);
  if (found > STORAGE_FORMAT) throw newerFormat(dbPath, `storage format ${found}; this version reads up to ${STORAGE_FORMAT}`);
  return found;
}

/** Records this engine's format: once every file under dbPath is written the way it says. */
export async function writeStorageFormat(dbPath: string): Promise<void> {
  const file = path.join(dbPath, FILE);
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
