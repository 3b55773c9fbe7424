import { rm } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Option, type Command } from 'commander';
import { monotonicMs } from '../domain/clock.ts';
import { digestAlgorithm, digestOf, parseDigest, type DigestAlgorithm } from '../domain/digest.ts';
import { isVolregError } from '../domain/errors.ts';
import { parseRepositoryName, parseTag } from '../domain/names.ts';
import { volumeNameProblem } from '../domain/volumes/volume-name.ts';
import { DigestingFile } from './digesting-file.ts';
import { brokenReply, errorCodes, errorReply, isDroppedConnection, isMissing, isUnreachable, readJsonReply, RegistryError, requestName, retryAfterSeconds, unanswered, unexpectedStatus } from './registry-reply.ts';

export { isMissing, RegistryError } from './registry-reply.ts';

/**
 * The host agent's HTTP client: the same public API curl uses (/api/v1, and /v2 for pulls by
 * digest), no private shortcuts. Bodies stream both ways (node:http, chunked uploads).
 */

/** Exit codes of the host agent commands (push, pull, backup, restore, ls, verify, rm). */
export const AGENT_EXIT = {
  OK: 0,
  /** the registry or the network failed, or anything unexpected */
  FAILURE: 1,
  /** bad command-line usage or a malformed lock file */
  USAGE: 2,
  /** the snapshot (or volume) does not exist */
  NOT_FOUND: 3,
  /** a digest did not match, a snapshot's layer is missing, verification failed, the archive is unsafe or invalid, or a directory holds a name push cannot archive faithfully */
  INTEGRITY: 4,
  /** backup/restore: some volumes failed (the others succeeded) */
  PARTIAL: 5,
  /** the target directory is not empty (use --force) */
  NOT_EMPTY: 6,
  /** a condition did not hold: push --no-overwrite found the tag holding a snapshot, rm --if-digest found it holding another */
  EXISTS: 7,
  /** ls --stale: a volume's latest snapshot is older than the age given, or a volume named holds none */
  STALE: 8,
  /** the registry refused: the user may not do this (pull, push, overwrite, delete) on that repository */
  DENIED: 9,
} as const;

export interface ClientOptions {
  url: string;
  user?: string;
  password?: string;
  /** how long a request may go without a byte moving either way before it fails; 0: no limit */
  timeoutSeconds?: number;
}

/** The default of --timeout. */
export const DEFAULT_TIMEOUT_SECONDS = 600;
/**
 * The slowest a registry is expected to re-read a snapshot for verify (its larger size, the
 * layer's or the tar's): a verify may stay silent for --timeout plus that long.
 */
export const VERIFY_FLOOR_BYTES_PER_SECOND = 16 * 1024 * 1024;

/** A request to the registry during which nothing moved for --timeout seconds (a stalled registry, a dead network). */
export class RegistryTimeoutError extends Error {
  override name = 'RegistryTimeoutError';
  constructor(
    method: string,
    url: URL,
    readonly seconds: number,
  ) {
    super(`nothing came from the registry for ${seconds} s (${method} ${url.pathname}): it is stalled or unreachable (the limit is --timeout or VOLREG_TIMEOUT; 0 waits for ever)`);
  }
}

/** A download longer than the size it must have; stopped before the excess was written. */
export class OversizedReplyError extends Error {
  override name = 'OversizedReplyError';
  constructor(
    /** the Content-Length that was too large; null when the bytes themselves ran over */
    readonly announced: number | null,
    readonly maxBytes: number,
  ) {
    super(`the registry ${OversizedReplyError.how(announced)} the ${maxBytes} bytes expected`);
  }

  static how(announced: number | null): string {
    return announced === null ? 'sent more than' : `announced ${announced} bytes, more than`;
  }
}

export interface SnapshotJson {
  volume: string;
  tag: string;
  digest: string;
  manifestDigest: string;
  configDigest: string;
  layer: { digest: string; size: number; mediaType: string };
  size: number;
  compression: 'none' | 'gzip' | 'zstd';
  uncompressed: { digest: string; size: number } | null;
  entries: number | null;
  unsafeEntries: number | null;
  host: string | null;
  labels: Record<string, string>;
  created: string;
  lastVerify: { ok: boolean; at: string; problems: string[] } | null;
  source: 'api' | 'oci';
  fileName: string;
}

