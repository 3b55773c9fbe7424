import { Double, type Document } from 'bson';
import { toBson } from './bson-values.ts';
import { aggregateCommand } from './commands/aggregate.ts';
import {
  collModCommand,
  collStatsCommand,
  createCommand,
  dbStatsCommand,
  dropCommand,
  dropDatabaseCommand,
  listCollectionsCommand,
  listDatabasesCommand,
  renameCollectionCommand,
} from './commands/collection-commands.ts';
import { findAndModifyCommand } from './commands/find-and-modify.ts';
import { countCommand, distinctCommand, findCommand, getMoreCommand, killCursorsCommand } from './commands/find-commands.ts';
import { createIndexesCommand, dropIndexesCommand, listIndexesCommand } from './commands/index-commands.ts';
import {
  buildInfoCommand,
  connectionStatusCommand,
  getCmdLineOptsCommand,
  getLogCommand,
  getParameterCommand,
  helloReply,
  hostInfoCommand,
  okCommand,
  serverStatusCommand,
  whatsmyuriCommand,
} from './commands/server-commands.ts';
import { deleteCommand, insertCommand, updateCommand } from './commands/write-commands.ts';
import type { CommandContext, CommandHandler, EngineState } from './engine-state.ts';
import { asEngineError, engineError, EngineError, WRITES_STOPPED } from './errors.ts';
import { checkNestingDepth, MAX_COMMAND_DEPTH } from './nesting-depth.ts';

/**
 * Routes a command document to its handler and turns the outcome into reply bytes.
 * Handlers run synchronously, so each command's effect on the catalog is atomic with
 * respect to other connections; the reply waits for the journal when the command wrote.
 */

const HANDLERS: Record<string, CommandHandler> = {
  hello: (cmd, ctx) => helloReply(cmd, ctx, false),
  isMaster: (cmd, ctx) => helloReply(cmd, ctx, true),
  ismaster: (cmd, ctx) => helloReply(cmd, ctx, true),
  ping: okCommand,
  buildInfo: buildInfoCommand,
  buildinfo: buildInfoCommand,
  serverStatus: serverStatusCommand,
  hostInfo: hostInfoCommand,
  getParameter: getParameterCommand,
  getLog: getLogCommand,
  getCmdLineOpts: getCmdLineOptsCommand,
  whatsmyuri: whatsmyuriCommand,
  connectionStatus: connectionStatusCommand,
  endSessions: okCommand,
  killSessions: okCommand,
  killAllSessions: okCommand,
  refreshSessions: okCommand,
  logout: okCommand,
  insert: insertCommand,
  update: updateCommand,
  delete: deleteCommand,
  find: findCommand,
  getMore: getMoreCommand,
  killCursors: killCursorsCommand,
  count: countCommand,
  distinct: distinctCommand,
  findAndModify: findAndModifyCommand,
  findandmodify: findAndModifyCommand,
  aggregate: aggregateCommand,
  createIndexes: createIndexesCommand,
  listIndexes: listIndexesCommand,
  dropIndexes: dropIndexesCommand,
  deleteIndexes: dropIndexesCommand,
  create: createCommand,
  drop: dropCommand,
  dropDatabase: dropDatabaseCommand,
  collMod: collModCommand,
  renameCollection: renameCollectionCommand,
  listCollections: listCollectionsCommand,
  listDatabases: listDatabasesCommand,
  dbStats: dbStatsCommand,
  dbstats: dbStatsCommand,
  collStats: collStatsCommand,
};

/** Commands that change data: refused once the journal has failed, before they touch anything. */
const WRITE_COMMANDS = new Set([
  'insert', 'update', 'delete', 'findAndModify', 'findandmodify', 'createIndexes', 'dropIndexes', 'deleteIndexes',
  'create', 'drop', 'dropDatabase', 'collMod', 'renameCollection',
]);

/**
 * After a failed journal write the in-memory state may hold changes the disk does not, and
 * only a restart (recovery from the journal) is consistent again: mongod stops in this case;
 * the engine keeps answering reads and refuses every write with this error.
 */
function journalFailure(err: unknown): EngineError {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const name = code === 'ENOSPC' || code === 'EDQUOT' ? 'OutOfDiskSpace' : 'InternalError';
  return engineError(name, `journal write failed (${message}); ${WRITES_STOPPED}`);
}

/** Commands that are not allowed inside a "transaction" and never take one. */
const TRANSACTION_FIELDS = ['txnNumber', 'startTransaction', 'autocommit'];

export function commandName(cmd: Document): string {
  return Object.keys(cmd)[0] ?? '';
}

function runHandler(cmd: Document, ctx: CommandContext): Document | Buffer {
  const name = commandName(cmd);
  const handler = Object.prototype.hasOwnProperty.call(HANDLERS, name) ? HANDLERS[name] : undefined;
  if (!handler) throw engineError('CommandNotFound', `no such command: '${name}'`);
  checkNestingDepth(cmd, MAX_COMMAND_DEPTH, 'command');
  if (TRANSACTION_FIELDS.some((f) => cmd[f] !== undefined) || name === 'commitTransaction' || name === 'abortTransaction') {
    throw engineError('IllegalOperation', 'Transaction numbers are only allowed on a replica set member or mongos');
  }
  const counter = ctx.state.stats.opcounters;
  const bucket = name === 'find' || name === 'aggregate' ? 'query' : name === 'insert' || name === 'update' || name === 'delete' || name === 'getMore' ? name : 'command';
  counter[bucket] = (counter[bucket] ?? 0) + 1;
  return handler(cmd, ctx);
}

/** Runs a command and returns the BSON reply. Never throws. */
export async function dispatchCommand(cmd: Document, db: string, state: EngineState, connectionId: number): Promise<Buffer> {
  const ctx: CommandContext = { state, db, connectionId };
  const durability = state.durability;
  const before = durability?.appendedSeq() ?? 0;
  let reply: Document | Buffer;
  try {
    // Transaction fields are rejected before the command name so commitTransaction etc. answer like a standalone.
    if (TRANSACTION_FIELDS.some((f) => cmd[f] !== undefined)) {
      throw engineError('IllegalOperation', 'Transaction numbers are only allowed on a replica set member or mongos');
    }
    const failed = durability?.failure();
    if (failed && WRITE_COMMANDS.has(commandName(cmd))) throw journalFailure(failed);
    reply = runHandler(cmd, ctx);
  } catch (err) {
    const e = asEngineError(err);
    if (!(err instanceof EngineError)) state.log('command failed with an internal error', { command: commandName(cmd), error: String(err), stack: err instanceof Error ? err.stack : undefined });
    reply = e.toReply();
  }
  // `writeConcern: { j: false }` is acknowledged once applied, as mongod does; the journal's
  // next group flush (any durable write's, or its own) still carries the change to disk.
  if (durability && !journalNotRequested(cmd)) {
    const after = durability.appendedSeq();
    if (after !== before) {
      try {
        await durability.waitDurable(after);
      } catch (err) {
        reply = journalFailure(err).toReply();
      }
    }
  }
  if (Buffer.isBuffer(reply)) return reply;
  // mongod sends ok as a double; keep that so promoteValues:false clients see the same type.
  if (typeof reply['ok'] === 'number') reply['ok'] = new Double(reply['ok']);
  return toBson(reply);
}

function journalNotRequested(cmd: Document): boolean {
  const wc = cmd['writeConcern'] as Document | undefined;
  return wc !== null && typeof wc === 'object' && wc['j'] === false;
}
