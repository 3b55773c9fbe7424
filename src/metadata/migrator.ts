import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Collection, Db } from 'mongodb';
import type { Logger } from 'pino';
import { monotonicMs } from '../domain/clock.ts';
import { COLLECTIONS } from './collections.ts';
import { isDuplicateKey } from './repo-content-repository.ts';

/**
 * Versioned migrations (migrations/NNNN-name.ts). Applied ones are recorded in the `migrations`
 * collection. Two processes starting at the same moment apply each migration once: a runner
 * first takes a lock document (`_id: "lock"`, inserted or taken over atomically through the
 * unique `_id`, with a lease it keeps renewing), then applies what is not recorded yet. A
 * runner that dies mid-migration leaves its lease to expire; migration bodies are idempotent,
 * so the next runner simply applies that migration again.
 */

export interface Migration {
  /** equals the file name without extension, e.g. "0001-initial" */
  id: string;
  description: string;
  up(db: Db): Promise<void>;
}

export interface MigrationStatus {
  id: string;
  description: string;
  appliedAt: Date | null;
  /** false for a migration a newer volreg applied, which this version does not know */
  known: boolean;
}

interface MigrationRecord {
  _id: string;
  description?: string;
  applied_at?: Date;
  // lock fields
  owner?: string;
  expires_at?: Date;
  acquired_at?: Date;
}

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
const FILE = /^(\d{4})-[a-z0-9-]+\.(ts|js)$/;
const LOCK_ID = 'lock';

/** Imports every migration module of `dir`, in order, checking each one's shape. */
export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = readdirSync(dir).filter((f) => FILE.test(f)).sort();
  const out: Migration[] = [];
  const numbers = new Set<string>();
  for (const file of files) {
    const id = file.replace(/\.(ts|js)$/, '');
    const num = id.slice(0, 4);
    if (numbers.has(num)) throw new Error(`migrations/${file}: number ${num} is used twice`);
    numbers.add(num);
    const mod = (await import(pathToFileURL(`${dir}/${file}`).href)) as Partial<Migration>;
    if (mod.id !== id || typeof mod.description !== 'string' || typeof mod.up !== 'function') {
      throw new Error(`migrations/${file} must export id = ${JSON.stringify(id)}, description and up(db)`);
    }
    out.push({ id: mod.id, description: mod.description, up: mod.up });
  }
  return out;
}

/**
 * A database that a newer volreg migrated holds data in a shape this version does not know
 * (and it would miss what later migrations moved): refuse it rather than serve or change it.
 */
function refuseNewerSchema(known: Migration[], applied: Map<string, Date>): void {
  const ids = new Set(known.map((m) => m.id));
  const unknown = [...applied.keys()].filter((id) => !ids.has(id)).sort();
  if (unknown.length > 0) {
    throw new Error(
      `the database was migrated by a newer volreg (migrations ${unknown.join(', ')}, which this version does not know); ` +
        'refusing to go on rather than misread or change it. Run that version again, or restore a backup made before it.',
    );
  }
}

export interface MigratorOptions {
  /** defaults to the modules of migrations/ */
  migrations?: Migration[];
  logger?: Logger;
  /** how long a lock holder may go silent before another runner takes over */
  leaseMs?: number;
  /** how long to wait for another runner's lock before giving up */
  waitMs?: number;
}

export class Migrator {
  private readonly coll: Collection<MigrationRecord>;
  private readonly owner = `${hostname()}:${process.pid}:${randomUUID()}`;
  private readonly leaseMs: number;
  private readonly waitMs: number;
  private migrations: Migration[] | undefined;

  constructor(
    private readonly db: Db,
    private readonly opts: MigratorOptions = {},
  ) {
    this.coll = db.collection<MigrationRecord>(COLLECTIONS.migrations);
    this.leaseMs = opts.leaseMs ?? 60_000;
    this.waitMs = opts.waitMs ?? 5 * 60_000;
    this.migrations = opts.migrations;
  }

  private async all(): Promise<Migration[]> {
    this.migrations ??= await loadMigrations();
    return this.migrations;
  }