export interface VolumeJson {
  volume: string;
  snapshots: number;
  totalSize: number;
  /** absent from a registry older than the field */
  storedSize?: number;
  latest: SnapshotJson;
}

export interface ListQuery {
  host?: string;
  since?: string;
  until?: string;
  limit?: number;
  offset?: number;
  /** the position a previous page named (its `next`) */
  after?: string;
}

/** Sees every chunk going through (hashing, progress bars). */
export function byteCounter(onChunk: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onChunk(chunk);
      cb(null, chunk);
    },
  });
}

function encodePath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/**
 * --url (VOLREG_URL) as the base the API paths are resolved against (a path prefix kept, so a
 * registry behind a proxy at /volreg/ works); anything but an http(s) URL is bad usage.
 */
export function registryUrl(url: string): URL {
  let base: URL;
  try {
    base = new URL(url.endsWith('/') ? url : `${url}/`);
  } catch {
    throw new UsageError(`--url (VOLREG_URL) ${JSON.stringify(shownText(url))} is not a URL (expected http://host:port or https://host:port)`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new UsageError(`--url (VOLREG_URL) is a ${JSON.stringify(base.protocol)} URL: expected http://host:port or https://host:port`);
  }
  return base;
}

/** A URL for messages (stderr ends up in cron mail and logs): its password masked. */
function shownUrl(url: URL): string {
  if (url.password === '') return url.href;
  const shown = new URL(url.href);
  shown.password = '***';
  return shown.href;
}

/** A string that did not parse as a URL, for messages: whatever stands between `//` and `@` masked. */
function shownText(url: string): string {
  return url.replace(/\/\/[^/@]*@/, '//***@').slice(0, 200);
}

export class VolregClient {
  private readonly base: URL;
  /** the registry's URL as messages show it: a password in it (userinfo) masked */
  private readonly shownBase: string;
  private readonly auth: string | undefined;
  private readonly timeoutMs: number;
  /** told when a request is sent again after a 503 with Retry-After (messages for stderr) */
  onWait: ((message: string) => void) | null = null;
  /** what this client has waited on refusals so far (retryDelay) */
  private refusalWaitMs = 0;
  /** requests sent again after a 503 so far (a DELETE sent again may find its own work done) */
  private sentAgainAfter503 = 0;
  /** the registry's clock as its last reply gave it (its `Date` header, to the second); null: none came */
  registryTime: Date | null = null;

  constructor(opts: ClientOptions) {
    this.timeoutMs = (opts.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000;
    this.base = registryUrl(opts.url);
    this.shownBase = shownUrl(this.base);
    this.auth = opts.user !== undefined ? `Basic ${Buffer.from(`${opts.user}:${opts.password ?? ''}`).toString('base64')}` : undefined;
  }

  /**
   * How long to wait before sending a refused request again: `Retry-After` plus up to as much
   * again at random (hosts refused together come back spread out), or null once the waits of
   * this client (one command, a backup of many volumes included) would pass --timeout in all
   * (`timeoutMs`, 0: no limit): then the refusal is the answer. So a backup storm's refusals
   * (a full password-check queue when many hosts log in at once, no file descriptor free) and a
   * restart of the registry's database delay a host's backup instead of failing it, and a
   * database away for good fails it within about --timeout rather than --timeout per volume.
   */
  retryDelay(retryAfter: number, timeoutMs = this.timeoutMs): number | null {
    const wait = Math.ceil(retryAfter * 1000 * (1 + Math.random()));
    return timeoutMs > 0 && this.refusalWaitMs + wait > timeoutMs ? null : wait;
  }

  /** Waits a delay `retryDelay` gave, and counts it against the command's --timeout. */
  async waitBeforeSendingAgain(ms: number): Promise<void> {
    this.refusalWaitMs += ms;
    await new Promise((r) => setTimeout(r, ms));
  }

  /**
   * `sendOnce`, sent again while the registry answers 429 or 503 with `Retry-After` (it did
   * nothing with the request), as `retryDelay` says, unless `opts.retry` is false. Only requests
   * without a body: a streamed archive has been consumed once sent (pushSource packs a
   * directory again instead).
   */
  private async send(method: string, path: string, opts: { headers?: Record<string, string>; body?: Readable; timeoutMs?: number; retry?: boolean } = {}): Promise<IncomingMessage> {
    let unansweredTries = 0;
    for (;;) {
      let res: IncomingMessage;
      try {
        res = await this.sendOnce(method, path, opts);
      } catch (err) {
        // A GET or HEAD no registry answered changed nothing: a registry restarting, or out of
        // file descriptors, refuses or drops connections for a moment. Asked again, 1 s and 2 s later.
        const again = (method === 'GET' || method === 'HEAD') && !opts.body && opts.retry !== false && isDroppedConnection(err);
        if (!again || ++unansweredTries > UNANSWERED_RETRIES) throw err;
        await new Promise((r) => setTimeout(r, UNANSWERED_WAIT_MS * unansweredTries));
        continue;
      }
      const seconds = retryAfterSeconds(res);
      const wait = opts.body || opts.retry === false || seconds === null ? null : this.retryDelay(seconds, opts.timeoutMs);
      if (wait === null) return res;
      if (this.onWait && res.statusCode === 503) {
        // a registry that cannot serve for a while (its database away) is worth a line: the
        // command may wait minutes; a busy one (429, a full queue for a second) is not
        const refusal = await errorReply(res);
        this.onWait(`${requestName(method, path)}: ${refusal.message} (HTTP 503); sending it again in ${Math.ceil(wait / 1000)} s`);
      } else {
        res.resume();
      }
      await this.waitBeforeSendingAgain(wait);
      if (res.statusCode === 503) this.sentAgainAfter503++;
    }
  }

  /** `opts.timeoutMs`: this request's own --timeout (0: none), instead of the client's */
  private sendOnce(method: string, path: string, opts: { headers?: Record<string, string>; body?: Readable; timeoutMs?: number } = {}): Promise<IncomingMessage> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const url = new URL(path.replace(/^\//, ''), this.base);
    const headers: Record<string, string> = { ...opts.headers };
    if (this.auth) headers.Authorization = this.auth;
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      let reply: IncomingMessage | undefined;
      // agent: false — one connection per request, so nothing keeps the command alive afterwards
      // `timeout` arms the socket's idle timer from its creation: req.setTimeout alone arms it only
      // once connected, leaving a connect into a silent link (SYNs dropped) to the kernel's own
      // limit (about 2 min on Linux) whatever --timeout says
      const req = request(url, { method, headers, agent: false, ...(timeoutMs > 0 ? { timeout: timeoutMs } : {}) }, (res) => {
        reply = res;
        const date = res.headers.date === undefined ? Number.NaN : Date.parse(res.headers.date);
        if (!Number.isNaN(date)) this.registryTime = new Date(date);
        resolve(res);
      });
      if (timeoutMs > 0) {
        // the socket's idle timer: it runs while connecting, sending, waiting and reading the reply
        req.setTimeout(timeoutMs, () => {
          const err = new RegistryTimeoutError(method, url, Math.round(timeoutMs / 1000));
          reply?.destroy(err);
          req.destroy(err);
        });
      }
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (opts.body && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) {
          // nothing of an upload cut off is kept; the usual cause on a slow link is a stall past the registry's idle limit
          reject(new Error(`the registry closed the connection during the upload (${err.code}); nothing was stored. It does so when nothing comes for its VOLREG_CLIENT_IDLE_TIMEOUT (a stalled link) or when it restarts: push again`));
        } else reject(reply ? err : unanswered(err, requestName(method, path), this.shownBase));
      });
      if (opts.body) {
        // a body that already failed (before this request started) emits no more 'error'
        if (opts.body.destroyed) {
          req.destroy(opts.body.errored ?? new Error('the upload stream closed before it was sent'));
          return;
        }
        opts.body.on('error', (err) => req.destroy(err));
        opts.body.pipe(req);
      } else req.end();
    });
  }

  private async jsonReply<T>(method: string, path: string, body?: Readable, headers?: Record<string, string>, timeoutMs?: number, retry?: boolean): Promise<{ value: T; bytes: Buffer }> {
    const res = await this.send(method, path, { headers: { Accept: 'application/json', ...headers }, body, timeoutMs, retry });
    const status = res.statusCode ?? 0;
    if (status >= 400) throw await errorReply(res);
    if (status < 200 || status >= 300) throw unexpectedStatus(res, requestName(method, path));
    return readJsonReply<T>(res, requestName(method, path), this.shownBase);
  }

  private async json<T>(method: string, path: string, body?: Readable, headers?: Record<string, string>, timeoutMs?: number, retry?: boolean): Promise<T> {
    return (await this.jsonReply<T>(method, path, body, headers, timeoutMs, retry)).value;
  }

  /** Uploads a tar / tar.gz / tar.zst stream as `<name>:<tag>` (chunked: the length need not be known). */
  /** `noOverwrite`: only if the tag holds no snapshot yet (If-None-Match: *; else PRECONDITION_FAILED, nothing sent) */
  async put(name: string, tag: string, body: Readable, opts: { host?: string; labels?: Record<string, string>; digest?: string; noOverwrite?: boolean } = {}): Promise<SnapshotJson> {
    // A server refusing before it reads the body (401, a bad name) closes the connection while
    // we are still sending, and its answer can be lost with it: ask first with a cheap request.
    const pre = await this.send('GET', `api/v1/volumes/${encodePath(name)}/tags/${encodeURIComponent(tag)}`, { headers: { Accept: 'application/json' } });
    if ((pre.statusCode ?? 0) >= 400 && pre.statusCode !== 404) throw readFirst(await errorReply(pre));
    pre.resume();
    if (opts.noOverwrite && pre.statusCode === 200) {
      throw new RegistryError(412, 'PRECONDITION_FAILED', `${name}:${tag} already holds a snapshot; nothing was sent (--no-overwrite)`);
    }
    const q = new URLSearchParams();
    if (opts.host) q.set('host', opts.host);
    for (const [k, v] of Object.entries(opts.labels ?? {})) q.append('label', `${k}=${v}`);
    if (opts.digest) q.set('digest', opts.digest);
    const qs = q.toString();
    return this.json<SnapshotJson>('PUT', `api/v1/volumes/${encodePath(name)}/tags/${encodeURIComponent(tag)}${qs ? `?${qs}` : ''}`, body, {
      'Content-Type': 'application/octet-stream',
      // the registry checks again in the same step as it tags: a push racing this one is seen
      ...(opts.noOverwrite ? { 'If-None-Match': '*' } : {}),
    });
  }

  get(name: string, tag: string): Promise<SnapshotJson> {
    return this.json('GET', `api/v1/volumes/${encodePath(name)}/tags/${encodeURIComponent(tag)}`);
  }

  list(name: string, q: ListQuery = {}): Promise<{ volume: string; total: number; next: string | null; snapshots: SnapshotJson[] }> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.json('GET', `api/v1/volumes/${encodePath(name)}/tags${qs ? `?${qs}` : ''}`);
  }

  listVolumes(q: { limit?: number; offset?: number; after?: string } = {}): Promise<{ total: number; next: string | null; volumes: VolumeJson[] }> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.json('GET', `api/v1/volumes${qs ? `?${qs}` : ''}`);
  }

  /**
   * Has the registry re-read a snapshot. It sends nothing while it does, for as long as reading
   * the snapshot takes: --timeout is stretched by the time the snapshot's size needs at
   * VERIFY_FLOOR_BYTES_PER_SECOND, so a large one is not taken for a stalled registry. Its
   * size comes from `listed` (a listing's entry) when given, else from its metadata.
   */
  async verify(name: string, tag: string, listed?: SnapshotJson): Promise<SnapshotJson & { ok: boolean }> {
    const path = `api/v1/volumes/${encodePath(name)}/tags/${encodeURIComponent(tag)}`;
    const info = listed ?? (await this.json<SnapshotJson>('GET', path));
    const bytes = Math.max(info.layer.size, info.uncompressed?.size ?? 0);
    const timeoutMs = this.timeoutMs > 0 ? this.timeoutMs + Math.ceil((bytes / VERIFY_FLOOR_BYTES_PER_SECOND) * 1000) : 0;
    // not sent again on a refusal: a check the registry can not make now is NOT VERIFIED at once
    // (the next scheduled run checks it), not held for minutes per snapshot of a verify --all;
    // the GET before it carried the same credentials, so no password check refuses it (429)
    return this.json('POST', `${path}/verify`, undefined, undefined, timeoutMs, false);
  }

  /** `ifDigest`: only while the tag holds the snapshot of that manifest digest (If-Match; else PRECONDITION_FAILED) */
  async remove(name: string, tag: string, opts: { ifDigest?: string } = {}): Promise<{ deleted: { volume: string; tag: string; manifestDigest: string } }> {
    const sentAgainBefore = this.sentAgainAfter503;
    try {
      return await this.json('DELETE', `api/v1/volumes/${encodePath(name)}/tags/${encodeURIComponent(tag)}`, undefined, opts.ifDigest ? { 'If-Match': `"${opts.ifDigest}"` } : undefined);
    } catch (err) {
      // A refused DELETE (its database away mid-way) may have removed the tag before it failed:
      // the one sent again then finds nothing. Still not found (exit 3), but not a mystery.
      if (isMissing(err) && this.sentAgainAfter503 > sentAgainBefore) {
        const missing = err as RegistryError;
        throw new RegistryError(missing.status, missing.code, `${name}:${tag} is not there: the registry refused the first DELETE (503) and no longer had the tag when asked again, so that first DELETE may have removed it (volreg ls ${name} shows what is left)`);
      }
      if (!(err instanceof RegistryError) || err.code !== 'PRECONDITION_FAILED') throw err;
      throw new RegistryError(err.status, err.code, `${name}:${tag} no longer holds the snapshot ${opts.ifDigest}; nothing was deleted (--if-digest)`);
    }
  }

  /**
   * The layer descriptor of a snapshot addressed by manifest digest (through /v2, as any OCI
   * client would). The manifest must hash to that digest: the layer digest it names is what the
   * download is checked against, so a registry sending another manifest would have another
   * snapshot restored unnoticed.
   */
  async layerByManifestDigest(name: string, digest: string): Promise<{ digest: string; size: number; mediaType: string }> {
    const { value: manifest, bytes } = await this.jsonReply<{ artifactType?: string; config?: { mediaType?: string }; layers?: Array<{ digest: string; size: number; mediaType: string }> }>(
      'GET',
      `v2/${encodePath(name)}/manifests/${digest}`,
      undefined,
      { Accept: 'application/vnd.oci.image.manifest.v1+json' },
    );
    const got = digestOf(bytes, digestAlgorithm(parseDigest(digest)));
    if (got !== digest) {
      throw new RegistryError(200, 'DIGEST_INVALID', `the manifest the registry sent for ${name}@${digest} hashes to ${got}: it is not that snapshot's; nothing was downloaded`);
    }
    const type = manifest.artifactType ?? manifest.config?.mediaType;
    if (type !== 'application/vnd.volreg.volume.v1' || manifest.layers?.length !== 1) {
      throw new RegistryError(404, 'SNAPSHOT_UNKNOWN', `${name}@${digest} is not a volume snapshot`);
    }
    return manifest.layers[0]!;
  }

  /**
   * Downloads `path` (a /v2 blob path: content addressed, so its bytes at an offset never change)
   * into a new `file`, hashing it with `algorithm` on the way. At most `maxBytes` are taken (the
   * size the snapshot says it has): a reply announcing or sending more ends at once with an
   * OversizedReplyError, so a broken or hostile registry can not fill the target's disk.
   *
   * A connection that breaks or stalls mid-body is resumed with a Range request from the bytes
   * already written (`onResume` hears of it); a registry that answers it with the whole content
   * starts the file over. It gives up, with the break's own error, after RESUMES_WITHOUT_PROGRESS
   * resumptions in a row that got no further. A resumption the registry does not answer at all
   * (the link is down: no route, refused, reset or silent) is no such try: it is sent again, 1, 2,
   * 4... up to 30 s apart, until --timeout has passed since the first one, so a WAN link that
   * drops for a minute or two costs a long pull a wait, not its bytes. Returns the digest of what
   * was written and the one the registry announced.
   */
  async download(
    path: string,
    file: string,
    algorithm: DigestAlgorithm,
    maxBytes: number,
    opts: { onBytes?: (n: number) => void; onResume?: (written: number, why: string) => void } = {},
  ): Promise<{ digest: string; size: number; announced: string | null }> {
    const first = await this.send('GET', path);
    await checkContentReply(first, path, 0);
    const sink = await DigestingFile.create(file, algorithm).catch((err: unknown) => {
      first.destroy();
      throw err;
    });
    let done = false;
    try {
      let announced: string | null = null;
      let furthest = 0;
      let fruitless = 0;
      const outage = new Outage(this.timeoutMs);
      let triedAt = 0;
      for (let res: IncomingMessage | null = first; ; res = null) {
        try {
          if (res === null) {
            if (sink.bytes === maxBytes) break; // all came; only the end of the reply did not
            triedAt = monotonicMs();
            res = await this.send('GET', path, sink.bytes > 0 ? { headers: { Range: `bytes=${sink.bytes}-` } } : {});
            await checkContentReply(res, path, sink.bytes);
          }
          announced = (await this.receive(res, path, sink, maxBytes, opts.onBytes)) ?? announced;
          break;
        } catch (err) {
          await sink.settled();
          if (res === null && sink.failure === null && (isBrokenConnection(err) || isUnreachable(err))) {
            // no reply to a resumption: the link is down, and each try costs the registry nothing
            const wait = outage.nextWait(triedAt);
            if (wait === null) throw new Error(`the download broke off after ${sink.bytes} of ${maxBytes} bytes, and the registry did not answer again for ${Math.round(this.timeoutMs / 1000)} s (--timeout): ${(err as Error).message}`, { cause: err });
            const until = this.timeoutMs > 0 ? `for up to ${Math.round(this.timeoutMs / 1000)} s` : 'until it does (--timeout 0)';
            if (outage.tries === 1) opts.onResume?.(sink.bytes, `the registry does not answer: ${(err as Error).message}; trying again ${until}`);
            await new Promise((r) => setTimeout(r, wait));
            continue;
          }
          outage.reset();
          const broken = sink.failure === null && isBrokenConnection(err);
          if (sink.bytes > furthest) [furthest, fruitless] = [sink.bytes, 0];
          else fruitless++;
          if (!broken || fruitless > RESUMES_WITHOUT_PROGRESS) throw brokenReply(err, `the download, after ${furthest} of ${maxBytes} bytes`);
          opts.onResume?.(sink.bytes, err instanceof RegistryTimeoutError ? `nothing came for ${err.seconds} s` : (err as Error).message);
          if (fruitless > 0) await new Promise((r) => setTimeout(r, RESUME_WAIT_MS * fruitless));
        }
      }
      done = true;
      return { digest: sink.digest(), size: sink.bytes, announced };
    } finally {
      await sink.close();
      // a part is no use to anyone: the caller may try again with the same name
      if (!done) await rm(file, { force: true });
    }
  }

  /** One reply's body into `sink`: the first reply's, or a resumption's (206 from `sink.bytes`, or 200 from the start). */
  private async receive(res: IncomingMessage, path: string, sink: DigestingFile, maxBytes: number, onBytes?: (n: number) => void): Promise<string | null> {
    if (res.statusCode === 200 && sink.bytes > 0) await sink.restart();
    let received = sink.bytes;
    const declared = res.headers['content-length'];
    if (declared !== undefined && received + Number(declared) > maxBytes) {
      res.destroy();
      throw new OversizedReplyError(received + Number(declared), maxBytes);
    }
    await pipeline(
      res,
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          received += chunk.length;
          if (received > maxBytes) {
            cb(new OversizedReplyError(null, maxBytes));
            return;
          }
          onBytes?.(chunk.length);
          cb(null, chunk);
        },
      }),
      sink.writable(),
    );
    const header = res.headers['docker-content-digest'];
    return typeof header === 'string' ? header : null;
  }
}

