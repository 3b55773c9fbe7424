import type { Context, Middleware } from 'koa';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { freeBytes } from '../storage/free-space.ts';
import { matchRoute } from './router.ts';
import { recordedStatus } from './recorded-status.ts';
import { bodyBytes } from './body-bytes.ts';
import { cutOff } from './client-idle.ts';
import type { VolumeFreshness } from '../services/volume-freshness.ts';

/**
 * Prometheus metrics for GET /metrics: requests by route id and status, durations, and bytes
 * in and out. Labels use the route id of the route table (never the raw path), so the number of
 * series stays bounded whatever clients request. Each app gets its own registry, so several
 * servers in one process (tests) do not share counters.
 */
export interface HttpMetrics {
  registry: Registry;
  middleware: Middleware;
  /** the GET /metrics handler */
  handler: (ctx: Context) => Promise<void>;
}

const FIXED_ROUTES: Readonly<Record<string, string>> = { '/healthz': 'healthz', '/readyz': 'readyz', '/metrics': 'metrics' };

export function createHttpMetrics(opts: { processMetrics?: boolean } = {}): HttpMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'volreg_' });

  const requests = new Counter({
    name: 'volreg_http_requests_total',
    help: 'HTTP requests by route id, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'volreg_http_request_duration_seconds',
    help: 'HTTP request duration by route id and method, from headers received to response finished',
    labelNames: ['route', 'method'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  const bytesIn = new Counter({
    name: 'volreg_http_request_body_bytes_total',
    help: 'request body bytes received, by route id',
    labelNames: ['route'] as const,
    registers: [registry],
  });
  const bytesOut = new Counter({
    name: 'volreg_http_response_body_bytes_total',
    help: 'response body bytes sent, by route id',
    labelNames: ['route'] as const,
    registers: [registry],
  });

  const inFlight = new Gauge({
    name: 'volreg_http_requests_in_flight',
    help: 'requests being served: a slow upload or download counts until its last byte',
    registers: [registry],
  });
  const cut = new Counter({
    name: 'volreg_http_requests_cut_off_total',
    help: 'requests whose connection closed before their reply was whole, by route id and why: idle (volreg closed it after VOLREG_CLIENT_IDLE_TIMEOUT without a byte moving) or lost (the client or the network closed it)',
    labelNames: ['route', 'reason'] as const,
    registers: [registry],
  });

  const middleware: Middleware = async (ctx, next) => {
    const started = process.hrtime.bigint();
    const counted = bodyBytes(ctx);
    let recorded = false;
    inFlight.inc();
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      inFlight.dec();
      // a 405 or a bad name fails before the router records the route: match it again
      const route = ctx.state.access?.routeId ?? FIXED_ROUTES[ctx.path] ?? matchRoute(ctx.path)?.id ?? 'unmatched';
      const method = ctx.method;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      requests.inc({ route, method, status: String(recordedStatus(ctx.req, ctx.res, ctx.res.statusCode)) });
      duration.observe({ route, method }, seconds);
      bytesIn.inc({ route }, counted.in());
      bytesOut.inc({ route }, counted.out());
      const why = cutOff(ctx);
      if (why) cut.inc({ route, reason: why });
    };
    // 'close' also fires when the client goes away mid-response
    ctx.res.once('finish', record);
    ctx.res.once('close', record);
    await next();
  };

  const handler = async (ctx: Context): Promise<void> => {
    ctx.set('Content-Type', registry.contentType);
    ctx.body = await registry.metrics();
  };

  return { registry, middleware, handler };
}

/**
 * What an operator alerts on before uploads are refused: free space on the data filesystem
 * (read at each scrape) next to the reserve uploads keep, and whether the metadata store still
 * takes writes (the embedded engine stops after a failed journal write).
 */
export function registerStorageGauges(
  registry: Registry,
  opts: { dataDir: string; minFreeBytes: number; metadataFailure?: () => string | undefined },
): void {
  new Gauge({
    name: 'volreg_storage_free_bytes',
    help: 'bytes available on the filesystem of the data directory',
    registers: [registry],
    async collect() {
      this.set(await freeBytes(opts.dataDir));
    },
  });
  new Gauge({
    name: 'volreg_storage_min_free_bytes',
    help: 'free space uploads must leave (VOLREG_MIN_FREE_BYTES); below it they are refused with 507',
    registers: [registry],
    collect() {
      this.set(opts.minFreeBytes);
    },
  });
  new Gauge({
    name: 'volreg_metadata_writable',
    help: '1 while the metadata store takes writes; 0 once the embedded engine stopped after a failed journal write (restart needed)',
    registers: [registry],
    collect() {
      this.set(opts.metadataFailure?.() ? 0 : 1);
    },
  });
}

/** What the gauges of the server's own garbage collection read from its last finished run. */
export interface GcRunSummary {
  startedAt: string;
  durationMs: number;
  freedBytes: number;
  errors: number;
  missingBlobs: { count: number };
}

/**
 * The server's own garbage collection (VOLREG_GC_INTERVAL), as of its last finished run (all 0
 * before the first): above all the blobs manifests use that the store lacks, which no request
 * shows until a restore needs them.
 */
export function registerGcGauges(registry: Registry, lastRun: () => GcRunSummary | null): void {
  const gauge = (name: string, help: string, value: (r: GcRunSummary) => number): void =>
    void new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const r = lastRun();
        this.set(r ? value(r) : 0);
      },
    });
  gauge('volreg_gc_last_run_finished_timestamp_seconds', 'when the last garbage collection finished (unix seconds; 0: none yet)', (r) => (Date.parse(r.startedAt) + r.durationMs) / 1000);
  gauge('volreg_gc_last_run_freed_bytes', 'bytes the last garbage collection freed', (r) => r.freedBytes);
  gauge('volreg_gc_last_run_errors', 'items the last garbage collection could not collect (logged; tried again next run)', (r) => r.errors);
  gauge(
    'volreg_gc_missing_blobs',
    'blobs that manifests use and the blob store lacks (lost, or set aside as damaged), as the last garbage collection found them; those manifests do not pull whole',
    (r) => r.missingBlobs.count,
  );
}

