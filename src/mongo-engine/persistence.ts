import { Binary, UUID, type Document } from 'bson';
import fs from 'node:fs';
import path from 'node:path';
import type { Catalog } from './collection-store.ts';
import type { LogFn } from './engine-state.ts';
import { Journal, syncDirectory } from './journal.ts';
import { decodeRecords, encodeDdl, encodePut, KIND_PUT, KIND_REMOVE, newerFormat, type JournalRecord } from './journal-format.ts';
import { acquireDbPathLock, type DbPathLock } from './lock.ts';
import { claimStorageFormat } from './storage-format.ts';

/**
 * Durable storage under dbPath:
 *
 *   dbPath/
 *     engine.lock.sock       unix socket held while a process owns the directory
 *     FORMAT                 the layout's version (storage-format.ts): a newer one is refused
 *     snapshot-<N>.bson      full catalog as of the moment journal-<N> was started (records, same framing)
 *     journal-<N>.log        changes after snapshot-<N>, append-only
 *     snapshot-<N>.tmp       a snapshot being written; ignored and removed at start
 *
 * Recovery loads the highest snapshot S, then replays journal-S, journal-S+1, ... in order,
 * truncating a torn tail (the batch being written at a crash, never acknowledged). Damage
 * anywhere else (in a journal a later one follows, or with a later batch after it) is in
 * acknowledged bytes: recovery refuses to start rather than drop what follows it. Compaction cuts a new generation: rotate the journal to N+1 at an
 * exact point of the change sequence, write snapshot-N+1 from the catalog as it was at that
 * point (records are immutable, so holding references is enough), fsync, rename, fsync the
 * directory, then delete generation N.
 */

export interface StorageOptions {
  durable: boolean;
  log: LogFn;
  /** journal size that triggers compaction */
  compactBytes?: number;
  /** told once, when a journal write fails (the engine then refuses writes until restarted) */
  onFailure?: (err: Error) => void;
}

export interface Storage {
  readonly journal: Journal;
  compact(): Promise<void>;
  close(): Promise<void>;
}

const SNAPSHOT_RE = /^snapshot-(\d+)\.bson$/;
const JOURNAL_RE = /^journal-(\d+)\.log$/;
const DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024;

function gens(files: string[], re: RegExp): number[] {
  return files.flatMap((f) => {
    const m = re.exec(f);
    return m ? [Number(m[1])] : [];
  }).sort((a, b) => a - b);
}

const snapshotName = (n: number): string => `snapshot-${n}.bson`;
const journalName = (n: number): string => `journal-${n}.log`;

function splitNs(ns: string): [string, string] {
  const dot = ns.indexOf('.');
  return [ns.slice(0, dot), ns.slice(dot + 1)];
}

function asUuid(v: unknown): UUID | undefined {
  if (v instanceof UUID) return v;
  if (v instanceof Binary && v.sub_type === Binary.SUBTYPE_UUID) return new UUID(Buffer.from(v.buffer));
  return undefined;
}

/** Applies one record to the catalog; the catalog must have no sink attached. */
export function applyRecord(catalog: Catalog, rec: JournalRecord, log: LogFn): void {
  if (rec.kind === KIND_PUT || rec.kind === KIND_REMOVE) {
    const [db, name] = splitNs(rec.ns);
    const coll = catalog.getCollection(db, name) ?? catalog.createCollection(db, name, {});
    if (rec.kind === KIND_PUT) coll.putUnchecked(rec.doc);
    else coll.removeUnchecked(rec.id);
    return;
  }
  const a = rec.args;
  const db = String(a['db'] ?? '');
  const name = String(a['name'] ?? '');
  switch (rec.op) {
    case 'create': {
      const existing = catalog.getCollection(db, name);
      if (existing) existing.options = a['options'] as Document;
      else catalog.createCollection(db, name, (a['options'] ?? {}) as Document, asUuid(a['uuid']));
      return;
    }
    case 'drop':
      catalog.dropCollection(db, name);
      return;
    case 'dropDatabase':
      catalog.dropDatabase(db);
      return;
    case 'rename':
      catalog.renameCollection(String(a['fromDb']), String(a['from']), String(a['toDb']), String(a['to']));
      return;
    case 'createIndex': {
      const coll = catalog.getCollection(db, name) ?? catalog.createCollection(db, name, {});
      const spec = a['spec'] as Document;
      coll.indexes.delete(String(spec['name']));
      try {
        coll.addIndex(spec);
      } catch (err) {
        log('index could not be rebuilt during recovery', { ns: coll.ns, index: String(spec['name']), error: String(err) });
      }
      return;
    }
    case 'dropIndex':
      catalog.getCollection(db, name)?.indexes.delete(String(a['index']));
      return;
    case 'collMod': {
      const coll = catalog.getCollection(db, name);
      if (coll) coll.options = a['options'] as Document;
      return;
    }
    default:
      throw newerFormat('the journal', `a change '${String(rec.op)}' this version does not know`);
  }
}