/**
 * Throws unless `res` is the content from byte `from`: 200 (from 0, or a registry that ignored
 * the Range) or a 206 starting at `from`. A redirect, a 204 or another range is not the content:
 * never hashed, never called a damaged snapshot.
 */
async function checkContentReply(res: IncomingMessage, path: string, from: number): Promise<void> {
  if ((res.statusCode ?? 0) >= 400) throw await errorReply(res);
  if (res.statusCode === 200) return;
  if (res.statusCode !== 206 || from === 0) throw unexpectedStatus(res, requestName('GET', path));
  const range = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
  if (range === null || Number(range[1]) !== from) {
    res.resume();
    throw new RegistryError(206, 'UNEXPECTED_REPLY', `${requestName('GET', path)} from byte ${from} was answered with the range ${JSON.stringify(res.headers['content-range'] ?? null)}`);
  }
}

/**
 * The waits between resumptions the registry does not answer: 1 s, doubling up to
 * OUTAGE_WAIT_MAX_MS, the last one cut to end when `timeoutMs` (0: no limit) has passed since the
 * first was sent (one that hung for --timeout leaves no time for another); null once it has.
 */
class Outage {
  private since: number | null = null;
  tries = 0;
  constructor(private readonly timeoutMs: number) {}

  /** `triedAt`: when the try that just failed was sent (monotonicMs: a stepped wall clock must not end or stretch --timeout) */
  nextWait(triedAt: number): number | null {
    const now = monotonicMs();
    this.since ??= triedAt;
    this.tries++;
    const backoff = Math.min(OUTAGE_WAIT_MAX_MS, RESUME_WAIT_MS * 2 ** (this.tries - 1));
    if (this.timeoutMs === 0) return backoff;
    const left = this.since + this.timeoutMs - now;
    return left <= 0 ? null : Math.min(backoff, left);
  }