/**
 * How recently volumes were backed up (README "Monitoring backups"): how many volumes hold a
 * snapshot, the oldest of their latest snapshots' times (for an alert that names no volume), and
 * each volume's own, for at most `seriesLimit` volumes, those backed up longest ago (the ones an
 * alert is about) first: a label per volume is a series per volume, and the names are on an
 * endpoint without authentication. Figures that could not be read (the metadata store does not
 * answer) are NaN, and no volume's series is given, for that scrape; the rest of /metrics stays.
 */
export function registerVolumeGauges(
  registry: Registry,
  opts: { read: () => Promise<VolumeFreshness>; seriesLimit: number; onError: (err: unknown) => void },
): void {
  // the gauges of one scrape share a reading (VolumeFreshnessReader), so one failure is told once
  let told: Promise<VolumeFreshness> | null = null;
  const figures = async (): Promise<VolumeFreshness | null> => {
    const reading = opts.read();
    return reading.catch((err: unknown) => {
      if (told !== reading) opts.onError(err);
      told = reading;
      return null;
    });
  };
  new Gauge({
    name: 'volreg_volumes',
    help: 'volumes that hold at least one snapshot (NaN: the metadata store did not answer)',
    registers: [registry],
    async collect() {
      this.set((await figures())?.volumes ?? Number.NaN);
    },
  });
  new Gauge({
    name: 'volreg_volumes_oldest_latest_snapshot_timestamp_seconds',
    help: "the oldest of every volume's latest snapshot creation time, unix seconds: time() minus it is the longest any volume has gone without a backup (NaN: no volume, or the metadata store did not answer)",
    registers: [registry],
    async collect() {
      const oldest = (await figures())?.latest[0];
      this.set(oldest ? oldest.created.getTime() / 1000 : Number.NaN);
    },
  });
  if (opts.seriesLimit === 0) return; // no volume name in /metrics
  new Gauge({
    name: 'volreg_volume_latest_snapshot_timestamp_seconds',
    help: `creation time of the volume's latest snapshot (its newest created), unix seconds; for at most ${opts.seriesLimit} volumes (VOLREG_METRICS_VOLUMES), those backed up longest ago first`,
    labelNames: ['volume'] as const,
    registers: [registry],
    async collect() {
      const f = await figures();
      this.reset();
      for (const v of f?.latest.slice(0, opts.seriesLimit) ?? []) this.set({ volume: v.volume }, v.created.getTime() / 1000);
    },
  });
}