export async function openStorage(dbPath: string, catalog: Catalog, opts: StorageOptions): Promise<Storage> {
  fs.mkdirSync(dbPath, { recursive: true });
  const lock = await acquireDbPathLock(dbPath);
  try {
    return await recover(dbPath, catalog, opts, lock);
  } catch (err) {
    await lock.release();
    throw err;
  }
}

async function recover(dbPath: string, catalog: Catalog, opts: StorageOptions, lock: DbPathLock): Promise<Storage> {
  const log = opts.log;
  const files = fs.readdirSync(dbPath);
  for (const f of files) if (f.endsWith('.tmp')) fs.rmSync(path.join(dbPath, f), { force: true });
  await claimStorageFormat(dbPath);
  const snapshots = gens(files, SNAPSHOT_RE);
  const base = snapshots.length > 0 ? (snapshots[snapshots.length - 1] as number) : 0;
  catalog.sink = undefined;
  let snapshotBytes = 0;
  if (snapshots.length > 0) {
    const file = path.join(dbPath, snapshotName(base));
    const bytes = fs.readFileSync(file);
    snapshotBytes = bytes.length;
    const decoded = decodeRecords(bytes);
    if (decoded.torn) throw new Error(`snapshot ${file} is corrupt at byte ${decoded.goodLength}; refusing to start`);
    for (const r of decoded.records) applyRecord(catalog, r, log);
  }
  const journals = gens(files, JOURNAL_RE).filter((g) => g >= base);
  let replayed = 0;
  for (let i = 0; i < journals.length; i++) {
    const file = path.join(dbPath, journalName(journals[i] as number));
    const buf = fs.readFileSync(file);
    const decoded = decodeRecords(buf);
    for (const r of decoded.records) applyRecord(catalog, r, log);
    replayed += decoded.records.length;
    if (decoded.torn && (decoded.acknowledgedAfter || i < journals.length - 1)) {
      throw new Error(
        `journal ${file} is damaged at byte ${decoded.goodLength}, and changes acknowledged after that point follow it; ` +
          `refusing to start rather than lose them. Restore the data directory from a backup, or move ${file} aside ` +
          `(and any later journal-*.log) to start from the last snapshot without them`,
      );
    }
    if (decoded.torn) {
      log(
        'journal ends in a write that a crash interrupted; discarding it (its writers were never told it succeeded)',
        { file, validBytes: decoded.goodLength, discardedBytes: buf.length - decoded.goodLength },
        'warn',
      );
      const fh = fs.openSync(file, 'r+');
      try {
        fs.ftruncateSync(fh, decoded.goodLength);
        fs.fsyncSync(fh);
      } finally {
        fs.closeSync(fh);
      }
    }
  }
  // Older generations are fully contained in the snapshot.
  for (const g of gens(files, SNAPSHOT_RE)) if (g < base) fs.rmSync(path.join(dbPath, snapshotName(g)), { force: true });
  for (const g of gens(files, JOURNAL_RE)) if (g < base) fs.rmSync(path.join(dbPath, journalName(g)), { force: true });

  let gen = journals.length > 0 ? (journals[journals.length - 1] as number) : base;
  const journalPath = path.join(dbPath, journalName(gen));
  const existed = fs.existsSync(journalPath);
  const fh = await fs.promises.open(journalPath, 'a');
  if (!existed) await syncDirectory(dbPath);
  const size = (await fh.stat()).size;
  const journal = new Journal(fh, size, opts.durable, dbPath, log);
  journal.onFailure = opts.onFailure;
  catalog.sink = journal;
  log('storage recovered', { dbPath, snapshot: base, journalsReplayed: journals.length, records: replayed });

  const compactBytes = opts.compactBytes ?? DEFAULT_COMPACT_BYTES;
  let compacting: Promise<void> | undefined;
  let closed = false;

  const compact = (): Promise<void> => {
    if (compacting) return compacting;
    // After a failed journal write memory may hold changes the disk does not: a snapshot of it
    // would make them durable. Recovery from the journal is the way back (at the next start).
    const failed = journal.failure();
    if (failed) return Promise.reject(new Error(`no snapshot after a failed journal write (${failed.message})`));
    const next = gen + 1;
    // Capture the catalog and queue the journal switch at the same instant.
    const frames: Buffer[] = [];
    const puts: Array<[string, Buffer]> = [];
    for (const [db, colls] of catalog.dbs) {
      for (const coll of colls.values()) {
        frames.push(encodeDdl('create', { db, name: coll.name, options: coll.options, uuid: coll.uuid }));
        for (const ix of coll.indexes.values()) {
          if (ix.name !== '_id_') frames.push(encodeDdl('createIndex', { db, name: coll.name, spec: ix.spec }));
        }
        for (const rec of coll.records.values()) puts.push([coll.ns, rec.raw]);
      }
    }
    const rotated = journal.rotate(path.join(dbPath, journalName(next)));
    compacting = (async () => {
      await rotated;
      const tmp = path.join(dbPath, `snapshot-${next}.tmp`);
      const out = await fs.promises.open(tmp, 'w');
      let written = 0;
      try {
        await out.writev(frames);
        written += frames.reduce((n, f) => n + f.length, 0);
        for (let i = 0; i < puts.length; i += 2048) {
          const chunk = puts.slice(i, i + 2048).map(([ns, raw]) => encodePut(ns, raw));
          await out.writev(chunk);
          written += chunk.reduce((n, f) => n + f.length, 0);
        }
        await out.datasync();
      } finally {
        await out.close();
      }
      fs.renameSync(tmp, path.join(dbPath, snapshotName(next)));
      await syncDirectory(dbPath);
      const old = gen;
      gen = next;
      snapshotBytes = written;
      fs.rmSync(path.join(dbPath, snapshotName(old)), { force: true });
      fs.rmSync(path.join(dbPath, journalName(old)), { force: true });
      log('storage compacted', { dbPath, generation: next, documents: puts.length });
    })().finally(() => {
      compacting = undefined;
    });
    return compacting;
  };

  // The journal may grow to the snapshot's size before the next cut, so rewriting the
  // snapshot costs at most about as much I/O as the changes themselves (no quadratic rewrite).
  journal.onFlushed = () => {
    if (!closed && !compacting && !journal.failure() && journal.bytes > Math.max(compactBytes, snapshotBytes)) {
      compact().catch((err: unknown) => log('compaction failed', { error: String(err) }));
    }
  };

  return {
    journal,
    compact,
    close: async () => {
      closed = true;
      if (compacting) await compacting.catch(() => undefined);
      await journal.drain();
      // A clean shutdown leaves a fresh snapshot (fast next start) unless that means rewriting a big one for little change.
      const worthIt = snapshotBytes < compactBytes || journal.bytes * 4 > snapshotBytes;
      if (journal.bytes > 0 && worthIt && !journal.failure()) await compact().catch((err: unknown) => log('compaction at close failed', { error: String(err) }));
      await journal.close();
      catalog.sink = undefined;
      await lock.release();
    },
  };
}
