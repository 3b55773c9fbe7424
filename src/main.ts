import { constants, readFileSync } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { MongoClient, MongoError, type Db } from 'mongodb';
import { pino, type Logger } from 'pino';
import { createApp, type HealthCheck } from './app.ts';
import { processClock } from './domain/clock.ts';
import { LATE, within } from './domain/within.ts';
import type { Config } from './config/config.ts';
import { ConfigError } from './config/load-config.ts';
import { basicAuth, loadHtpasswd, type BasicAuth } from './http/auth.ts';
import { answerClientErrors } from './http/client-errors.ts';
import { refusePlainHttp } from './http/plain-http-on-tls.ts';
import { oneRequestAtATimePerConnection } from './http/connection-order.ts';
import { continueWhenBodyRead, refuseOtherExpectationsInApp } from './http/expect-continue.ts';
import { createHttpMetrics, registerGcGauges, registerStorageGauges, registerVolumeGauges } from './http/metrics.ts';
import { VolumeFreshnessReader } from './services/volume-freshness.ts';
import type { HandlerMap } from './http/router.ts';
import { collections, type Collections } from './metadata/collections.ts';
import { Migrator } from './metadata/migrator.ts';
import { watchDriverSockets } from './metadata/driver-sockets.ts';
import { ClientWatchdog } from './metadata/client-watchdog.ts';
import { fromMongoFailure } from './metadata/mongo-errors.ts';
import { fromStorageFailure } from './storage/storage-failure.ts';
import { RepoContentRepository } from './metadata/repo-content-repository.ts';
import { loadSchemas } from './metadata/schema-validator.ts';
import type { BlobStore } from './storage/blob-store.ts';
import type { GcReport } from './maintenance/gc.ts';
import { ensureWritableDataDir } from './storage/data-dir-access.ts';
import { FsBlobStore } from './storage/fs-driver.ts';
import { bindBlobStore } from './metadata/store-binding.ts';
import { OffThreadInspector, type StartInspectionWorker } from './workers/off-thread-inspector.ts';
import type { EngineThread } from './workers/engine-thread.ts';
import { engineSocket } from './workers/engine-socket.ts';
import { BlobRepository } from './metadata/blob-repository.ts';
import { UploadRepository } from './metadata/upload-repository.ts';
import { BlobService } from './services/blob-service.ts';
import { UploadService } from './services/upload-service.ts';
import { blobHandlers } from './http/handlers/blob-handlers.ts';
import { CatalogRepository } from './metadata/catalog-repository.ts';
import { ManifestRepository } from './metadata/manifest-repository.ts';
import { TagRepository } from './metadata/tag-repository.ts';
import { ManifestService } from './services/manifest-service.ts';
import { ReferrersService } from './services/referrers-service.ts';
import { RepositoryService } from './services/repository-service.ts';
import { TagService } from './services/tag-service.ts';
import { catalogHandlers } from './http/handlers/catalog-handlers.ts';
import { manifestHandlers } from './http/handlers/manifest-handlers.ts';
import { referrersHandlers } from './http/handlers/referrers-handlers.ts';
import { tagHandlers } from './http/handlers/tag-handlers.ts';
import { SnapshotRepository } from './metadata/snapshot-repository.ts';
import { VolumeService } from './services/volume-service.ts';
import { volumeHandlers } from './http/handlers/volume-handlers.ts';
import { GracefulClose } from './http/graceful-close.ts';
import { rangeMatcher } from './domain/ip-ranges.ts';

/**
 * The composition root: config -> logger -> MongoDB (a real one, or the embedded engine) ->
 * migrations -> services -> handler maps -> Koa app -> listen -> timers. Only this module (and
 * the CLI that calls it) opens connections and starts timers.
 *
 * Each area (blobs and uploads, manifests and tags, volumes) plugs in with a small edit in the
 * marked sections of buildServices and buildHandlers below.
 */

/** Everything the composition builds, by area. */
export interface Services {
  /** repositories and their content units (shared by every area) */
  repoContent: RepoContentRepository;

