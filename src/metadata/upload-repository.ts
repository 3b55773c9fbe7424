import { processClock } from '../domain/clock.ts';
import type { Collections, UploadDoc } from './collections.ts';
import { assertValid } from './schema-validator.ts';

/**
 * Upload sessions (`uploads`): which repository a session belongs to and when it was last
 * used. The bytes and the authoritative offset are the blob store's; `offset` here mirrors it
 * after each chunk, for operators and for the purge.
 */
export interface UploadSession {
  id: string;
  repo: string;
  offset: number;
  started: Date;
  lastActivity: Date;
  driverState: Record<string, unknown>;
}

function fromDoc(d: UploadDoc): UploadSession {
  return { id: d._id, repo: d.repo_id, offset: d.offset, started: d.started, lastActivity: d.last_activity, driverState: d.driver_state ?? {} };
}

export class UploadRepository {
  constructor(private readonly c: Collections) {}

  async create(s: { id: string; repo: string; driverState?: Record<string, unknown> }): Promise<UploadSession> {
    const now = processClock.now();
    const doc: UploadDoc = { _id: s.id, repo_id: s.repo, offset: 0, started: now, last_activity: now, driver_state: s.driverState ?? {} };
    assertValid('stored-upload', doc, 'UNKNOWN');
    await this.c.uploads.insertOne(doc);
    return fromDoc(doc);
  }

  async find(id: string): Promise<UploadSession | null> {
    const d = await this.c.uploads.findOne({ _id: id });
    return d ? fromDoc(d) : null;
  }

  /** Marks a session of `repo` active now; false when there is no such session (or it is another repository's). */
  async claim(id: string, repo: string): Promise<boolean> {
    // Not waiting for the journal, as touch below.
    const r = await this.c.uploads.updateOne({ _id: id, repo_id: repo }, { $set: { last_activity: processClock.now() } }, { writeConcern: { w: 1, j: false } });
    return r.matchedCount === 1;
  }

  /** Records a chunk: the new offset, and activity now. False when the session is gone. */
  async touch(id: string, offset: number): Promise<boolean> {
    // Activity feeds only the purge of abandoned sessions, which also looks at the bytes' own
    // times: a touch lost in a crash costs nothing, so it does not wait for the journal.
    // $max: two servers finishing chunks of one session can land their touches out of order,
    // and an offset only grows
    const r = await this.c.uploads.updateOne({ _id: id }, { $max: { offset }, $set: { last_activity: processClock.now() } }, { writeConcern: { w: 1, j: false } });
    return r.matchedCount === 1;
  }

  async delete(id: string): Promise<void> {
    await this.c.uploads.deleteOne({ _id: id });
  }

  /** Sessions with no activity since `olderThan` (at most `limit`). */
  async idleSince(olderThan: Date, limit = 1000): Promise<UploadSession[]> {
    const docs = await this.c.uploads.find({ last_activity: { $lt: olderThan } }).sort({ last_activity: 1 }).limit(limit).toArray();
    return docs.map(fromDoc);
  }

  /** Deletes a session only if it is still idle, so a chunk arriving meanwhile keeps it. */
  async deleteIfIdle(id: string, olderThan: Date): Promise<boolean> {
    return (await this.c.uploads.deleteOne({ _id: id, last_activity: { $lt: olderThan } })).deletedCount === 1;
  }
}
