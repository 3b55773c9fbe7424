import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type { DigestAlgorithm } from '../domain/digest.ts';
import { writeFully } from '../storage/fs-ops.ts';

/**
 * A new file that a download is written into, hashed as it is written. The hash and `bytes`
 * cover exactly what reached the file (a chunk counts once its write is done), so a download
 * broken mid-way can go on from `bytes` with the digest still right: that is what makes a resumed
 * pull as safe as one in a single piece.
 */
export class DigestingFile {
  private hash: Hash;
  /** bytes written and hashed */
  bytes = 0;
  /** the write that failed, if one did: the file, not the connection, is the trouble then */
  failure: Error | null = null;
  private inFlight: Promise<void> = Promise.resolve();

  private constructor(
    private readonly fh: FileHandle,
    private readonly algorithm: DigestAlgorithm,
  ) {
    this.hash = createHash(algorithm);
  }

  /** Creates `path`, which must not exist yet (readable by its owner only). */
  static async create(path: string, algorithm: DigestAlgorithm): Promise<DigestingFile> {
    return new DigestingFile(await open(path, 'wx', 0o600), algorithm);
  }

  /** A writable for one reply's body; several, one after another, continue the same file. */
  writable(): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        this.inFlight = this.append(chunk);
        this.inFlight.then(() => cb(), cb);
      },
    });
  }

  /** Waits for a write a broken pipeline left under way, so `bytes` is final. */
  async settled(): Promise<void> {
    await this.inFlight.catch(() => undefined);
  }

  /** Back to an empty file: a registry that answered a resumed request with the whole content. */
  async restart(): Promise<void> {
    await this.settled();
    await this.fh.truncate(0);
    this.hash = createHash(this.algorithm);
    this.bytes = 0;
  }

  digest(): string {
    return `${this.algorithm}:${this.hash.digest('hex')}`;
  }

  async close(): Promise<void> {
    await this.settled();
    await this.fh.close();
  }

  private async append(chunk: Buffer): Promise<void> {
    try {
      // at its offset: after a restart the file's own position is still where the last write ended
      await writeFully(this.fh, chunk, this.bytes);
    } catch (err) {
      this.failure = err as Error;
      throw err;
    }
    this.hash.update(chunk);
    this.bytes += chunk.length;
  }
}