  // ---- blobs and uploads ---------------------------------------------------------------
  /** the blob store (fs driver); /readyz pings it */
  blobStore: BlobStore;
  /** blobs as repositories see them (stat, read, delete, mount, ingest) */
  blobs: BlobService;
  /** upload sessions; purgeAbandoned runs every VOLREG_UPLOAD_PURGE_INTERVAL seconds */
  uploads: UploadService;

  // ---- manifests and tags --------------------------------------------------------------
  /** push/pull/delete manifests; `put(repo, reference, body, contentType)` stores any manifest */
  manifests: ManifestService;
  tags: TagService;
  repositories: RepositoryService;
  referrers: ReferrersService;

  // ---- volumes -------------------------------------------------------------------------
  /** volume snapshots over /api/v1 (layer + config + manifest + tag + snapshot index) */
  volumes: VolumeService;
}

/** What buildServices and buildHandlers get to work with. */
export interface ServiceContext {
  config: Config;
  db: Db;
  collections: Collections;
  logger: Logger;
  /** how the archive inspection's worker is started (tests: one that fails); by default the real one */
  startInspectionWorker?: StartInspectionWorker;
}

export async function buildServices(ctx: ServiceContext): Promise<Services> {
  const repoContent = new RepoContentRepository(ctx.collections);

  // ---- blobs and uploads ---------------------------------------------------------------
  if (ctx.config.storage !== 'fs') throw new StartupError(`VOLREG_STORAGE=${ctx.config.storage} is not available yet; use fs`);
  const blobStore = await FsBlobStore.open({ root: ctx.config.dataDir, minFreeBytes: ctx.config.limits.minFreeBytes });
  // before anything reads or collects: these blobs must be the ones this database records
  await bindBlobStore(ctx.db, blobStore);
  const blobs = new BlobService({
    store: blobStore,
    units: new BlobRepository(ctx.collections),
    membership: repoContent,
    // a quarter of the grace period (at most a minute): a push gets most of the grace after its HEAD
    refreshHeldAfterMs: Math.min(60_000, ctx.config.gc.graceSeconds * 250),
  });
  const uploads = new UploadService({ store: blobStore, blobs, sessions: new UploadRepository(ctx.collections) });

  const inspector = new OffThreadInspector({
    startWorker: ctx.startInspectionWorker,
    // the client is told to retry; why the worker failed (EMFILE, a crash) is for the operator
    onFailure: (err) => ctx.logger.error({ err }, 'the archive inspection could not run; its requests were answered 503 (not a verdict on any archive)'),
  });

  // ---- manifests and tags --------------------------------------------------------------
  const manifestRepo = new ManifestRepository(ctx.collections, repoContent);
  const tagRepo = new TagRepository(ctx.collections, repoContent);
  const catalogRepo = new CatalogRepository(ctx.collections);
  const tags = new TagService({ tags: tagRepo, manifests: manifestRepo, repos: catalogRepo });
  const manifests = new ManifestService({
    manifests: manifestRepo,
    blobs: manifestRepo,
    blobBytes: blobStore,
    tagWriter: tagRepo,
    tags,
    repos: repoContent,
    limits: ctx.config.limits,
    logger: ctx.logger,
  });

  return {
    repoContent,
    blobStore,
    blobs,
    uploads,
    manifests,
    tags,
    repositories: new RepositoryService({ catalog: catalogRepo }),
    referrers: new ReferrersService({ manifests: manifestRepo }),
    // ---- volumes -------------------------------------------------------------------------
    // Snapshot archives are decoded, hashed and parsed on a worker thread (see why there).
    volumes: new VolumeService(blobs, manifests, new SnapshotRepository(ctx.db, ctx.collections.marks), (source, opts) => inspector.inspect(source, opts)),
  };
}

export function buildHandlers(services: Services, ctx: ServiceContext): HandlerMap[] {
  return [
    blobHandlers({ blobs: services.blobs, uploads: services.uploads }),
    manifestHandlers({ manifests: services.manifests }, ctx.config.limits),
    tagHandlers({ tags: services.tags }),
    catalogHandlers({ repositories: services.repositories }),
    referrersHandlers({ referrers: services.referrers }),
    volumeHandlers({ volumes: services.volumes }),
  ];
}

// ---------------------------------------------------------------------------------------------

