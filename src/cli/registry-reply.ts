import type { IncomingMessage } from 'node:http';
import { readCapped } from '../domain/read-capped.ts';

/**
 * Reading the registry's replies, and what the host agent says when a reply is not one the
 * registry gives: an error envelope becomes a RegistryError with its code; anything else (a
 * redirect, a proxy's HTML login page, a body cut short, a body far too large) becomes a
 * RegistryError saying what came instead, never a JSON parser's message or a bare "aborted".
 */

/** An error reply of the registry, with its OCI error code (or one of the codes below, when the reply was not the registry's). */
export class RegistryError extends Error {
  override name = 'RegistryError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly detail?: unknown,
    /** the seconds a 429 or 503 asked to wait before sending again (its Retry-After); null: not to be sent again */
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

/**
 * A 404 saying the snapshot, volume or blob asked for does not exist; not one of the registry's
 * router (`NOT_FOUND`, no such path) or of something in front of it: that is a wrong --url.
 */
export function isMissing(err: unknown): boolean {
  return err instanceof RegistryError && err.status === 404 && err.code !== 'NOT_FOUND' && err.code !== 'UNKNOWN';
}

/**
 * The delay a 429 or 503 asks for (`Retry-After` in seconds, 1 to 60), or null when the reply
 * is not a refusal to send again: volreg answers so when it did nothing with the request
 * (a full password-check queue, no file descriptor free, the archive inspection unavailable),
 * or when its MongoDB is electing a primary or out of reach: then what the request wrote before
 * is what sending it again writes.
 */
export function retryAfterSeconds(res: IncomingMessage): number | null {
  if (res.statusCode !== 429 && res.statusCode !== 503) return null;
  const value = res.headers['retry-after'];
  if (typeof value !== 'string' || !/^\d{1,5}$/.test(value.trim())) return null;
  return Math.min(Math.max(Number(value), 1), 60);
}

/** The largest JSON reply read: far above the largest listing (1000 snapshots with 32 labels each). */
export const MAX_JSON_REPLY_BYTES = 64 * 1024 * 1024;

/** `GET /api/v1/...` for messages: the method and the path without its query. */
export function requestName(method: string, path: string): string {
  return `${method} /${path.replace(/^\//, '').split('?')[0]}`;
}

/**
 * The error for a reply that broke off (the connection closed before the body's end), worded
 * for `what`; other errors (a timeout's) as they are.
 */
export function brokenReply(err: unknown, what: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ECONNRESET' || e?.code === 'ERR_STREAM_PREMATURE_CLOSE') return new Error(`the connection to the registry broke during ${what} (${e.message})`);
  return err;
}

/** A connection refused, reset or cut (not one that went silent: waiting out a timeout again would only double it). */
export function isDroppedConnection(err: unknown): boolean {
  return errorCodes(err).some((c) => DROPPED_CONNECTION.has(c));
}

/** the error's code and its cause's (unanswered() wraps Node's error) */
export function errorCodes(err: unknown): string[] {
  return [(err as NodeJS.ErrnoException)?.code, ((err as Error)?.cause as NodeJS.ErrnoException | undefined)?.code].filter((c): c is string => c !== undefined);
}

const DROPPED_CONNECTION = new Set(['ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNREFUSED']);

/** a name that does not resolve, or no route to it */
const UNREACHABLE = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN']);

/** No route to the registry, or its name does not resolve: the network (or the link to it) is down. */
export function isUnreachable(err: unknown): boolean {
  return errorCodes(err).some((c) => UNREACHABLE.has(c));
}

/**
 * The error for a request the registry never answered, worded for `request` (`GET /v2/...`):
 * Node's own ("socket hang up", "read ECONNRESET") names neither the registry nor the request,
 * and is what every host sees when the registry restarts during a restore storm; nor does
 * "getaddrinfo ENOTFOUND". Other errors (a certificate refused) say enough as they are.
 */
export function unanswered(err: NodeJS.ErrnoException, request: string, registry: string): Error {
  if (err.code === 'ECONNREFUSED') {
    return new Error(`nothing accepts connections at ${registry} (${request}: ${err.message}): the registry is down or restarting, or the URL is wrong; run the command again once it answers`, { cause: err });
  }
  if (err.code !== undefined && UNREACHABLE.has(err.code)) {
    // VOLREG_URL may not name the registry the operator thinks
    return new Error(`cannot reach the registry at ${registry} (${request}: ${err.message}): check VOLREG_URL and the network`, { cause: err });
  }
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    return new Error(`the registry at ${registry} closed the connection before answering ${request} (${err.message}): it may be restarting; run the command again`, { cause: err });
  }
  return err;
}

