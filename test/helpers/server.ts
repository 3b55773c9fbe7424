import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { MongoClient, type Db, type MongoClientOptions } from 'mongodb';
import type { Config } from '../../src/config/config.ts';
import { loadConfig } from '../../src/config/load-config.ts';
import { startServer, type Services, type StartOptions } from '../../src/main.ts';
import { chooseCli } from './built-cli.ts';
import { startMongoProxy, type MongoProxy } from './mongo-proxy.ts';
import { openTestMongo, type TestBackend } from './mongo.ts';

/**
 * Two ways to run the real volreg in a test:
 *
 * - startTestServer: the real app in this process, listening on 127.0.0.1:0, with a temporary
 *   data directory and this test file's own database (openTestMongo). Fast; use it for HTTP tests.
 * - spawnServer: the real `volreg serve` as a child process (VOLREG_BIN), on a data directory
 *   you choose, using the embedded engine on it (or MONGODB_URL when the suite runs against a
 *   real MongoDB). Use it for fault tests: kill -9, restart, SIGTERM.
 */

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** the package's bin, as `npx volreg` runs it: the sources through tsx */
export const PACKAGE_BIN = join(REPO_ROOT, 'bin', 'volreg.js');
const cli = chooseCli(REPO_ROOT, PACKAGE_BIN);
if (cli.stale) process.stderr.write(`volreg tests: ${cli.stale}; running the CLI through bin/volreg.js (slower: npm run build:test-cli)\n`);
/** the volreg command, compiled (dist-test/, as `npm test` builds it) unless that build is stale (test/helpers/built-cli.ts) */
export const VOLREG_BIN = cli.bin;

export interface TestServer {
  url: string;
  config: Config;
  services: Services;
  db: Db;
  /** which database the test runs on (test/helpers/mongo.ts) */
  backend: TestBackend;
  /** the embedded engine's change marks, as the server reads them (none on an external MongoDB) */
  changeMarks: SharedArrayBuffer | undefined;
  dataDir: string;
  /** stops the server, drops nothing, closes the test database connection, removes the data dir */
  close(): Promise<void>;
}