export interface RunningServer {
  /** http://HOST:PORT, with the real port when VOLREG_ADDR asked for :0 */
  url: string;
  config: Config;
  services: Services;
  db: Db;
  logger: Logger;
  /**
   * Stops accepting connections, lets in-flight requests finish (at most
   * VOLREG_SHUTDOWN_GRACE seconds), stops timers, then closes MongoDB and the engine.
   * Safe to call more than once.
   */
  close(): Promise<void>;
  /**
   * Reads VOLREG_AUTH_FILE again (users and access rules; SIGHUP): a file with a problem keeps
   * the users and rules in force, and its problems are logged. Resolves whether it was taken.
   */
  reloadAuth(): Promise<boolean>;
}

export interface StartOptions {
  /** defaults to pino JSON on stdout at the configured level */
  logger?: Logger;
  /** an already connected database (tests), with its engine's change marks when it has them; it is not closed by close() */
  mongo?: { db: Db; changeMarks?: SharedArrayBuffer; uri?: string };
  /** collect Node process metrics too (the real service does; in-process test servers need not) */
  processMetrics?: boolean;
  /** how the archive inspection's worker is started (tests of its failures) */
  startInspectionWorker?: StartInspectionWorker;
}

export function createLogger(config: Pick<Config, 'logLevel'>): Logger {
  return pino({ level: config.logLevel, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * The log of a command that prints its own report (gc, migrate): warnings and worse unless a
 * quieter level is set, on stderr so that `--json` on stdout stays one JSON document, and
 * written at once, as such a command ends with process.exit.
 */
export function createCommandLogger(config: Pick<Config, 'logLevel'>): Logger {
  const level = config.logLevel === 'info' ? 'warn' : config.logLevel;
  return pino({ level, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}

export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const logger = opts.logger ?? createLogger(config);
  await ensureWritableDataDir(config.dataDir).catch((err: unknown) => {
    throw new StartupError((err as Error).message);
  });
  loadSchemas();
  const auth: BasicAuth | undefined = config.authFile ? basicAuth(await loadHtpasswd(config.authFile), logger) : undefined;
  // A port in use is found before the metadata store opens and migrates: an operator who started
  // a second volreg by mistake hears it at once, and its data directory is left untouched.
  if (config.addr.port !== 0) await checkPortFree(config.addr.host, config.addr.port);
  // before the driver opens a connection: its raw socket errors are then told apart (fromMongoFailure)
  watchDriverSockets();

  const metadata: OpenedMetadata = opts.mongo ? { ...opts.mongo, close: async () => {} } : await openMetadata(config, logger);
  // Undone in reverse order by close(), or on a failed start.
  const cleanup: Array<() => Promise<void>> = [metadata.close, ...(auth ? [auth.close] : [])];
  const undo = async (): Promise<void> => {
    let failure: unknown;
    while (cleanup.length > 0) {
      try {
        await cleanup.pop()!();
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
  };
  try {
    const db = metadata.db;
    const applied = await new Migrator(db, { logger }).up();
    if (applied.length > 0) logger.info({ applied }, 'migrations applied');

    const ctx: ServiceContext = { config, db, collections: collections(db, metadata.changeMarks), logger, startInspectionWorker: opts.startInspectionWorker };
    const services = await buildServices(ctx);
    const metrics = createHttpMetrics({ processMetrics: opts.processMetrics ?? false });
    registerStorageGauges(metrics.registry, { dataDir: config.dataDir, minFreeBytes: config.limits.minFreeBytes, metadataFailure: metadata.failure });
    const freshness = new VolumeFreshnessReader(services.volumes, config.metrics.volumesMaxAgeSeconds * 1000);
    registerVolumeGauges(metrics.registry, {
      read: () => freshness.read(),
      seriesLimit: config.metrics.volumeSeries,
      onError: (err) => logger.warn({ err }, 'volume figures for /metrics not read'),
    });
    const app = createApp({
      logger,
      handlers: buildHandlers(services, ctx),
      readiness: readinessChecks(config, db, services.blobStore, metadata.failure, logger),
      fatal: metadata.failure,
      translateError: (err) => fromMongoFailure(err) ?? fromStorageFailure(err),
      middleware: [metrics.middleware, ...(auth ? [auth.authenticate] : [])],
      authorize: auth?.authorize,
      metrics: metrics.handler,
      clientIdleSeconds: config.clientIdleSeconds,
      trustedProxy: rangeMatcher(config.trustedProxies),
    });

    const watch = startClientWatchdog(config, metadata, logger);
    cleanup.push(watch.stop);
    const purge = startPurgeTimer(config, services, logger);
    cleanup.push(purge.stop);
    const gc = startGcTimer(config, services, ctx.collections, logger);
    cleanup.push(gc.stop);
    if (config.gc.intervalSeconds > 0) registerGcGauges(metrics.registry, gc.lastReport);

    const server = await httpServer(config, oneRequestAtATimePerConnection(app.callback()));
    continueWhenBodyRead(server);
    refuseOtherExpectationsInApp(server);
    answerClientErrors(server);
    const graceful = new GracefulClose(server);
    // Blob uploads may stream for a long time: no overall request deadline (Node's default is
    // 5 minutes); slow headers are still cut off by headersTimeout.
    server.requestTimeout = 0;
    // Idle keep-alive connections stay as long as any other idle connection (Node's 5 s default
    // is shorter than clients keep them: Go's 90 s, as skopeo and podman use, so a client would
    // send its next request, an upload perhaps, onto a connection the server was closing).
    server.keepAliveTimeout = config.clientIdleSeconds * 1000;
    const port = await listen(server, config.addr.host, config.addr.port);
    const graceMs = config.shutdownGraceSeconds * 1000;
    cleanup.push(() => graceful.close(graceMs, () => logger.warn({ graceMs }, 'shutdown grace period over; closing remaining connections')));
    const url = `${config.tls ? 'https' : 'http'}://${config.addr.host.includes(':') ? `[${config.addr.host}]` : config.addr.host}:${port}`;

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> =>
      (closing ??= (async () => {
        // HTTP first (drain in-flight requests), then timers, then MongoDB and the engine
        await undo();
        logger.info('stopped');
      })());
    const reloadAuth = async (): Promise<boolean> => {
      if (!auth || !config.authFile) return false;
      try {
        const file = await loadHtpasswd(config.authFile);
        auth.replace(file);
        logger.info({ users: file.users.size, restricted: file.policy.restricted }, 'auth file reloaded');
        return true;
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
        logger.error({ problems }, 'auth file not reloaded; the users and rules in force stay');
        return false;
      }
    };
    logger.info({ url, storage: config.storage, mongodb: config.mongodbUrl ? 'external' : 'embedded' }, 'listening');
    return { url, config, services, db, logger, close, reloadAuth };
  } catch (err) {
    await undo().catch(() => {});
    throw err;
  }
}

export interface OpenedMetadata {
  db: Db;
  /** what `db`'s client connects to (tests may pass a database without it) */
  uri?: string;
  close: () => Promise<void>;
  failure?: () => string | undefined;
  changeMarks?: SharedArrayBuffer;
}

/**
 * One MongoClient for the process: to VOLREG_MONGODB_URL, or to the embedded engine started
 * on a thread of this process (workers/engine-thread.ts) on DATA_DIR/db. `close` closes both.
 */
export async function openMetadata(
  config: Config,
  logger: Logger,
): Promise<OpenedMetadata> {
  const dbPath = join(config.dataDir, 'db');
  // on a thread of its own, loaded only when needed: a service on a real MongoDB never starts it
  const engine = config.mongodbUrl ? undefined : await startEmbeddedEngine(dbPath, logger);
  if (engine) logger.info({ dbPath }, 'embedded mongodb engine started');
  const uri = config.mongodbUrl ?? (engine as { uri: string }).uri;
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 15_000 });
  try {
    await client.connect();
  } catch (err) {
    await engine?.close();
    throw new StartupError(`cannot connect to MongoDB: ${(err as Error).message}`);
  }
  return {
    db: client.db(config.mongodbDatabase),
    uri,
    close: async () => {
      await client.close();
      await engine?.close();
    },
    ...(engine ? { failure: () => engineFailure(engine.failure()), changeMarks: engine.changeMarks } : {}),
  };
}

/** The embedded engine on DATA_DIR/db, listening on a socket only this user may reach (engine-socket.ts). */
async function startEmbeddedEngine(dbPath: string, logger: Logger): Promise<EngineThread> {
  const socket = await engineSocket(dbPath).catch((err: unknown) => {
    throw new StartupError((err as Error).message);
  });
  try {
    const { startEngineThread } = await import('./workers/engine-thread.ts');
    const engine = await startEngineThread({ dbPath, socketPath: socket.socketPath }, (msg, fields, level) =>
      logger[level ?? 'debug']({ ...fields, component: 'engine' }, msg),
    );
    return { ...engine, close: () => engine.close().finally(socket.remove) };
  } catch (err) {
    await socket.remove();
    throw err;
  }
}

/** The embedded engine's failure as an operator should read it (see mongo-engine/command-dispatch.ts). */
function engineFailure(reason: string | undefined): string | undefined {
  if (!reason) return undefined;
  const remedy = /ENOSPC|EDQUOT|no space/i.test(reason) ? 'free disk space' : 'see the log';
  return `the embedded MongoDB engine accepts no writes: ${reason}; remove the cause (${remedy}) and restart volreg`;
}

const READINESS_TIMEOUT_MS = 1500;

class ReadinessTimeout extends Error {}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const r = await within(p, ms);
  // (within's race keeps listening to p, so a late rejection is not unhandled)
  if (r === LATE) throw new ReadinessTimeout(`${what} did not answer within ${ms} ms`);
  return r;
}

/**
 * /readyz: MongoDB answers a ping, and the blob store answers (bounded waits, so never a hang).
 * Their reasons are shown to anyone, so a driver's error (which names hosts) is given by its
 * kind only; the log has the whole of it.
 */
export function readinessChecks(
  config: Config,
  db: Db,
  blobStore: BlobStore | undefined,
  metadataFailure?: () => string | undefined,
  logger?: Logger,
): HealthCheck[] {
  return [
    {
      name: 'mongodb',
      // The race bounds the wait even while the driver is still selecting a server.
      check: async () => {
        const failed = metadataFailure?.();
        if (failed) throw new Error(failed);
        try {
          await withTimeout(db.command({ ping: 1 }, { timeoutMS: READINESS_TIMEOUT_MS }), READINESS_TIMEOUT_MS, 'MongoDB');
        } catch (err) {
          if (err instanceof ReadinessTimeout) throw err;
          logger?.debug({ err }, 'readiness: MongoDB ping failed');
          // a driver error by its class, a raw socket error by its code (EPIPE)
          const kind = err instanceof MongoError ? err.name : ((err as NodeJS.ErrnoException).code ?? (err as Error).name);
          throw new Error(`MongoDB did not answer a ping (${kind})`);
        }
      },
    },
    {
      name: 'blobstore',
      check: async () => {
        try {
          if (blobStore) await withTimeout(blobStore.ping(), READINESS_TIMEOUT_MS, 'the blob store');
          else await access(config.dataDir, constants.W_OK);
        } catch (err) {
          if (err instanceof ReadinessTimeout || !(err as NodeJS.ErrnoException).code) throw err;
          // a filesystem error names absolute paths: its code says enough
          throw new Error(`the data directory cannot be written (${(err as NodeJS.ErrnoException).code})`);
        }
      },
    },
  ];
}

/**
 * Runs `task` every `intervalMs` (0: never), one round at a time: a round still running when the
 * next tick comes is not doubled. `stop` clears the timer, signals the running round to give up
 * and waits for it.
 */
function startRepeatingTask(
  name: string,
  intervalMs: number,
  task: (signal: AbortSignal) => Promise<void>,
  logger: Logger,
): { stop: () => Promise<void> } {
  const stopping = new AbortController();
  let running: Promise<void> | undefined;
  const run = (): void => {
    if (running) return;
    running = task(stopping.signal)
      .catch((err: unknown) => logger.error({ err, task: name }, 'maintenance task failed'))
      .finally(() => {
        running = undefined;
      });
  };
  const timer = intervalMs > 0 ? setInterval(run, intervalMs) : undefined;
  timer?.unref();
  return {
    stop: async () => {
      if (timer) clearInterval(timer);
      stopping.abort();
      await running;
    },
  };
}

/**
 * The MongoDB client looked at a few times per VOLREG_MONGODB_REOPEN_AFTER, and reopened when it
 * has lost its database for that long while a new client reaches it (client-watchdog.ts).
 */
function startClientWatchdog(config: Config, metadata: OpenedMetadata, logger: Logger): { stop: () => Promise<void> } {
  const reopenAfterMs = config.mongodbReopenAfterSeconds * 1000;
  if (!metadata.uri || reopenAfterMs <= 0) return { stop: async () => {} };
  const watchdog = new ClientWatchdog({ client: metadata.db.client, uri: metadata.uri, logger, reopenAfterMs });
  const intervalMs = Math.min(5000, Math.max(250, reopenAfterMs / 4));
  return startRepeatingTask('mongodb-client-watchdog', intervalMs, () => watchdog.check(), logger);
}

/** Abandoned upload sessions purged every VOLREG_UPLOAD_PURGE_INTERVAL seconds. */
function startPurgeTimer(config: Config, services: Services, logger: Logger): { stop: () => Promise<void> } {
  return startRepeatingTask(
    'upload-purge',
    config.uploads.purgeIntervalSeconds * 1000,
    async () => {
      const olderThan = processClock.cutoff(config.uploads.purgeAfterSeconds * 1000);
      const purged = await services.uploads.purgeAbandoned(olderThan);
      logger.info({ purged, olderThan }, 'abandoned uploads purged');
    },
    logger,
  );
}

/** Garbage collection every VOLREG_GC_INTERVAL seconds (0: never); `lastReport` is the last finished run's. */
function startGcTimer(config: Config, services: Services, c: Collections, logger: Logger): { stop: () => Promise<void>; lastReport: () => GcReport | null } {
  let last: GcReport | null = null;
  const task = startRepeatingTask(
    'gc',
    config.gc.intervalSeconds * 1000,
    async (signal) => {
      const { collectGarbage } = await import('./maintenance/gc.ts');
      last = await collectGarbage({
        collections: c,
        blobStore: services.blobStore,
        uploads: services.uploads,
        logger,
        graceSeconds: config.gc.graceSeconds,
        deleteUntagged: config.gc.deleteUntagged,
        dryRun: false,
        signal,
      });
    },
    logger,
  );
  return { stop: task.stop, lastReport: () => last };
}

/** HTTP, or HTTPS with the configured certificate and key (read once, at start). */
async function httpServer(config: Config, handler: RequestListener): Promise<Server> {
  // a request without Host is refused by the app, with the error envelope (unservable-requests.ts)
  const options = { requireHostHeader: false };
  if (!config.tls) return createServer(options, handler);
  const [cert, key] = await Promise.all([readFile(config.tls.certFile), readFile(config.tls.keyFile)]);
  try {
    const server = createHttpsServer({ ...options, cert, key }, handler);
    refusePlainHttp(server, { idleMs: config.clientIdleSeconds * 1000 });
    return server;
  } catch (err) {
    throw new StartupError(`cannot serve HTTPS with VOLREG_TLS_CERT and VOLREG_TLS_KEY: ${(err as Error).message}`);
  }
}

/** Raised for failures to start that are not configuration errors (exit code 1). */
export class StartupError extends Error {
  override name = 'StartupError';
}

/** What an EACCES on listen may mean: a privileged port (below net.ipv4.ip_unprivileged_port_start, 1024 by default). */
function privilegedPorts(port: number): string {
  let firstFree = 1024;
  try {
    firstFree = Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim()) || firstFree;
  } catch {
    // not Linux: the classic limit
  }
  return port < firstFree ? `: a port below ${firstFree} needs root or CAP_NET_BIND_SERVICE; use port ${firstFree} or above (or a proxy in front)` : '';
}

/** Fails as the service's listen would if `host:port` is taken; frees it again at once. */
async function checkPortFree(host: string, port: number): Promise<void> {
  const probe = createNetServer();
  await listen(probe, host, port);
  await new Promise((resolve) => probe.close(resolve));
}

function listen(server: NetServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      // a port below 1024 is privileged: the usual surprise of a service moved off root
      const why = err.code === 'EACCES' ? privilegedPorts(port) : '';
      reject(new StartupError(`cannot listen on ${host}:${port}: ${err.code ?? err.message}${why}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

