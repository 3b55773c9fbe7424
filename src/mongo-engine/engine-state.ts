import type { Document } from 'bson';
import type { Catalog } from './collection-store.ts';
import type { CursorManager } from './cursor-manager.ts';

/** Shared state every command handler sees, plus the per-request context. */

/** The engine's log lines: debug unless they need an operator's attention (warn). */
export type LogLevel = 'debug' | 'warn' | 'error';
export type LogFn = (msg: string, fields?: Record<string, unknown>, level?: LogLevel) => void;

/** What the durability layer offers the dispatcher: a write sequence and a way to wait for fsync. */
export interface Durability {
  /** sequence number of the last change appended (monotonic) */
  appendedSeq(): number;
  /** resolves once every change up to `seq` is on disk (or written, when not durable) */
  waitDurable(seq: number): Promise<void>;
  /** why the journal stopped taking changes, if it did (a failed write; only a restart recovers) */
  failure(): Error | undefined;
}

export interface EngineState {
  readonly catalog: Catalog;
  readonly cursors: CursorManager;
  readonly log: LogFn;
  readonly startedAt: number;
  readonly stats: { connectionsCurrent: number; connectionsTotal: number; opcounters: Record<string, number> };
  readonly host: string;
  port: number | undefined;
  durability: Durability | undefined;
}

export interface CommandContext {
  readonly state: EngineState;
  readonly db: string;
  readonly connectionId: number;
}

export type CommandHandler = (cmd: Document, ctx: CommandContext) => Document | Buffer;