/** `HTTP 302 Found` */
function statusLine(res: IncomingMessage): string {
  return `HTTP ${res.statusCode ?? 0}${res.statusMessage ? ` ${res.statusMessage}` : ''}`;
}

/** A reply with a status that is neither success nor error: a redirect (never followed: credentials stay with the registry named), or 1xx. */
export function unexpectedStatus(res: IncomingMessage, request: string): RegistryError {
  res.resume();
  const status = res.statusCode ?? 0;
  const location = res.headers.location;
  const where = typeof location === 'string' ? ` to ${location.slice(0, 200)}` : '';
  const why = status >= 300 && status < 400 ? `${where}, which volreg does not follow (credentials go only to the registry named): give the registry's own address as --url` : ', not a reply the registry gives';
  return new RegistryError(status, 'UNEXPECTED_REPLY', `${request} was answered ${statusLine(res)}${why}`);
}


/**
 * A success reply's JSON body, parsed, and its bytes (a manifest's digest is theirs); a
 * RegistryError when it is not JSON, is too large, or breaks off.
 */
export async function readJsonReply<T>(res: IncomingMessage, request: string, registry: string): Promise<{ value: T; bytes: Buffer }> {
  const status = res.statusCode ?? 0;
  let body: Buffer | null;
  try {
    body = await readCapped(res, MAX_JSON_REPLY_BYTES);
  } catch (err) {
    throw brokenReply(err, `the reply to ${request}`);
  }
  if (body === null) throw new RegistryError(status, 'REPLY_TOO_LARGE', `the reply to ${request} is larger than ${MAX_JSON_REPLY_BYTES} bytes: not one of the registry's; is ${registry} a volreg registry?`);
  try {
    return { value: JSON.parse(body.toString('utf8')) as T, bytes: body };
  } catch {
    const type = res.headers['content-type'] ?? 'none';
    throw new RegistryError(status, 'NOT_JSON', `the reply to ${request} is not JSON (HTTP ${status}, Content-Type ${type}): is ${registry} a volreg registry?`);
  }
}

/** The RegistryError an error reply (4xx, 5xx) stands for: its error envelope's, or its status and the start of its body. */
export async function errorReply(res: IncomingMessage): Promise<RegistryError> {
  const status = res.statusCode ?? 0;
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const c of res) {
      if (total < 64 * 1024) chunks.push(c as Buffer);
      total += (c as Buffer).length;
    }
  } catch {
    // what arrived is enough to say what went wrong
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string; detail?: unknown }> };
    const e = body.errors?.[0];
    // the registry knows no such path: the URL's path is wrong, not the snapshot missing
    if (e?.code === 'NOT_FOUND') return new RegistryError(status, e.code, `${e.message ?? 'no such endpoint'}: the registry has no such path; is --url (VOLREG_URL) its address, with no path it does not serve under?`);
    if (e) return new RegistryError(status, e.code ?? 'UNKNOWN', e.message ?? 'error', e.detail, retryAfterSeconds(res));
  } catch {
    // not the error envelope: a proxy or something else answered
  }
  const challenge = res.headers['www-authenticate'];
  const scheme = typeof challenge === 'string' && status === 401 && !/^basic\b/i.test(challenge) ? ` (it asks for ${challenge.split(/\s/)[0]} authentication; volreg sends Basic credentials only)` : '';
  if (isHtml(text, res.headers['content-type'])) {
    const title = /<title>([^<]{1,200})<\/title>/i.exec(text)?.[1]?.trim();
    const limits = PROXY_LIMIT_STATUSES.has(status)
      ? ": a reverse proxy's limit on request bodies or its timeouts may be too small for volreg (see volreg's README, Behind a reverse proxy)"
      : '';
    return new RegistryError(status, 'UNKNOWN', `${statusLine(res)}, an HTML page${title ? ` ("${title}")` : ''} rather than volreg's error reply: something in front of the registry answered${limits}${scheme}`);
  }
  // one line: a page of text would break the one-line message
  const start = text.trim().replace(/\s+/g, ' ').slice(0, 200);
  return new RegistryError(status, 'UNKNOWN', `${statusLine(res)}${start ? `: ${start}` : ''}${scheme}`);
}

/** What a reverse proxy answers itself when a body is over its limit (413) or the registry took longer than its timeouts (408, 502, 504). */
const PROXY_LIMIT_STATUSES = new Set([408, 413, 502, 504]);

/** An HTML page (a proxy's or web server's own error page): volreg's errors are JSON. */
function isHtml(text: string, contentType: string | undefined): boolean {
  return /^text\/html\b/i.test(contentType ?? '') || /^\s*<(!doctype html|html)\b/i.test(text);
}
