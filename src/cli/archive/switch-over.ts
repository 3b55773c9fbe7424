import { mkdir, readdir, rename } from 'node:fs/promises';
import { chmodDir } from './dir-fd.ts';

/**
 * The switch-over of a pull: the target directory's contents replaced by the staged ones, all
 * or nothing. Every move is a rename within one filesystem (staging and aside are in the pull's
 * work directory, inside the target):
 *
 *   target/*  -> aside/*     the old contents moved aside, not deleted yet
 *   staging/* -> target/*    the new ones moved in
 *
 * If a move fails, the moves done are undone (new entries back to staging, old ones back to the
 * target) and that move's error is thrown, so the target is as it was. Only after a complete
 * switch does the caller delete the old contents (dir-fd.ts, removeTreeAt).
 *
 * The caller names all three by their own descriptors (dir-fd.ts, fdPath; the target is a path
 * only root may change, a volume's `_data`, opened once): the entries moved are direct children
 * of those three, so whoever else writes the volume can not make a move take anything from or put
 * anything outside it, and no path given to rename(2) is longer than a descriptor's and a name,
 * however long the target's own path.
 */
export interface ReplaceOptions {
  /** the entry of the target to leave where it is (the pull's own work directory) */
  keep: string;
  onWarning?: (message: string) => void;
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/**
 * rename(2). Moving a directory to another parent rewrites its `..`, which needs write permission
 * on the directory itself: a read-only one of the user's own gets u+w for the move, and its mode
 * back after (chmod leaves its mtime alone).
 */
async function moveEntry(from: Buffer, to: Buffer): Promise<void> {
  try {
    await rename(from, to);
    return;
  } catch (err) {
    if (errorCode(err) !== 'EACCES') throw err;
    let before = 0;
    try {
      if (!chmodDir(from, (mode) => ((before = mode) & 0o200 ? mode : mode | 0o200)) || (before & 0o200) !== 0) throw err;
    } catch {
      throw err; // not the user's own (or not a read-only directory): the rename's EACCES is what went wrong
    }
    try {
      await rename(from, to);
    } catch (again) {
      try {
        chmodDir(from, () => before);
      } catch {
        // the move's own error is the one to report
      }
      throw again;
    }
    chmodDir(to, () => before);
  }
}

/** `dir`/`name`, with the name as its bytes. */
function inDir(dir: string, name: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${dir}/`), name]);
}

/** The names in `dir` as bytes (a volume's names need not be UTF-8: as text they would name nothing), sorted. */
async function namesIn(dir: string): Promise<Buffer[]> {
  return (await readdir(dir, { encoding: 'buffer' })).sort(Buffer.compare);
}

/** Replaces the contents of `target` (but `keep`) by those of `staging`, moving the old ones into `aside`. */
export async function replaceContents(target: string, staging: string, aside: string, opts: ReplaceOptions): Promise<void> {
  await mkdir(aside, { recursive: true });
  // sorted: the same archive and target switch over in the same order every time
  const keep = Buffer.from(opts.keep);
  const old = (await namesIn(target)).filter((n) => !n.equals(keep));
  const incoming = await namesIn(staging);
  const movedOut: Buffer[] = [];
  const movedIn: Buffer[] = [];
  try {
    for (const n of old) {
      await moveEntry(inDir(target, n), inDir(aside, n));
      movedOut.push(n);
    }
    for (const n of incoming) {
      await moveEntry(inDir(staging, n), inDir(target, n));
      movedIn.push(n);
    }
  } catch (err) {
    const back: Array<[Buffer, Buffer]> = [
      ...movedIn.reverse().map((n): [Buffer, Buffer] => [inDir(target, n), inDir(staging, n)]),
      ...movedOut.reverse().map((n): [Buffer, Buffer] => [inDir(aside, n), inDir(target, n)]),
    ];
    for (const [from, to] of back) {
      // the switch's own error is the one to report; an undo that fails is a warning naming where the entry is
      await moveEntry(from, to).catch((undo: unknown) => opts.onWarning?.(`could not move ${from.toString()} back to ${to.toString()}: ${(undo as Error).message}`));
    }
    throw err;
  }
}
