import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { parse as parseYaml } from 'yaml';
import { parseIpRanges } from '../domain/ip-ranges.ts';
import { DEFAULTS, LOG_LEVELS, type Config } from './config.ts';

/**
 * Reads the configuration from the environment (and an optional YAML/JSON file named by
 * VOLREG_CONFIG), validates every value and reports all problems at once: one line per bad
 * value, naming the variable. The CLI prints them and exits 2.
 */

/** Every variable volreg serve reads, with its meaning and default (the README table). */
export const VARIABLES = {
  VOLREG_ADDR: { meaning: 'listen host:port (":0" picks a free port; an empty host means 127.0.0.1)', default: DEFAULTS.addr },
  VOLREG_DATA_DIR: { meaning: "blobs, upload sessions and the embedded engine's files", default: DEFAULTS.dataDir },
  VOLREG_MONGODB_URL: { meaning: 'a MongoDB to use instead of the embedded engine', default: undefined },
  VOLREG_MONGODB_DATABASE: { meaning: 'database name', default: DEFAULTS.mongodbDatabase },
  VOLREG_MONGODB_REOPEN_AFTER: {
    meaning: "volreg's MongoDB client is closed and opened again when it has not reached the database this long while a new client does, seconds (0: never)",
    default: String(DEFAULTS.mongodbReopenAfterSeconds),
  },
  VOLREG_STORAGE: { meaning: 'blob store driver: fs (gridfs is not implemented yet)', default: DEFAULTS.storage },
  VOLREG_AUTH_FILE: { meaning: 'htpasswd file with bcrypt entries (htpasswd -B) and #volreg access rules; re-read on SIGHUP; unset means no authentication', default: undefined },
  VOLREG_TLS_CERT: { meaning: 'PEM certificate (chain) to serve HTTPS with; needs VOLREG_TLS_KEY', default: undefined },
  VOLREG_TLS_KEY: { meaning: 'PEM private key of VOLREG_TLS_CERT', default: undefined },
  VOLREG_LOG_LEVEL: { meaning: `log level: ${LOG_LEVELS.join(', ')}`, default: DEFAULTS.logLevel },
  VOLREG_MANIFEST_MAX_BYTES: { meaning: 'largest manifest accepted, bytes', default: String(DEFAULTS.manifestBytes) },
  VOLREG_MIN_FREE_BYTES: { meaning: 'free space uploads must leave on the data filesystem, bytes (0: no reserve)', default: String(DEFAULTS.minFreeBytes) },
  VOLREG_UPLOAD_PURGE_AFTER: { meaning: 'abandoned upload sessions idle this long are purged, seconds', default: String(DEFAULTS.purgeAfterSeconds) },
  VOLREG_UPLOAD_PURGE_INTERVAL: { meaning: 'how often the purge runs, seconds (0 disables it)', default: String(DEFAULTS.purgeIntervalSeconds) },
  VOLREG_GC_INTERVAL: { meaning: 'garbage collection inside serve every this many seconds (0 disables it)', default: String(DEFAULTS.gcIntervalSeconds) },
  VOLREG_GC_GRACE: { meaning: 'garbage collection keeps anything younger than this, seconds', default: String(DEFAULTS.gcGraceSeconds) },
  VOLREG_GC_DELETE_UNTAGGED: { meaning: 'garbage collection also removes untagged manifests: true or false', default: String(DEFAULTS.gcDeleteUntagged) },
  VOLREG_SHUTDOWN_GRACE: { meaning: 'how long SIGTERM waits for in-flight requests, seconds', default: String(DEFAULTS.shutdownGraceSeconds) },
  VOLREG_CLIENT_IDLE_TIMEOUT: {
    meaning: 'a connection is closed when nothing moves on it this long while volreg waits on the client (request body, reply), seconds',
    default: String(DEFAULTS.clientIdleSeconds),
  },
  VOLREG_TRUSTED_PROXIES: {
    meaning: "addresses or CIDR ranges of reverse proxies whose X-Forwarded-For names the client (for logs and the password checks' turns); unset: the header is ignored",
    default: undefined,
  },
  VOLREG_METRICS_VOLUMES: {
    meaning: 'volumes given a series of their own in /metrics (volreg_volume_latest_snapshot_timestamp_seconds), backed up longest ago first; 0: none, no volume name in /metrics',
    default: `${DEFAULTS.metricsVolumeSeries} (${DEFAULTS.metricsVolumeSeriesWithAuth} with VOLREG_AUTH_FILE)`,
  },
  VOLREG_METRICS_VOLUMES_MAX_AGE: {
    meaning: "how old /metrics' volume figures may be with VOLREG_MONGODB_URL, where each reading reads every volume, seconds (0: read at every scrape)",
    default: String(DEFAULTS.metricsVolumesMaxAgeSeconds),
  },
  VOLREG_CONFIG: { meaning: 'optional YAML or JSON file holding any of these variables (the environment wins)', default: undefined },
} as const;