  reset(): void {
    this.since = null;
    this.tries = 0;
  }
}

const OUTAGE_WAIT_MAX_MS = 30_000;

/** how many resumptions in a row may end no further than the one before, and the wait before each (times its place) */
const RESUMES_WITHOUT_PROGRESS = 2;
const RESUME_WAIT_MS = 1000;

/** how often a GET or HEAD that got no answer at all is sent again, and the wait before each (times its place) */
const UNANSWERED_RETRIES = 2;
const UNANSWERED_WAIT_MS = 1000;

/** A connection that broke or went silent, or a registry not answering a resumption (restarting): worth another request. */
function isBrokenConnection(err: unknown): boolean {
  return err instanceof RegistryTimeoutError || errorCodes(err).includes('ETIMEDOUT') || isDroppedConnection(err);
}


export function blobPath(name: string, digest: string): string {
  return `v2/${encodePath(name)}/blobs/${digest}`;
}

// ---- shared by the host agent commands ------------------------------------------------------


export interface ConnectionFlags {
  url?: string;
  user?: string;
  password?: string;
  timeout?: string;
  json?: boolean;
  quiet?: boolean;
}

/** --url/--user/--password (or VOLREG_URL/VOLREG_USER/VOLREG_PASSWORD), --json and --quiet. */
export function addAgentOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', 'registry URL').env('VOLREG_URL').default('http://127.0.0.1:5000'))
    .addOption(new Option('--user <user>', 'Basic auth user').env('VOLREG_USER'))
    .addOption(new Option('--password <password>', 'Basic auth password').env('VOLREG_PASSWORD'))
    .addOption(new Option('--timeout <seconds>', 'fail a request after this many seconds without a byte from or to the registry (0: no limit)').env('VOLREG_TIMEOUT').default(String(DEFAULT_TIMEOUT_SECONDS)))
    .option('--json', 'print the result as JSON on stdout')
    .option('-q, --quiet', 'no progress bars or messages');
}

