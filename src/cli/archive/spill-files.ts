import { closeSync, constants, createReadStream, mkdirSync, openSync } from 'node:fs';
import { DIR_FLAGS, fdPath, humanPath, labelFd, removeTreeAt, unlabelFd } from './dir-fd.ts';
import { writeFullySync } from './write-fully.ts';

/** Records held in memory, all files together, before they are appended to their files. */
const BUFFERED_BYTES = 1024 * 1024;

/** No record is longer (a path and a few numbers): a longer length is a damaged file, not a record to buffer. */
const MAX_RECORD = 1024 * 1024;

const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

/**
 * What an extraction must remember of its entries until its end (each directory's attributes,
 * each symlink's name), kept on the disk instead of in memory, so that a pull's memory does not
 * grow with the number of entries: append-only files of length-prefixed records in a directory
 * of their own, read back in the order written. The directory is the caller's to place (the
 * pull's work directory, never the tree extracted) and is removed by `remove`, in every outcome.
 *
 * It lies in the volume, which a container may write meanwhile, so it is held by descriptor
 * (dir-fd.ts) and its files are opened with O_NOFOLLOW: a symlink put in their place is never
 * written or read through. What a record says is checked by its reader.
 */
export class SpillFiles {
  private readonly pending = new Map<string, Buffer[]>();
  private buffered = 0;
  private fd: number | null;

  private constructor(
    private readonly parent: string,
    private readonly name: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  /**
   * Creates the directory `path`, which must not exist yet; its parent is a path the volume's
   * writers can not change (a held directory's fdPath, or one outside the volume).
   */
  static create(path: string): SpillFiles {
    const slash = path.lastIndexOf('/');
    mkdirSync(path, { mode: 0o700 });
    const fd = labelFd(openSync(path, DIR_FLAGS), humanPath(path));
    return new SpillFiles(path.slice(0, slash), path.slice(slash + 1), fd);
  }

  /**
   * Adds `record` at the end of `file` (a plain name within the directory). The record is copied
   * (with its length, into one buffer): it is written out later, and a caller that reused its
   * buffer meanwhile would otherwise have its next record's bytes spilled in its place.
   */
  append(file: string, record: Uint8Array): void {
    let list = this.pending.get(file);
    if (list === undefined) this.pending.set(file, (list = []));
    const framed = Buffer.allocUnsafe(4 + record.length);
    framed.writeUInt32LE(record.length, 0);
    framed.set(record, 4);
    list.push(framed);
    this.buffered += framed.length;
    if (this.buffered >= BUFFERED_BYTES) this.flush();
  }

  private at(file: string): string {
    if (this.fd === null) throw new Error('the spill files were removed');
    return fdPath(this.fd, file);
  }

  /** Writes out what is held in memory (synchronously, as the extractor's other steps). */
  private flush(): void {
    for (const [file, list] of this.pending) {
      const data = Buffer.concat(list);
      const fd = openSync(this.at(file), APPEND_FLAGS, 0o600);
      try {
        writeFullySync(fd, data);
      } finally {
        closeSync(fd);
      }
    }
    this.pending.clear();
    this.buffered = 0;
  }

  /** The records of `file` in the order appended (none when nothing was). */
  async *records(file: string): AsyncGenerator<Buffer> {
    this.flush();
    let fd: number;
    try {
      fd = openSync(this.at(file), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    let held: Buffer = Buffer.alloc(0);
    for await (const chunk of createReadStream('', { fd, highWaterMark: 64 * 1024 }) as AsyncIterable<Buffer>) {
      held = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
      let at = 0;
      while (held.length - at >= 4) {
        const length = held.readUInt32LE(at);
        if (length > MAX_RECORD) throw new Error(`${humanPath(this.at(file))} is damaged: a record of ${length} bytes`);
        if (held.length - at - 4 < length) break;
        yield held.subarray(at + 4, at + 4 + length);
        at += 4 + length;
      }
      held = held.subarray(at);
    }
    if (held.length > 0) throw new Error(`${humanPath(this.at(file))} ends in the middle of a record`);
  }

  /** Closes and removes the directory; again is nothing. */
  remove(): void {
    this.pending.clear();
    this.buffered = 0;
    if (this.fd === null) return;
    unlabelFd(this.fd);
    closeSync(this.fd);
    this.fd = null;
    removeTreeAt(this.parent, this.name);
  }
}
