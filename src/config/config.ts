import type { IpRange } from '../domain/ip-ranges.ts';

/**
 * The validated configuration. Only src/main.ts (through loadConfig) reads the environment;
 * everything else receives this object.
 */
export interface Config {
  addr: { host: string; port: number };
  dataDir: string;
  /** A MongoDB to use instead of the embedded engine. */
  mongodbUrl: string | undefined;
  mongodbDatabase: string;
  /** a MongoDB client that has not reached the database this long while a new client does is reopened; 0: never */
  mongodbReopenAfterSeconds: number;
  storage: 'fs' | 'gridfs';
  authFile: string | undefined;
  /** serve HTTPS with this PEM certificate chain and key (both or neither) */
  tls: { certFile: string; keyFile: string } | undefined;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  limits: {
    /** manifests are refused above this (DESIGN.md: 4 MiB) */
    manifestBytes: number;
    /** uploads are refused before they would leave less free space than this on the data filesystem; 0: no reserve */
    minFreeBytes: number;
  };
  uploads: {
    /** abandoned upload sessions older than this are purged */
    purgeAfterSeconds: number;
    /** 0 disables the purge timer */
    purgeIntervalSeconds: number;
  };
  gc: {
    /** seconds between garbage collections inside serve; 0 disables them */
    intervalSeconds: number;
    /** only content older than this is collected */
    graceSeconds: number;
    /** also remove manifests no tag needs (and the blobs only they used) */
    deleteUntagged: boolean;
  };
  /** how long SIGTERM waits for in-flight requests */
  shutdownGraceSeconds: number;
  /** a connection on which nothing moves this long while the server waits on the client is closed */
  clientIdleSeconds: number;
  /** reverse proxies whose X-Forwarded-For names the client (none by default: the header is ignored) */
  trustedProxies: IpRange[];
  metrics: {
    /** volumes given a series of their own in /metrics, backed up longest ago first; 0: no volume name there */
    volumeSeries: number;
    /** how old the volume figures may be where every reading reads every volume (no change marks) */
    volumesMaxAgeSeconds: number;
  };
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The defaults of DESIGN.md section 7, in one place (the README table mirrors them). */
export const DEFAULTS = {
  addr: '127.0.0.1:5000',
  dataDir: './data',
  mongodbDatabase: 'volreg',
  mongodbReopenAfterSeconds: 60,
  storage: 'fs',
  logLevel: 'info',
  manifestBytes: 4 * 1024 * 1024,
  minFreeBytes: 256 * 1024 * 1024,
  purgeAfterSeconds: 24 * 60 * 60,
  purgeIntervalSeconds: 60 * 60,
  shutdownGraceSeconds: 30,
  clientIdleSeconds: 120,
  gcIntervalSeconds: 0,
  gcGraceSeconds: 3600,
  gcDeleteUntagged: false,
  /** without authentication; with it, volume names stay out of the open /metrics unless asked for */
  metricsVolumeSeries: 1000,
  metricsVolumeSeriesWithAuth: 0,
  metricsVolumesMaxAgeSeconds: 60,
} as const;