/** The client of a command (`command` names it in messages); --quiet leaves out its notes on waiting. */
export function clientFrom(flags: ConnectionFlags, command: string): VolregClient {
  const timeout = flags.timeout ?? String(DEFAULT_TIMEOUT_SECONDS);
  if (!/^\d{1,7}$/.test(timeout)) throw new UsageError(`--timeout wants a whole number of seconds (0 for no limit), got ${JSON.stringify(timeout)}`);
  // Basic credentials are `user:password`: the registry would split such a user at its colon
  if (flags.user?.includes(':')) throw new UsageError('--user (VOLREG_USER) can not hold ":" (Basic credentials split the user from the password there)');
  const client = new VolregClient({ url: flags.url ?? 'http://127.0.0.1:5000', user: flags.user, password: flags.password, timeoutSeconds: Number(timeout) });
  if (!flags.quiet) client.onWait = (m) => process.stderr.write(`volreg ${command}: waiting: ${m}\n`);
  return client;
}

/**
 * `<name>:<tag>` or `<name>@<digest>`, each part checked against the OCI grammar here: a
 * reference the registry could never accept is bad usage (exit 2), found before any work.
 */
export function parseSnapshotRef(ref: string): { name: string; tag: string } | { name: string; digest: string } {
  const at = ref.indexOf('@');
  if (at > 0) return { name: checkedPart(ref, () => parseRepositoryName(ref.slice(0, at))), digest: checkedPart(ref, () => parseDigest(ref.slice(at + 1))) };
  const colon = ref.lastIndexOf(':');
  if (colon <= 0 || colon === ref.length - 1) throw new UsageError(`expected <name>:<tag> or <name>@<digest>, got ${JSON.stringify(ref)}`);
  return { name: checkedPart(ref, () => parseRepositoryName(ref.slice(0, colon))), tag: checkedPart(ref, () => parseTag(ref.slice(colon + 1))) };
}

