import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { Blob, Built } from './manifest-fixtures.ts';

/**
 * A small, exact HTTP client for the /v2 tests: node:http sends only the headers given (fetch
 * would add a match-all Accept, and tests need requests without any Accept header).
 */

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  json<T = unknown>(): T;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: Buffer | string;
}

export function request(base: string, path: string, opts: RequestOptions = {}): Promise<Reply> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: opts.method ?? 'GET', headers: { ...(opts.body !== undefined ? { 'Content-Length': String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body.toString('utf8')) as T });
        });
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** The body of `reply` when it has `status`; else throws, naming `what` (for set-up steps, not the assertion under test). */
export async function bodyWhen(what: string, reply: Promise<Reply>, status: number): Promise<Buffer> {
  const r = await reply;
  if (r.status !== status) throw new Error(`${what}: ${r.status} ${r.body.toString('utf8')}`);
  return r.body;
}

/** The first error code of an OCI error envelope. */
export function errorCode(r: Reply): string | undefined {
  return r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
}

export function errorDetail<T = unknown>(r: Reply): T {
  return r.json<{ errors: Array<{ detail: T }> }>().errors[0]!.detail;
}

/** Monolithic blob upload (POST ?digest=), as OCI clients do for small blobs. */
export async function pushBlob(base: string, repo: string, blob: Blob): Promise<void> {
  const r = await request(base, `/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream' },
    body: blob.bytes,
  });
  if (r.status !== 201) throw new Error(`blob push to ${repo} failed: ${r.status} ${r.body.toString('utf8')}`);
}

export async function pushBlobs(base: string, repo: string, blobs: Blob[]): Promise<void> {
  for (const b of blobs) await pushBlob(base, repo, b);
}

export function putManifest(base: string, repo: string, reference: string, m: Built, contentType: string | null = m.mediaType): Promise<Reply> {
  return request(base, `/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: contentType === null ? {} : { 'Content-Type': contentType },
    body: m.bytes,
  });
}

export function getManifest(base: string, repo: string, reference: string, accept?: string | string[], method = 'GET'): Promise<Reply> {
  return request(base, `/v2/${repo}/manifests/${reference}`, { method, headers: accept === undefined ? {} : { Accept: accept } });
}

export const ACCEPT_ALL = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
  'application/vnd.docker.distribution.manifest.v1+json',
].join(', ');

let counter = 0;
/** A repository name unique within the test file run. */
export function repoName(prefix: string): string {
  return `${prefix}-${process.pid}-${counter++}`;
}
