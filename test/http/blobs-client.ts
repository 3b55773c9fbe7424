import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { seededBytes } from '../helpers/seeded-bytes.ts';

/**
 * Small clients for the blob and upload tests: fetch for most requests, raw node:http where
 * the framing matters (HEAD bodies, chunked bodies, exact headers), curl where a user would.
 */

export const run = promisify(execFile);

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function sha512(bytes: Buffer | string): string {
  return `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
}

/** Deterministic pseudo-random bytes (cheap, reproducible in a failure message). */
export function bytesOf(size: number, seed = 1): Buffer {
  // shifted: seededBytes sets the lowest bit, so seeds 22 and 23 would give the same bytes
  return seededBytes(0x9e3779b9 ^ (seed << 1), size);
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One request over a fresh connection, reporting exactly what came back. */
export function raw(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: Buffer | Buffer[]; chunked?: boolean } = {},
): Promise<RawResponse> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    const parts = opts.body === undefined ? [] : Array.isArray(opts.body) ? opts.body : [opts.body];
    if (!opts.chunked && opts.body !== undefined && headers['Content-Length'] === undefined) {
      headers['Content-Length'] = String(parts.reduce((n, b) => n + b.length, 0));
    }
    if (opts.chunked) headers['Transfer-Encoding'] = 'chunked';
    const req = request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const p of parts) req.write(p);
    req.end();
  });
}

export interface ErrorEnvelope {
  errors: Array<{ code: string; message: string; detail?: unknown }>;
}

export function errorCode(body: Buffer | string): string | undefined {
  try {
    return (JSON.parse(body.toString()) as ErrorEnvelope).errors[0]?.code;
  } catch {
    return undefined;
  }
}

/** Asserts an OCI error reply: status, code, JSON envelope. */
export function isError(t: ExecutionContext, res: RawResponse, status: number, code: string): void {
  t.is(res.status, status, `status of ${res.body.toString().slice(0, 300)}`);
  t.is(errorCode(res.body), code);
  t.regex(String(res.headers['content-type']), /^application\/json/);
}

/** Pushes a blob with a single POST ?digest=. */
export async function pushBlob(base: string, repo: string, bytes: Buffer, digest = sha256(bytes)): Promise<string> {
  const res = await raw(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, { body: bytes });
  if (res.status !== 201) throw new Error(`push failed: ${res.status} ${res.body.toString()}`);
  return digest;
}

/** Starts an upload session and returns its Location. */
export async function startSession(base: string, repo: string, query = ''): Promise<string> {
  const res = await raw(base, 'POST', `/v2/${repo}/blobs/uploads/${query}`);
  if (res.status !== 202) throw new Error(`POST failed: ${res.status} ${res.body.toString()}`);
  return String(res.headers.location);
}

/** Every regular file under a directory, relative to it (entries vanishing meanwhile are skipped). */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(join(dir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(r);
      else out.push(r);
    }
  };
  await walk('');
  return out.sort();
}

/** The blob files (blobs/<alg>/<2>/<hex>) under a data dir. */
export async function blobFiles(dataDir: string): Promise<string[]> {
  return (await filesUnder(join(dataDir, 'blobs'))).map((f) => f.split('/').pop()!);
}

export async function uploadFiles(dataDir: string): Promise<string[]> {
  return filesUnder(join(dataDir, 'uploads'));
}

export function hexOf(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}