  /** Every known migration, with when it was applied (null: pending), then any a newer volreg applied. */
  async status(): Promise<MigrationStatus[]> {
    const applied = await this.applied();
    const known = await this.all();
    const ids = new Set(known.map((m) => m.id));
    const newer = [...applied].filter(([id]) => !ids.has(id)).sort(([a], [b]) => (a < b ? -1 : 1));
    return [
      ...known.map((m) => ({ id: m.id, description: m.description, appliedAt: applied.get(m.id) ?? null, known: true })),
      ...newer.map(([id, appliedAt]) => ({ id, description: 'applied by a newer volreg; unknown to this version', appliedAt, known: false })),
    ];
  }

  /**
   * For commands that read and change the data without migrating it (gc): the database must be
   * exactly at this version's schema. Behind it, what later migrations add (indexes, fields a
   * reference check relies on) is missing; ahead of it, the data may be in a shape this version
   * would misread, and gc is the command that deletes.
   */
  async requireCurrent(): Promise<void> {
    const migrations = await this.all();
    const applied = await this.applied();
    refuseNewerSchema(migrations, applied);
    const pending = migrations.filter((m) => !applied.has(m.id)).map((m) => m.id);
    if (pending.length > 0) {
      throw new Error(`the database has migrations this version would apply first (${pending.join(', ')}): run volreg migrate (or start volreg serve, which applies them), then try again`);
    }
  }

  /** Applies the pending migrations in order; returns the ids this call applied. */
  async up(): Promise<string[]> {
    const migrations = await this.all();
    // Fast path: nothing to do needs no lock.
    const before = await this.applied();
    refuseNewerSchema(migrations, before);
    if (migrations.every((m) => before.has(m.id))) return [];

    await this.acquire();
    let lost = false;
    const renew = setInterval(() => {
      this.coll
        .updateOne({ _id: LOCK_ID, owner: this.owner }, { $set: { expires_at: new Date(Date.now() + this.leaseMs) } })
        .then((r) => {
          if (r.matchedCount === 0) lost = true;
        })
        .catch((err: unknown) => this.opts.logger?.warn({ err }, 'migration lock renewal failed'));
    }, Math.max(50, Math.floor(this.leaseMs / 3)));
    renew.unref();
    const done: string[] = [];
    try {
      const applied = await this.applied();
      for (const m of migrations) {
        if (applied.has(m.id)) continue;
        if (lost) throw new Error('lost the migration lock (lease expired); another runner took over');
        this.opts.logger?.info({ migration: m.id }, 'applying migration');
        const started = monotonicMs();
        await m.up(this.db);
        try {
          await this.coll.insertOne({ _id: m.id, description: m.description, applied_at: new Date() });
        } catch (err) {
          if (!isDuplicateKey(err)) throw err;
        }
        this.opts.logger?.info({ migration: m.id, ms: Math.round(monotonicMs() - started) }, 'migration applied');
        done.push(m.id);
      }
    } finally {
      clearInterval(renew);
      await this.coll.deleteOne({ _id: LOCK_ID, owner: this.owner }).catch((err: unknown) => {
        this.opts.logger?.warn({ err }, 'migration lock release failed; it expires with its lease');
      });
    }
    return done;
  }

  private async applied(): Promise<Map<string, Date>> {
    const rows = await this.coll.find({ _id: { $ne: LOCK_ID }, applied_at: { $exists: true } }).toArray();
    return new Map(rows.map((r) => [r._id, r.applied_at as Date]));
  }

  /** Takes the lock: insert it, or take it over once its lease expired; else wait and retry. */
  private async acquire(): Promise<void> {
    const deadline = monotonicMs() + this.waitMs;
    for (let attempt = 0; ; attempt++) {
      const now = new Date();
      try {
        await this.coll.updateOne(
          { _id: LOCK_ID, $or: [{ expires_at: { $lte: now } }, { owner: this.owner }] },
          { $set: { owner: this.owner, acquired_at: now, expires_at: new Date(now.getTime() + this.leaseMs) } },
          { upsert: true },
        );
        return;
      } catch (err) {
        // The lock exists and is held: the upsert's insert hit the unique _id.
        if (!isDuplicateKey(err)) throw err;
      }
      if (monotonicMs() > deadline) {
        const holder = await this.coll.findOne({ _id: LOCK_ID });
        throw new Error(`timed out waiting for the migration lock held by ${holder?.owner ?? 'another runner'}`);
      }
      if (attempt === 0) this.opts.logger?.info('waiting for another process to finish migrating');
      await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 100)));
    }
  }
}
