import { Int32, Long, type Document } from 'bson';
import os from 'node:os';
import type { CommandContext } from '../engine-state.ts';
import { MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE, MAX_WRITE_BATCH_SIZE } from '../wire-protocol.ts';

/** Handshake and server-information commands a driver or mongosh issues. */

export const SERVER_VERSION = '7.0.14';
export const MAX_WIRE_VERSION = 21;

export function helloReply(cmd: Document, ctx: CommandContext, legacy: boolean): Document {
  const reply: Document = {};
  if (legacy) {
    if (cmd['helloOk'] !== undefined) reply['helloOk'] = true;
    reply['ismaster'] = true;
  } else {
    reply['isWritablePrimary'] = true;
  }
  Object.assign(reply, {
    maxBsonObjectSize: MAX_BSON_OBJECT_SIZE,
    maxMessageSizeBytes: MAX_MESSAGE_SIZE,
    maxWriteBatchSize: MAX_WRITE_BATCH_SIZE,
    localTime: new Date(),
    logicalSessionTimeoutMinutes: 30,
    connectionId: ctx.connectionId,
    minWireVersion: 0,
    maxWireVersion: MAX_WIRE_VERSION,
    readOnly: false,
    ok: 1,
  });
  return reply;
}

export function buildInfoCommand(): Document {
  return {
    version: SERVER_VERSION,
    gitVersion: '0000000000000000000000000000000000000000',
    modules: [],
    allocator: 'system',
    javascriptEngine: 'none',
    sysInfo: 'deprecated',
    versionArray: [new Int32(7), new Int32(0), new Int32(14), new Int32(0)],
    openssl: { running: 'disabled', compiled: 'disabled' },
    buildEnvironment: { distmod: 'volreg-embedded', target_os: process.platform, target_arch: process.arch },
    bits: 64,
    debug: false,
    maxBsonObjectSize: MAX_BSON_OBJECT_SIZE,
    storageEngines: ['volreg-journal'],
    ok: 1,
  };
}

export function serverStatusCommand(_cmd: Document, ctx: CommandContext): Document {
  const s = ctx.state;
  const uptimeMs = Date.now() - s.startedAt;
  return {
    host: `${os.hostname()}${s.port ? ':' + String(s.port) : ''}`,
    version: SERVER_VERSION,
    process: 'mongod',
    pid: Long.fromNumber(process.pid),
    uptime: Math.floor(uptimeMs / 1000),
    uptimeMillis: Long.fromNumber(uptimeMs),
    uptimeEstimate: Long.fromNumber(Math.floor(uptimeMs / 1000)),
    localTime: new Date(),
    connections: { current: s.stats.connectionsCurrent, available: 100000, totalCreated: s.stats.connectionsTotal },
    opcounters: { ...s.stats.opcounters },
    storageEngine: { name: 'volreg-journal', supportsCommittedReads: false, persistent: s.durability !== undefined },
    metrics: { cursor: { open: { total: s.cursors.openCount } } },
    ok: 1,
  };
}

export function hostInfoCommand(): Document {
  return {
    system: { currentTime: new Date(), hostname: os.hostname(), cpuAddrSize: 64, memSizeMB: Math.floor(os.totalmem() / (1024 * 1024)), numCores: os.cpus().length, cpuArch: process.arch },
    os: { type: os.type(), name: os.type(), version: os.release() },
    extra: {},
    ok: 1,
  };
}

export function getParameterCommand(cmd: Document): Document {
  const reply: Document = {};
  if (cmd['featureCompatibilityVersion'] !== undefined) reply['featureCompatibilityVersion'] = { version: '7.0' };
  reply['ok'] = 1;
  return reply;
}

export function getLogCommand(cmd: Document): Document {
  if (cmd['getLog'] === '*') return { names: ['global', 'startupWarnings'], ok: 1 };
  return { totalLinesWritten: 0, log: [], ok: 1 };
}

export function getCmdLineOptsCommand(): Document {
  return { argv: process.argv.slice(), parsed: {}, ok: 1 };
}

export function whatsmyuriCommand(_cmd: Document, ctx: CommandContext): Document {
  return { you: `127.0.0.1:${String(ctx.connectionId)}`, ok: 1 };
}

export function connectionStatusCommand(): Document {
  return { authInfo: { authenticatedUsers: [], authenticatedUserRoles: [] }, ok: 1 };
}

export function okCommand(): Document {
  return { ok: 1 };
}
