import { Binary, UUID, type Document } from 'bson';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Catalog } from './collection-store.ts';
import type { LogFn } from './engine-state.ts';
import { Journal, startFile, syncDirectory, writeWhole } from './journal.ts';
import { decodeRecords, encodeDdl, encodeHead, encodePut, encodeSeal, KIND_PUT, KIND_REMOVE, newerFormat, type JournalRecord } from './journal-format.ts';
import { acquireDbPathLock, type DbPathLock } from './lock.ts';
import { readStorageFormat, writeStorageFormat } from './storage-format.ts';

/**
 * Durable storage under dbPath:
 *
 *   dbPath/
 *     engine.lock.sock       unix socket held while a process owns the directory
 *     FORMAT                 the layout's version (storage-format.ts): a newer one is refused
 *     snapshot-<N>.bson      full catalog as of the moment journal-<N> was started (records, same framing)
 *     journal-<N>.log        changes after snapshot-<N>, append-only
 *     snapshot-<N>.tmp       a snapshot being written; ignored and removed at start
 *     journal-<N>.log.discarded-<time>   a torn tail cut off at start, kept for the operator
 *
 * Every file starts with a HEAD record (generation, store id) and a snapshot ends in a SEAL
 * (generation, record count): with format 3, recovery refuses a file that is missing (journal-S
 * for snapshot-S, a journal between two others, snapshot-S for a journal S > 0), of another
 * store or generation, or a snapshot without its seal, instead of loading what is left.
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
/** the engine's own temporary files (a snapshot being written, FORMAT being replaced); nothing else is removed */
const TEMP_RE = /^(snapshot-\d+\.tmp|FORMAT\.tmp)$/;
const REMEDY =
  'Put back the file that is missing or replaced, or restore the data directory from a backup (see "Backing up volreg" in the README)';
const JOURNAL_RE = /^journal-(\d+)\.log$/;
const DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024;
/** how long after a snapshot that could not be written the journal's growth may set off the next */
const COMPACT_RETRY_MS = 60_000;

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

/**
 * A collection's UUID as decoded from a snapshot or journal is a view into the whole file's
 * buffer, and the collection lives as long as the store: it gets 16 bytes of its own, or it
 * would keep the file (tens of MB at start-up) in memory for good.
 */