export type VariableName = keyof typeof VARIABLES;

/**
 * VOLREG_* variables read by other parts of the volreg command (the host-agent subcommands).
 * Listed here only so that `serve` does not warn about them; add yours.
 */
export const CLIENT_VARIABLES: readonly string[] = [
  // src/cli/client.ts
  'VOLREG_URL',
  'VOLREG_USER',
  'VOLREG_PASSWORD',
  'VOLREG_TIMEOUT',
  // src/cli/commands/backup.ts
  'VOLREG_VOLUMES_ROOT',
  'VOLREG_PREFIX',
  'VOLREG_TAGS_LOCK_TIMEOUT',
];

/**
 * Variables volreg once listed and never read: setting one is harmless, but the operator is told
 * it limits nothing rather than left to believe it does.
 */
const RETIRED_VARIABLES: Readonly<Record<string, string>> = {
  VOLREG_JSON_BODY_MAX_BYTES:
    'volreg reads no request body into memory other than manifests (VOLREG_MANIFEST_MAX_BYTES); blobs and snapshots stream to disk',
};

/** Storage drivers that exist; VOLREG_STORAGE accepts `gridfs` syntactically but refuses it until it does. */
const IMPLEMENTED_STORAGE: ReadonlyArray<Config['storage']> = ['fs'];
const MAX_BODY_LIMIT = 1024 * 1024 * 1024;

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface LoadedConfig {
  config: Config;
  /** non-fatal findings, e.g. unknown VOLREG_* variables */
  warnings: string[];
}

type Env = Readonly<Record<string, string | undefined>>;

/** A value to be parsed, with where it came from (for messages). */
interface Source {
  value: string;
  origin: string; // "VOLREG_ADDR" or "VOLREG_ADDR (from /etc/volreg.yaml)"
}

