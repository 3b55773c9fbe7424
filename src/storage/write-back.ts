import { open } from 'node:fs/promises';

/**
 * Background write-back of upload data files.
 *
 * Appends do not wait for the disk: bytes are in the page cache when a chunk is acknowledged,
 * and a commit fsyncs before anything becomes visible. Left alone, the kernel would keep a
 * whole upload dirty until that final fsync, which then writes everything while the client
 * waits. So after every FLUSH_EVERY_BYTES written to a session (and at the end of each
 * append) an fdatasync starts on its own descriptor, at most one per session at a time, and
 * the disk works while more bytes arrive.
 *
 * A failed background fdatasync is remembered: Linux marks the pages clean after reporting
 * the error once, so a later fsync on another descriptor could succeed over lost bytes. The
 * commit asks `settle`, which rethrows it. A flush that could not even open the file (out of
 * descriptors for a moment) lost nothing: the pages stay dirty for the next flush or the
 * commit's own fsync, so it is no failure.
 */
const FLUSH_EVERY_BYTES = 16 * 1024 * 1024;

interface SessionFlush {
  key: string;
  path: string;
  unflushed: number;
  running: Promise<void> | null;
  failure: { err: unknown } | null;
}

/** What a flush needs of the filesystem (tests put failures in). */
export interface FlushFile {
  datasync(): Promise<void>;
  close(): Promise<void>;
}

export class WriteBack {
  private readonly sessions = new Map<string, SessionFlush>();

  constructor(private readonly openFile: (path: string) => Promise<FlushFile> = (path) => open(path, 'r')) {}

  /** `n` more bytes of `key` (data file `path`) reached the page cache. */
  wrote(key: string, path: string, n: number): void {
    const s = this.session(key, path);
    s.unflushed += n;
    if (s.unflushed >= FLUSH_EVERY_BYTES) this.start(s);
  }

  /** An append of `key` ended: whatever it left unflushed starts going to disk. */
  appendEnded(key: string, path: string): void {
    const s = this.session(key, path);
    if (s.unflushed > 0) this.start(s);
  }

  /** Waits for `key`'s flush in flight; throws if any background flush of it failed. */
  async settle(key: string): Promise<void> {
    const s = this.sessions.get(key);
    if (!s) return;
    await s.running;
    if (s.failure) throw s.failure.err;
  }

  forget(key: string): void {
    this.sessions.delete(key);
  }

  private session(key: string, path: string): SessionFlush {
    let s = this.sessions.get(key);
    if (!s) {
      s = { key, path, unflushed: 0, running: null, failure: null };
      this.sessions.set(key, s);
    }
    return s;
  }

  private start(s: SessionFlush): void {
    if (s.running) return;
    s.unflushed = 0;
    s.running = this.flush(s.path).then(
      () => {
        s.running = null;
        if (s.unflushed >= FLUSH_EVERY_BYTES && this.sessions.get(s.key) === s) this.start(s);
      },
      (err: unknown) => {
        s.running = null;
        s.failure ??= { err };
      },
    );
  }

  private async flush(path: string): Promise<void> {
    let fh: FlushFile;
    try {
      fh = await this.openFile(path);
    } catch {
      return; // nothing was written, so nothing lost (a file discarded meanwhile, too)
    }
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }
}
