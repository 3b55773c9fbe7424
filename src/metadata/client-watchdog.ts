import { MongoClient } from 'mongodb';
import type { Logger } from 'pino';
import { LATE, within } from '../domain/within.ts';

/**
 * Reopens the service's MongoDB client when it has lost its server for good while the server
 * answers others.
 *
 * Why: seen under kill -9 of a standalone database on a loaded machine. After the kill the
 * driver's server monitor ended no heartbeat again, so the server stayed "unknown" to this
 * client: every request waited 15 s for a server and answered 503, minutes after the restarted
 * database answered a new client at once. One way there, a heartbeat written on a socket Node had
 * just destroyed, is mended in driver-sockets.ts; whatever else wedges a client so, closing it and
 * connecting again starts its monitor and pool afresh. In-flight requests fail meanwhile (503), as they do
 * when the database itself goes away.
 *
 * The heartbeats the driver reports are kept, so the log line says how the client stood.
 */

export interface ClientWatchdogOptions {
  client: MongoClient;
  /** the URI of `client`, for a new client's look at the database */
  uri: string;
  logger: Logger;
  /** how long `client` must fail while a new client is answered before it is reopened */
  reopenAfterMs: number;
  /** each ping's bound */
  pingTimeoutMs?: number;
}

const now = (): number => performance.now();

interface HeartbeatState {
  lastStarted?: number;
  lastSucceeded?: number;
  lastFailed?: number;
  lastError?: string;
}

export class ClientWatchdog {
  private readonly opts: Required<ClientWatchdogOptions>;
  private readonly heartbeat: HeartbeatState = {};
  private failingSince: number | undefined;
  /** a reopening that could not connect again: the next look tries again */
  private closed = false;

  constructor(opts: ClientWatchdogOptions) {
    this.opts = { pingTimeoutMs: 1500, ...opts };
    const { client } = this.opts;
    // the client passes its topology's events on, a reopened one's too
    client.on('serverHeartbeatStarted', () => (this.heartbeat.lastStarted = now()));
    client.on('serverHeartbeatSucceeded', () => (this.heartbeat.lastSucceeded = now()));
    client.on('serverHeartbeatFailed', (e) => {
      this.heartbeat.lastFailed = now();
      this.heartbeat.lastError = e.failure?.message;
    });
  }

  /** One look: a ping with this client and, when it fails, with a new one; reopens after `reopenAfterMs` of the first failing and the second not. */
  async check(): Promise<void> {
    const { client, logger, reopenAfterMs } = this.opts;
    if (this.closed) return this.connect();
    // only the time the database answers others counts: while it is down for everyone, a new
    // client would change nothing, and the driver needs a moment to find it once it is back
    if ((await this.answers(client)) || !(await this.newClientAnswers())) {
      this.failingSince = undefined;
      return;
    }
    this.failingSince ??= now();
    const failingMs = now() - this.failingSince;
    if (failingMs < reopenAfterMs) return;
    logger.error(
      { failingSeconds: Math.round(failingMs / 1000), heartbeats: this.describeHeartbeats() },
      'the MongoDB client has not reached the database for this long while a new client does: reopening it',
    );
    this.failingSince = undefined;
    this.closed = true;
    await client.close().catch((err: unknown) => logger.warn({ err }, 'closing the MongoDB client failed'));
    await this.connect();
  }

  private async connect(): Promise<void> {
    try {
      await this.opts.client.connect();
      this.closed = false;
      this.opts.logger.info('the MongoDB client is open again');
    } catch (err) {
      this.opts.logger.warn({ err }, 'the MongoDB client could not connect again; trying at the next look');
    }
  }

  private async answers(client: MongoClient): Promise<boolean> {
    const ms = this.opts.pingTimeoutMs;
    const ping = client.db('admin').command({ ping: 1 }, { timeoutMS: ms });
    const r = await within(ping.then(() => true, () => false), ms);
    return r !== LATE && r;
  }

  private async newClientAnswers(): Promise<boolean> {
    const ms = this.opts.pingTimeoutMs;
    const fresh = new MongoClient(this.opts.uri, { serverSelectionTimeoutMS: ms, connectTimeoutMS: ms });
    try {
      return await this.answers(fresh);
    } finally {
      await fresh.close().catch(() => undefined);
    }
  }

  /** seconds since each heartbeat event the driver reported since the watch began, for the log */
  private describeHeartbeats(): Record<string, number | string | null> {
    const ago = (t: number | undefined): number | null => (t === undefined ? null : Math.round((now() - t) / 1000));
    const h = this.heartbeat;
    const ended = Math.max(h.lastSucceeded ?? -Infinity, h.lastFailed ?? -Infinity);
    return {
      // a heartbeat is bounded by connectTimeoutMS: one running far longer is a monitor that stopped
      runningForSeconds: h.lastStarted !== undefined && h.lastStarted > ended ? ago(h.lastStarted) : null,
      lastStartedSecondsAgo: ago(h.lastStarted),
      lastSucceededSecondsAgo: ago(h.lastSucceeded),
      lastFailedSecondsAgo: ago(h.lastFailed),
      lastError: h.lastError ?? null,
    };
  }
}