export function loadConfig(env: Env, opts: { cwd?: string } = {}): LoadedConfig {
  const cwd = opts.cwd ?? process.cwd();
  const problems: string[] = [];
  const warnings: string[] = [];

  const fromFile = readConfigFile(env, cwd, problems, warnings);
  const pick = (name: VariableName): Source | undefined => {
    const v = env[name];
    if (v !== undefined && v !== '') return { value: v, origin: name };
    return fromFile.get(name);
  };

  for (const name of Object.keys(env)) {
    if (name.startsWith('VOLREG_') && !(name in VARIABLES) && !CLIENT_VARIABLES.includes(name)) {
      warnings.push(unknownVariable(name, 'the environment'));
    }
  }

  const check = <T>(name: VariableName, fallback: T, parse: (s: Source) => T): T => {
    const src = pick(name);
    if (!src) return fallback;
    try {
      return parse(src);
    } catch (err) {
      problems.push(`${src.origin}: ${(err as Error).message}`);
      return fallback;
    }
  };

  const addr = check('VOLREG_ADDR', parseAddr(DEFAULTS.addr), (s) => parseAddr(s.value));
  const dataDir = check('VOLREG_DATA_DIR', resolve(cwd, DEFAULTS.dataDir), (s) => parseDataDir(s.value, cwd));
  const mongodbUrl = check('VOLREG_MONGODB_URL', undefined as string | undefined, (s) => parseMongoUrl(s.value));
  const mongodbDatabase = check('VOLREG_MONGODB_DATABASE', DEFAULTS.mongodbDatabase as string, (s) => parseDatabaseName(s.value));
  const mongodbReopenAfterSeconds = check('VOLREG_MONGODB_REOPEN_AFTER', DEFAULTS.mongodbReopenAfterSeconds as number, (s) => parseSeconds(s.value, 24 * 3600));
  const storage = check('VOLREG_STORAGE', DEFAULTS.storage as Config['storage'], (s) => parseStorage(s.value));
  const authFile = check('VOLREG_AUTH_FILE', undefined as string | undefined, (s) => parseReadableFile(s.value, cwd));
  const tlsCert = check('VOLREG_TLS_CERT', undefined as string | undefined, (s) => parseReadableFile(s.value, cwd));
  const tlsKey = check('VOLREG_TLS_KEY', undefined as string | undefined, (s) => parseReadableFile(s.value, cwd));
  if ((pick('VOLREG_TLS_CERT') === undefined) !== (pick('VOLREG_TLS_KEY') === undefined)) {
    problems.push('VOLREG_TLS_CERT and VOLREG_TLS_KEY: set both (HTTPS) or neither (HTTP)');
  } else if (tlsCert !== undefined && tlsKey !== undefined) {
    // a certificate or key that does not parse, or do not belong together, is configuration
    // (exit 2), found before the database is opened and migrated
    const problem = tlsPairProblem(tlsCert, tlsKey);
    if (problem !== null) problems.push(`VOLREG_TLS_CERT and VOLREG_TLS_KEY: cannot serve HTTPS with them: ${problem}`);
  }
  const logLevel = check('VOLREG_LOG_LEVEL', DEFAULTS.logLevel as Config['logLevel'], (s) => parseLogLevel(s.value));
  const manifestBytes = check('VOLREG_MANIFEST_MAX_BYTES', DEFAULTS.manifestBytes as number, (s) =>
    parseInteger(s.value, 1, MAX_BODY_LIMIT, 'bytes'),
  );
  const minFreeBytes = check('VOLREG_MIN_FREE_BYTES', DEFAULTS.minFreeBytes as number, (s) => parseInteger(s.value, 0, Number.MAX_SAFE_INTEGER, 'bytes'));
  const purgeAfterSeconds = check('VOLREG_UPLOAD_PURGE_AFTER', DEFAULTS.purgeAfterSeconds as number, (s) =>
    parseInteger(s.value, 1, 365 * 24 * 3600, 'seconds'),
  );
  const purgeIntervalSeconds = check('VOLREG_UPLOAD_PURGE_INTERVAL', DEFAULTS.purgeIntervalSeconds as number, (s) =>
    parseInteger(s.value, 0, 365 * 24 * 3600, 'seconds'),
  );
  const gcIntervalSeconds = check('VOLREG_GC_INTERVAL', DEFAULTS.gcIntervalSeconds as number, (s) =>
    parseInteger(s.value, 0, 365 * 24 * 3600, 'seconds'),
  );
  const gcGraceSeconds = check('VOLREG_GC_GRACE', DEFAULTS.gcGraceSeconds as number, (s) => parseInteger(s.value, 0, 365 * 24 * 3600, 'seconds'));
  const gcDeleteUntagged = check('VOLREG_GC_DELETE_UNTAGGED', DEFAULTS.gcDeleteUntagged as boolean, (s) => parseBoolean(s.value));
  const shutdownGraceSeconds = check('VOLREG_SHUTDOWN_GRACE', DEFAULTS.shutdownGraceSeconds as number, (s) =>
    parseSeconds(s.value, 3600),
  );
  const clientIdleSeconds = check('VOLREG_CLIENT_IDLE_TIMEOUT', DEFAULTS.clientIdleSeconds as number, (s) => {
    const n = parseSeconds(s.value, 24 * 3600);
    if (n < 1) throw new Error(`${s.value.trim()} is too short: at least 1 second`);
    return n;
  });
  const trustedProxies = check('VOLREG_TRUSTED_PROXIES', [] as Config['trustedProxies'], (s) => parseIpRanges(s.value));
  const volumeSeries = check('VOLREG_METRICS_VOLUMES', (authFile !== undefined ? DEFAULTS.metricsVolumeSeriesWithAuth : DEFAULTS.metricsVolumeSeries) as number, (s) =>
    parseInteger(s.value, 0, 1_000_000, 'volumes'),
  );
  const volumesMaxAgeSeconds = check('VOLREG_METRICS_VOLUMES_MAX_AGE', DEFAULTS.metricsVolumesMaxAgeSeconds as number, (s) => parseSeconds(s.value, 24 * 3600));

  if (problems.length > 0) throw new ConfigError(problems);
  for (const [name, path, what] of [
    ['VOLREG_TLS_KEY', tlsKey, 'the private key'],
    ['VOLREG_AUTH_FILE', authFile, 'the password hashes'],
  ] as const) {
    const mode = path === undefined ? 0 : statSync(path).mode & 0o777;
    if ((mode & 0o004) !== 0) {
      warnings.push(`${name}: ${path} can be read by every user of this host (mode ${mode.toString(8).padStart(4, '0')}), ${what} among them; chmod o-r it (0640 with a group volreg is in, or 0600)`);
    }
  }
  if (authFile !== undefined && tlsCert === undefined && !isLoopback(addr.host)) {
    warnings.push(
      `VOLREG_AUTH_FILE without VOLREG_TLS_CERT on ${addr.host}: passwords and volume data cross the network in clear text; serve HTTPS (VOLREG_TLS_CERT, VOLREG_TLS_KEY) or put a TLS proxy in front`,
    );
  }
  return {
    config: {
      addr,
      dataDir,
      mongodbUrl,
      mongodbDatabase,
      mongodbReopenAfterSeconds,
      storage,
      authFile,
      tls: tlsCert !== undefined && tlsKey !== undefined ? { certFile: tlsCert, keyFile: tlsKey } : undefined,
      logLevel,
      limits: { manifestBytes, minFreeBytes },
      uploads: { purgeAfterSeconds, purgeIntervalSeconds },
      gc: { intervalSeconds: gcIntervalSeconds, graceSeconds: gcGraceSeconds, deleteUntagged: gcDeleteUntagged },
      shutdownGraceSeconds,
      clientIdleSeconds,
      trustedProxies,
      metrics: { volumeSeries, volumesMaxAgeSeconds },
    },
    warnings,
  };
}