function asUuid(v: unknown): UUID | undefined {
  if (v instanceof Binary && v.sub_type === Binary.SUBTYPE_UUID) return new UUID(new Uint8Array(v.buffer));
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

/**
 * Cuts a journal's torn tail off, keeping the cut bytes beside it (`<journal>.discarded-<time>`).
 * A tail whose batch was written whole (its commit record is intact) was either cut by a power
 * loss before its sync (never acknowledged) or damaged on the disk since (acknowledged): the two
 * cannot be told apart, so it is said loudly.
 */
function discardTail(file: string, buf: Buffer, goodLength: number, writtenWhole: boolean, log: LogFn): void {
  const kept = `${file}.discarded-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  fs.writeFileSync(kept, buf.subarray(goodLength));
  const fields = { file, validBytes: goodLength, discardedBytes: buf.length - goodLength, keptIn: kept };
  if (writtenWhole) {
    log(
      "the journal's last write batch is damaged although it was written whole: either a power loss cut it before it was synced " +
        '(then no client was told it succeeded) or the disk damaged it since (then its changes had been acknowledged and are lost); discarding it',
      fields,
      'error',
    );
  } else {
    log('journal ends in a write that a crash interrupted; discarding it (its writers were never told it succeeded)', fields, 'warn');
  }
  const fh = fs.openSync(file, 'r+');
  try {
    fs.ftruncateSync(fh, goodLength);
    fs.fsyncSync(fh);
  } finally {
    fs.closeSync(fh);
  }
}

/**
 * Whether `dbPath` holds a database: a snapshot or journal of any generation, so something to
 * open (or to refuse as damaged). Reads only; a directory that does not exist holds none.
 */
export function holdsDatabase(dbPath: string): boolean {
  let files: string[];
  try {
    files = fs.readdirSync(dbPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  return files.some((f) => SNAPSHOT_RE.test(f) || JOURNAL_RE.test(f));
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
  const format = readStorageFormat(dbPath);
  // Format 3 files name their generation and store, and snapshots are sealed: anything else is damage.
  let checked = format !== null && format >= 3; // or, below, any file that has a head
  for (const f of files) if (TEMP_RE.test(f)) fs.rmSync(path.join(dbPath, f), { force: true });
  const snapshots = gens(files, SNAPSHOT_RE);
  const journals = gens(files, JOURNAL_RE).filter((g) => snapshots.length === 0 || g >= (snapshots[snapshots.length - 1] as number));
  const base = snapshots.length > 0 ? (snapshots[snapshots.length - 1] as number) : (journals[0] ?? 0);
  const refuse: (what: string) => never = (what) => {
    throw new Error(`${dbPath}: ${what}; refusing to start rather than serve incomplete metadata. ${REMEDY}`);
  };
  // Which generations must be there: a snapshot's journal is created before it, and each journal
  // before the next; without a snapshot, history starts at generation 0.
  if (snapshots.length === 0 && base !== 0) refuse(`${journalName(base)} is there but not ${snapshotName(base)}, which it continues`);
  journals.forEach((g, i) => {
    if (g !== base + i) refuse(`${journalName(base + i)} is missing between ${journalName(base)} and ${journalName(g)}`);
  });

  catalog.sink = undefined;
  let snapshotBytes = 0;
  let store: string | undefined;
  if (snapshots.length > 0) {
    const file = path.join(dbPath, snapshotName(base));
    const bytes = fs.readFileSync(file);
    snapshotBytes = bytes.length;
    const decoded = decodeRecords(bytes, (r) => applyRecord(catalog, r, log));
    if (decoded.torn) throw new Error(`snapshot ${file} is corrupt at byte ${decoded.goodLength}; refusing to start. ${REMEDY}`);
    if (checked || decoded.head || decoded.seal || bytes.length === 0) {
      const { head, seal } = decoded;
      if (!head || head.file !== 'snapshot' || head.generation !== base) refuse(`${snapshotName(base)} does not start as generation ${base}'s snapshot`);
      if (!seal || seal.generation !== base || seal.store !== head.store || seal.records !== decoded.count) {
        refuse(`${snapshotName(base)} is incomplete (it does not end in its seal, or holds another number of records than the seal says)`);
      }
      store = head.store;
      checked = true;
    }
  }
  if (snapshots.length > 0 && journals[0] !== base && (checked || journals.length > 0)) refuse(`${snapshotName(base)} is there but not ${journalName(base)}, which continues it`);
  let replayed = 0;
  for (let i = 0; i < journals.length; i++) {
    const g = journals[i] as number;
    const file = path.join(dbPath, journalName(g));
    const buf = fs.readFileSync(file);
    const decoded = decodeRecords(buf, (r) => applyRecord(catalog, r, log));
    const last = i === journals.length - 1;
    // The journal a rotation just created, whose snapshot may not be written yet: a crash (a power
    // loss) can leave it empty or with its head cut short, before any write batch went into it.
    // Any other journal got its head synced before anything depended on it: damage otherwise.
    const headless = last && g > base && decoded.goodLength === 0 && !decoded.acknowledgedAfter;
    if ((checked || decoded.head) && !headless) {
      const { head } = decoded;
      if (!head || head.file !== 'journal' || head.generation !== g) refuse(`${journalName(g)} does not start as generation ${g}'s journal`);
      if (store !== undefined && head.store !== store) refuse(`${journalName(g)} belongs to another store (${head.store}, not ${store})`);
      store = head.store;
      checked = true;
    }
    replayed += decoded.count;
    if (decoded.torn && (decoded.acknowledgedAfter || !last)) {
      throw new Error(
        `journal ${file} is damaged at byte ${decoded.goodLength}, and changes acknowledged after that point follow it; ` +
          `refusing to start rather than lose them. Restore the data directory from a backup, or keep what comes before the damage: ` +
          `copy ${file} and any later journal-*.log elsewhere, remove those later ones, and \`truncate -s ${decoded.goodLength} ${file}\``,
      );
    }
    if (decoded.torn) discardTail(file, buf, decoded.goodLength, decoded.writtenWhole, log);
  }
  // Older generations are fully contained in the snapshot (checked above before anything goes).
  for (const g of gens(files, SNAPSHOT_RE)) if (g < base) fs.rmSync(path.join(dbPath, snapshotName(g)), { force: true });
  for (const g of gens(files, JOURNAL_RE)) if (g < base) fs.rmSync(path.join(dbPath, journalName(g)), { force: true });

  store ??= randomUUID();
  const storeId = store;
  let gen = journals.length > 0 ? (journals[journals.length - 1] as number) : base;
  const journalPath = path.join(dbPath, journalName(gen));
  const existed = fs.existsSync(journalPath);
  const fh = await fs.promises.open(journalPath, 'a');
  // An empty journal gets its head; a legacy one (format 2) goes on headless until the cut below.
  const size = await startFile(fh, encodeHead({ file: 'journal', generation: gen, store: storeId }));
  if (!existed) await syncDirectory(dbPath);
  const journal = new Journal(fh, size, opts.durable, dbPath, log);
  journal.onFailure = opts.onFailure;
  catalog.sink = journal;
  log('storage recovered', { dbPath, snapshot: base, journalsReplayed: journals.length, records: replayed });

  const compactBytes = opts.compactBytes ?? DEFAULT_COMPACT_BYTES;
  let compacting: Promise<void> | undefined;
  let closed = false;
  /** after a snapshot that could not be written, the next try waits (each try fills what room is left) */
  let retryAt = 0;

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
    let records = 0;
    frames.push(encodeHead({ file: 'snapshot', generation: next, store: storeId }));
    for (const [db, colls] of catalog.dbs) {
      for (const coll of colls.values()) {
        records++;
        frames.push(encodeDdl('create', { db, name: coll.name, options: coll.options, uuid: coll.uuid }));
        for (const ix of coll.indexes.values()) {
          if (ix.name !== '_id_') {
            records++;
            frames.push(encodeDdl('createIndex', { db, name: coll.name, spec: ix.spec }));
          }
        }
        for (const rec of coll.records.values()) puts.push([coll.ns, rec.raw]);
      }
    }
    records += puts.length;
    const rotated = journal.rotate(path.join(dbPath, journalName(next)), encodeHead({ file: 'journal', generation: next, store: storeId }));
    compacting = (async () => {
      await rotated;
      const tmp = path.join(dbPath, `snapshot-${next}.tmp`);
      const out = await fs.promises.open(tmp, 'w');
      let written = 0;
      try {
        try {
          await writeWhole(out, frames);
          written += frames.reduce((n, f) => n + f.length, 0);
          for (let i = 0; i < puts.length; i += 2048) {
            const chunk = puts.slice(i, i + 2048).map(([ns, raw]) => encodePut(ns, raw));
            await writeWhole(out, chunk);
            written += chunk.reduce((n, f) => n + f.length, 0);
          }
          const seal = encodeSeal({ generation: next, records, store: storeId });
          await writeWhole(out, [seal]);
          written += seal.length;
          await out.datasync();
        } finally {
          await out.close();
        }
        fs.renameSync(tmp, path.join(dbPath, snapshotName(next)));
      } catch (err) {
        // A snapshot that could not be put in place whole (a full disk) gives its space back at
        // once: left, it would hold the room the journal needs until the next attempt.
        fs.rmSync(tmp, { force: true });
        retryAt = performance.now() + COMPACT_RETRY_MS;
        throw err;
      }
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
    if (!closed && !compacting && !journal.failure() && performance.now() >= retryAt && journal.bytes > Math.max(compactBytes, snapshotBytes)) {
      compact().catch((err: unknown) => log('compaction failed', { error: String(err) }, 'warn'));
    }
  };

  if (format === null || format < 3) {
    // Files of an older format are cut into a sealed generation before the marker says 3.
    if (!checked && files.some((f) => SNAPSHOT_RE.test(f) || JOURNAL_RE.test(f))) await compact();
    await writeStorageFormat(dbPath);
  }

  return {
    journal,
    compact,
    close: async () => {
      closed = true;
      if (compacting) await compacting.catch(() => undefined);
      await journal.drain();
      // A clean shutdown leaves a fresh snapshot (fast next start) unless that means rewriting a big one for little change.
      const worthIt = snapshotBytes < compactBytes || journal.bytes * 4 > snapshotBytes;
      if (journal.bytes > 0 && worthIt && !journal.failure()) await compact().catch((err: unknown) => log('compaction at close failed', { error: String(err) }, 'warn'));
      await journal.close();
      catalog.sink = undefined;
      await lock.release();
    },
  };
}