/** A repository name checked against the OCI grammar; a UsageError saying why not. */
export function checkedRepository(name: string, what: string): string {
  return checkedPart(what, () => parseRepositoryName(name));
}

/** A volume's repository name, as checkedRepository, and one /api/v1 can address (volume-name.ts). */
export function checkedVolume(name: string, what: string): string {
  const checked = checkedRepository(name, what);
  const problem = volumeNameProblem(checked);
  if (problem !== null) throw new UsageError(`${JSON.stringify(what)}: ${problem}`);
  return checked;
}

/** `parse()`, with a refusal of the value (a VolregError) as bad usage naming `what`. */
export function checkedPart<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (!isVolregError(err)) throw err;
    const hint = err.code === 'NAME_INVALID' ? ' (lower-case letters, digits and . _ - separators, / between components)' : '';
    throw new UsageError(`${JSON.stringify(what)}: ${err.message}${hint}`);
  }
}

export class UsageError extends Error {
  override name = 'UsageError';
}

/** A push reads the tag first (see put): a user refused that is told why a push asks for pull. */
function readFirst(err: unknown): unknown {
  if (!(err instanceof RegistryError) || err.code !== 'DENIED') return err;
  return new RegistryError(err.status, err.code, `${err.message} (a push reads the tag first: the user needs pull as well as push)`, err.detail, err.retryAfter);
}

