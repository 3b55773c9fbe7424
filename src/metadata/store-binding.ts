import { randomUUID } from 'node:crypto';
import type { Collection, Db } from 'mongodb';
import { COLLECTIONS } from './collections.ts';

/**
 * Binds a blob store to the metadata database its blobs are recorded in.
 *
 * Several processes may share a data directory (DESIGN.md; README "Using a real MongoDB"), and
 * every one of them must use the same database. One that does not (VOLREG_MONGODB_URL forgotten,
 * so it starts the embedded engine; a mistyped VOLREG_MONGODB_DATABASE) finds every blob without
 * a record, and its garbage collection deletes them as bytes a crash left behind: the whole
 * store. So the database records an id (`migrations`, `_id: "blob-store"`, beside the
 * migrator's own records, which it reads by `applied_at` only) and the blob store a mark naming
 * it (storage/store-mark.ts), and `serve` and `gc` refuse a pair that does not match before they
 * touch anything.
 *
 * A store without a mark (new, or from a volreg before the mark) is bound to this database when
 * it holds no blob, or when the database records one of the first blobs found (a store and its
 * own database, or a crash between the two writes below); otherwise it is someone else's.
 * The mark is read before the database's id, and the id is written before the mark: a process
 * finding a mark then also finds the id its writer bound (no false refusal while several
 * processes start at once).
 */

/** What the binding needs of the blob store. */
export interface MarkableBlobStore {
  /** the id its mark names, or null */
  readMark(): Promise<string | null>;
  /** marks it with `id` unless marked already; the id the mark names now */
  claimMark(id: string): Promise<string>;
  /** its blobs, in any order (only the first few are read) */
  list(): AsyncIterable<{ digest: string }>;
  /** where the mark is, for messages */
  readonly markPath: string;
}

export class StoreBindingError extends Error {
  override name = 'StoreBindingError';
}

const BINDING_ID = 'blob-store';
/** how many stored blobs are looked up in the database to tell whether an unmarked store is its own */
const SAMPLE = 100;

interface BindingDoc {
  _id: string;
  store_id?: string;
  bound_at?: Date;
}

const SAME_DATABASE =
  'every volreg process (serve, gc) on one data directory must use the same VOLREG_MONGODB_URL and VOLREG_MONGODB_DATABASE; ' +
  'this one would find every blob unrecorded, and garbage collection would delete them all';

/**
 * Checks (and on first use records) that `store` belongs to `db`; throws StoreBindingError when
 * it does not. `checkOnly` (a dry run, which promises to change nothing) makes the same checks
 * and records nothing.
 */
export async function bindBlobStore(db: Db, store: MarkableBlobStore, opts: { checkOnly?: boolean } = {}): Promise<void> {
  const coll = db.collection<BindingDoc>(COLLECTIONS.migrations);
  const mark = await store.readMark();
  const bound = (await coll.findOne({ _id: BINDING_ID }))?.store_id ?? null;
  if (mark !== null) {
    if (mark === bound) return;
    throw new StoreBindingError(
      `the blobs in this data directory are recorded in another metadata database (${store.markPath} names ${mark}; ` +
        `database ${db.databaseName} ${bound === null ? 'names none' : `names ${bound}`}): ${SAME_DATABASE}. ` +
        `If this database really is theirs (restored from a copy older than that file), remove the file and start again.`,
    );
  }
  if (!(await recordsStoredBlobs(db, store))) {
    throw new StoreBindingError(
      `the blob store in this data directory holds blobs that database ${db.databaseName} records none of (looking at the first ${SAMPLE} found): ` +
        `they are recorded in another metadata database; ${SAME_DATABASE}. If no database records them (bytes crashes left behind), ` +
        `move them out of blobs/ and start again.`,
    );
  }
  if (opts.checkOnly) return;
  const id = bound ?? (await bindId(coll));
  const marked = await store.claimMark(id);
  if (marked !== id) {
    throw new StoreBindingError(`another metadata database (${marked}) bound this data directory's blob store meanwhile: ${SAME_DATABASE}.`);
  }
}

/** The database's id, written now unless a racing process wrote one first. */
async function bindId(coll: Collection<BindingDoc>): Promise<string> {
  const doc = await coll.findOneAndUpdate(
    { _id: BINDING_ID },
    { $setOnInsert: { store_id: randomUUID(), bound_at: new Date() } },
    { upsert: true, returnDocument: 'after' },
  );
  if (!doc?.store_id) throw new Error('the blob store binding was not recorded');
  return doc.store_id;
}

/** True when the store holds no blob, or the database records one of the first SAMPLE found. */
async function recordsStoredBlobs(db: Db, store: MarkableBlobStore): Promise<boolean> {
  const sample: string[] = [];
  for await (const b of store.list()) {
    sample.push(b.digest);
    if (sample.length >= SAMPLE) break;
  }
  if (sample.length === 0) return true;
  return (await db.collection(COLLECTIONS.blobs).findOne({ digest: { $in: sample } }, { projection: { _id: 1 } })) !== null;
}