export interface TestServerOptions {
  /** names this test file's database (openTestMongo label); defaults to "server" */
  label?: string;
  /** VOLREG_* variables, parsed by the real loadConfig (e.g. VOLREG_AUTH_FILE) */
  env?: Record<string, string>;
  /** applied after loading (e.g. smaller limits) */
  configure?: (config: Config) => void;
  /** defaults to a silent logger; set VOLREG_TEST_LOG=debug to see logs on stderr */
  logger?: Logger;
  /**
   * the server's own MongoDB client, to the URI `uri` makes of the test database's (a proxy in
   * front of it: test/helpers/mongo-proxy.ts); by default it shares the test's client
   */
  mongoVia?: { uri: (testUri: string) => string | Promise<string>; options?: MongoClientOptions };
  /** how the archive inspection's worker is started (test/helpers/inspection-faults.ts) */
  startInspectionWorker?: StartOptions['startInspectionWorker'];
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), 'volreg-test-'));
  const mongo = await openTestMongo(opts.label ?? 'server');
  let own: MongoClient | undefined;
  try {
    const { config } = loadConfig({
      VOLREG_ADDR: '127.0.0.1:0',
      VOLREG_DATA_DIR: dataDir,
      VOLREG_SHUTDOWN_GRACE: '5',
      ...opts.env,
    });
    config.mongodbUrl = mongo.uri;
    config.mongodbDatabase = mongo.dbName;
    opts.configure?.(config);
    const logger = opts.logger ?? pino({ level: process.env.VOLREG_TEST_LOG ?? 'silent' }, pino.destination(2));
    // the server's own client is its to watch and reopen (client-watchdog.ts); the shared one is not
    const ownUri = opts.mongoVia ? await opts.mongoVia.uri(mongo.uri) : undefined;
    if (ownUri) {
      own = new MongoClient(ownUri, opts.mongoVia?.options);
      await own.connect();
    }
    const db = own ? own.db(mongo.dbName) : mongo.db;
    const running = await startServer(config, {
      logger,
      mongo: { db, ...(ownUri ? { uri: ownUri } : {}), ...(mongo.changeMarks ? { changeMarks: mongo.changeMarks } : {}) },
      startInspectionWorker: opts.startInspectionWorker,
    });
    let closing: Promise<void> | undefined;
    return {
      url: running.url,
      config,
      services: running.services,
      db: running.db,
      backend: mongo.backend,
      changeMarks: mongo.changeMarks,
      dataDir,
      close: () =>
        (closing ??= (async () => {
          await running.close();
          await own?.close();
          await mongo.close();
          await rm(dataDir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    await own?.close();
    await mongo.close();
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}

/** A test server whose MongoDB client goes through a wire proxy (test/helpers/mongo-proxy.ts), closed with it. */
export interface ProxiedTestServer extends TestServer {
  proxy: MongoProxy;
}

export async function startTestServerBehindProxy(
  label: string,
  options?: MongoClientOptions,
  more?: Pick<TestServerOptions, 'env' | 'logger'>,
): Promise<ProxiedTestServer> {
  let proxy: MongoProxy | undefined;
  try {
    const server = await startTestServer({ label, ...more, mongoVia: { uri: async (testUri) => (proxy = await startMongoProxy(testUri)).uri, options } });
    return {
      ...server,
      proxy: proxy!,
      close: async () => {
        await server.close();
        await proxy!.close();
      },
    };
  } catch (err) {
    await proxy?.close();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------

export interface SpawnedServer {
  url: string;
  child: ChildProcess;
  /** everything the process wrote so far */
  stdout(): string;
  stderr(): string;
  kill(signal?: NodeJS.Signals): void;
  /** resolves when the process has exited */
  waitExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface SpawnOptions {
  dataDir: string;
  /** extra environment (VOLREG_* variables); VOLREG_ADDR defaults to 127.0.0.1:0 */
  env?: Record<string, string>;
  /** defaults to [node, VOLREG_BIN, serve] */
  command?: string[];
  cwd?: string;
  /** the embedded engine on the data directory even when the suite runs on MONGODB_URL (tests of the engine as `serve` runs it) */
  embeddedEngine?: boolean;
  /** how long to wait for the listening line */
  timeoutMs?: number;
}

const LISTENING = /^volreg listening on (https?:\/\/\S+)$/m;

/**
 * The database a volreg command on `dataDir` uses: the embedded engine in the data directory,
 * or, when the suite runs on MONGODB_URL, one database per data directory there (so a restart,
 * or `volreg migrate` on the same directory, finds the data again).
 */
export function databaseEnv(dataDir: string): Record<string, string> {
  const url = process.env.MONGODB_URL;
  if (!url) return {};
  return { VOLREG_MONGODB_URL: url, VOLREG_MONGODB_DATABASE: `volreg_spawn_${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}` };
}

/** Starts `volreg serve` as a child process and waits for `volreg listening on ...`. */
export async function spawnServer(opts: SpawnOptions): Promise<SpawnedServer> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) env[k] = v;
  env.VOLREG_ADDR = '127.0.0.1:0';
  env.VOLREG_DATA_DIR = opts.dataDir;
  env.VOLREG_LOG_LEVEL = 'info';
  if (!opts.embeddedEngine) Object.assign(env, databaseEnv(opts.dataDir));
  Object.assign(env, opts.env);

  const [cmd, ...args] = opts.command ?? [process.execPath, VOLREG_BIN, 'serve'];
  // its own process group, so a kill reaches what a wrapper (npm start) runs too: an orphaned
  // server would hold the pipes open and keep the test worker from ever exiting
  const child = spawn(cmd!, args, { cwd: opts.cwd ?? REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      child.kill(signal); // the group is gone already
    }
  };
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });

  const timeoutMs = opts.timeoutMs ?? 60_000;
  const url = await new Promise<string>((resolve, reject) => {
    const tail = (): string => `\n--- stdout ---\n${out.slice(-4000)}\n--- stderr ---\n${err.slice(-4000)}`;
    const timer = setTimeout(() => {
      killGroup('SIGKILL');
      reject(new Error(`volreg serve did not print its listening line within ${timeoutMs} ms${tail()}`));
    }, timeoutMs);
    const onData = (): void => {
      const m = LISTENING.exec(out);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`volreg serve exited (code ${code}, signal ${signal}) before listening${tail()}`));
    });
  });

  return {
    url,
    child,
    stdout: () => out,
    stderr: () => err,
    kill: (signal: NodeJS.Signals = 'SIGTERM') => {
      // SIGKILL (a teardown) takes the whole group; other signals go to the child alone, as an operator's would
      if (signal === 'SIGKILL') killGroup(signal);
      else if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitExit: () => exited,
  };
}