/** The exit code for an error a command did not handle itself. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return AGENT_EXIT.USAGE;
  if (err instanceof RegistryError) {
    // a snapshot that exists without its bytes (set aside as damaged) is an integrity fault
    if (err.code === 'BLOB_UNKNOWN') return AGENT_EXIT.INTEGRITY;
    if (isMissing(err)) return AGENT_EXIT.NOT_FOUND;
    if (err.code === 'PRECONDITION_FAILED') return AGENT_EXIT.EXISTS;
    if (err.code === 'DENIED') return AGENT_EXIT.DENIED;
    if (err.code === 'DIGEST_INVALID' || err.code === 'ARCHIVE_INVALID') return AGENT_EXIT.INTEGRITY;
    return AGENT_EXIT.FAILURE;
  }
  if (err instanceof Error && ['IntegrityError', 'UnsafeArchiveError', 'CorruptArchiveError', 'UnarchivableNameError'].includes(err.name)) {
    return AGENT_EXIT.INTEGRITY;
  }
  if (err instanceof Error && err.name === 'TargetNotEmptyError') return AGENT_EXIT.NOT_EMPTY;
  return AGENT_EXIT.FAILURE;
}

export function describeError(err: unknown): string {
  if (err instanceof RegistryError) return `${err.message} (${err.code}, HTTP ${err.status})`;
  return err instanceof Error ? err.message : String(err);
}

/** Runs a command body: prints an unhandled error as `volreg <cmd>: ...` and exits with its code. */
export async function runAgent(command: string, body: () => Promise<number>): Promise<void> {
  let code: number;
  try {
    code = await body();
  } catch (err) {
    process.stderr.write(`volreg ${command}: ${describeError(err)}\n`);
    code = exitCodeOf(err);
  }
  process.exitCode = code;
}