function readConfigFile(env: Env, cwd: string, problems: string[], warnings: string[]): Map<VariableName, Source> {
  const out = new Map<VariableName, Source>();
  const file = env.VOLREG_CONFIG;
  if (file === undefined || file === '') return out;
  const path = resolve(cwd, file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    problems.push(`VOLREG_CONFIG: cannot read ${JSON.stringify(file)} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    return out;
  }
  let doc: unknown;
  try {
    // YAML 1.2 is a superset of JSON, so one parser reads both.
    doc = parseYaml(text);
  } catch (err) {
    problems.push(`VOLREG_CONFIG: ${JSON.stringify(file)} is not valid YAML or JSON: ${firstLine((err as Error).message)}`);
    return out;
  }
  if (doc === null || doc === undefined) return out;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    problems.push(`VOLREG_CONFIG: ${JSON.stringify(file)} must hold a mapping of VOLREG_* variable names to values`);
    return out;
  }
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    if (!(key in VARIABLES) || key === 'VOLREG_CONFIG') {
      warnings.push(unknownVariable(key, JSON.stringify(file)));
      continue;
    }
    const origin = `${key} (from ${file})`;
    // YAML and JSON have booleans of their own (VOLREG_GC_DELETE_UNTAGGED: true): they read as
    // the words the environment would hold, and the variable's parser judges them as it would those
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      out.set(key as VariableName, { value: String(value), origin });
    } else if (value !== null) {
      problems.push(`${origin}: must be a string, a number or a boolean`);
    }
  }
  return out;
}

function unknownVariable(name: string, where: string): string {
  const retired = RETIRED_VARIABLES[name];
  if (retired !== undefined) return `${name} in ${where} limits nothing: ${retired}; ignored`;
  const near = closest(name, [...Object.keys(VARIABLES), ...CLIENT_VARIABLES]);
  return `${name} in ${where} is not a volreg variable; ignored${near ? ` (did you mean ${near}?)` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// value parsers: each throws an Error whose message completes "VARIABLE: <message>"

function show(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

export function parseAddr(value: string): { host: string; port: number } {
  const m = /^(?:\[(?<v6>[0-9A-Fa-f:.]+)\]|(?<host>[A-Za-z0-9.-]*)):(?<port>[0-9]{1,5})$/.exec(value);
  const port = m?.groups ? Number(m.groups.port) : NaN;
  if (!m?.groups || !(port >= 0 && port <= 65535)) {
    throw new Error(`${show(value)} is not host:port (e.g. 127.0.0.1:5000, 0.0.0.0:5000, [::1]:5000, or :0 for a free port)`);
  }
  const host = m.groups.v6 ?? m.groups.host ?? '';
  if (host.startsWith('-') || host.endsWith('-') || host.includes('..')) throw new Error(`${show(value)} has an invalid host name`);
  return { host: host === '' ? '127.0.0.1' : host, port };
}

/** Why Node's TLS can not use this certificate and key together; null when it can. */
function tlsPairProblem(certFile: string, keyFile: string): string | null {
  try {
    createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
    return null;
  } catch (err) {
    return firstLine((err as Error).message);
  }
}

function parseDataDir(value: string, cwd: string): string {
  const path = isAbsolute(value) ? value : resolve(cwd, value);
  try {
    if (!statSync(path).isDirectory()) throw new Error(`${show(value)} exists and is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return path; // created at start
    if ((err as NodeJS.ErrnoException).code) throw new Error(`${show(value)} cannot be used (${(err as NodeJS.ErrnoException).code})`);
    throw err;
  }
  return path;
}

function parseMongoUrl(value: string): string {
  // The value may carry a password: never echo it.
  if (!/^mongodb(\+srv)?:\/\/[^/?#\s]+(\/[^?#\s]*)?(\?\S*)?$/.test(value)) {
    throw new Error('not a mongodb:// or mongodb+srv:// connection string (value not shown: it may hold a password)');
  }
  const options = new URLSearchParams(value.includes('?') ? value.slice(value.indexOf('?') + 1) : '');
  for (const [key, option] of options) {
    // The driver reads option names in any case. Reads from a secondary can miss a write just
    // acknowledged: a push would not find its own manifest, and garbage collection could delete
    // bytes a manifest written on the primary just started to use.
    if (key.toLowerCase() === 'readpreference' && option !== 'primary') {
      throw new Error(`readPreference=${option}: volreg must read from the primary (a push reads what it wrote; gc must see every reference); remove the option`);
    }
    // Unacknowledged writes tell volreg nothing (not whether a tag was written, nor a duplicate).
    if (key.toLowerCase() === 'w' && option === '0') {
      throw new Error('w=0: volreg needs acknowledged writes; remove the option (the replica set default is majority)');
    }
  }
  return value;
}

function parseDatabaseName(value: string): string {
  if (value.length > 63 || !/^[^/\\. "$*<>:|?\x00]+$/.test(value)) {
    throw new Error(`${show(value)} is not a MongoDB database name (1-63 characters, none of /\\. "$*<>:|?)`);
  }
  return value;
}

function parseStorage(value: string): Config['storage'] {
  if (value !== 'fs' && value !== 'gridfs') throw new Error(`${show(value)} is not a blob store driver; use fs or gridfs`);
  if (!IMPLEMENTED_STORAGE.includes(value)) {
    throw new Error(`the ${value} blob store is not implemented yet; use fs`);
  }
  return value;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function parseReadableFile(value: string, cwd: string): string {
  const path = resolve(cwd, value);
  try {
    if (!statSync(path).isFile()) throw new Error(`${show(value)} is not a regular file`);
    accessSync(path, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`${show(value)} does not exist`);
    if (code) throw new Error(`${show(value)} cannot be read (${code})`);
    throw err;
  }
  return path;
}

function parseLogLevel(value: string): Config['logLevel'] {
  const v = value.toLowerCase();
  const found = LOG_LEVELS.find((l) => l === v);
  if (!found) throw new Error(`${show(value)} is not a log level; use one of ${LOG_LEVELS.join(', ')}`);
  return found;
}

function parseInteger(value: string, min: number, max: number, unit: string): number {
  const n = /^[0-9]+$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${show(value)} is not a whole number of ${unit} between ${min} and ${max}`);
  }
  return n;
}

function parseBoolean(value: string): boolean {
  const v = value.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Error(`${show(value)} is not true or false`);
}

function parseSeconds(value: string, max: number): number {
  const n = /^[0-9]+(\.[0-9]+)?$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isFinite(n) || n < 0 || n > max) throw new Error(`${show(value)} is not a number of seconds between 0 and ${max}`);
  return n;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** The known name nearest to a misspelt one (edit distance at most 3), for the warning. */
function closest(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 4;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
