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
  storage: 'fs' | 'gridfs';
  authFile: string | undefined;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  limits: {
    /** manifests are refused above this (DESIGN.md: 4 MiB) */
    manifestBytes: number;
    /** any other non-blob request body */
    jsonBodyBytes: number;
  };
  uploads: {
    /** abandoned upload sessions older than this are purged */
    purgeAfterSeconds: number;
    purgeIntervalSeconds: number;
  };
  /** how long SIGTERM waits for in-flight requests */
  shutdownGraceSeconds: number;
}
