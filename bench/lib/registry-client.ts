/**
 * The /v2 operations the scenarios time, written against the OCI distribution spec so the
 * same code drives volreg and CNCF distribution.
 */
import { createReadStream } from 'node:fs';
import { header, type HttpClient, type Reply } from './http-client.ts';

const OCTET = 'application/octet-stream';

function withQuery(location: string, key: string, value: string): string {
  const url = new URL(location, 'http://placeholder');
  url.searchParams.set(key, value);
  return url.pathname + url.search;
}

function locationOf(client: HttpClient, reply: Reply): string {
  const loc = header(reply, 'location');
  if (!loc) throw new Error(`no Location header (status ${reply.status})`);
  return client.pathOf(loc);
}

export async function startUpload(client: HttpClient, repo: string, signal?: AbortSignal): Promise<string> {
  const reply = await client.expect({ method: 'POST', path: `/v2/${repo}/blobs/uploads/`, headers: { 'content-length': 0 }, signal }, 202);
  return locationOf(client, reply);
}

function checkDigest(reply: Reply, digest: string): void {
  const got = header(reply, 'docker-content-digest');
  if (got && got !== digest) throw new Error(`server reports digest ${got}, expected ${digest}`);
}

/** POST, then one PUT ?digest= carrying the whole blob streamed from `file`. */
export function uploadMonolithic(client: HttpClient, repo: string, file: { path: string; size: number; digest: string }, signal?: AbortSignal): Promise<void> {
  return uploadSlice(client, repo, file, { start: 0, end: file.size - 1, digest: file.digest }, signal);
}

/** POST, then one PUT ?digest= streaming bytes [start, end] of a file (a host pushing a blob of its own). */
export async function uploadSlice(
  client: HttpClient,
  repo: string,
  file: { path: string },
  slice: { start: number; end: number; digest: string },
  signal?: AbortSignal,
): Promise<void> {
  const loc = await startUpload(client, repo, signal);
  const reply = await client.expect(
    {
      method: 'PUT',
      path: withQuery(loc, 'digest', slice.digest),
      headers: { 'content-type': OCTET, 'content-length': slice.end - slice.start + 1 },
      body: () => createReadStream(file.path, { start: slice.start, end: slice.end, highWaterMark: 1024 * 1024 }),
      signal,
    },
    201,
  );
  checkDigest(reply, slice.digest);
}

/** POST, PATCHes of `chunk` bytes with Content-Range, then an empty PUT ?digest=. */
export async function uploadChunked(
  client: HttpClient,
  repo: string,
  file: { path: string; size: number; digest: string },
  chunk: number,
  signal?: AbortSignal,
): Promise<number> {
  let loc = await startUpload(client, repo, signal);
  let patches = 0;
  for (let start = 0; start < file.size; start += chunk) {
    const end = Math.min(file.size, start + chunk) - 1;
    const reply = await client.expect(
      {
        method: 'PATCH',
        path: loc,
        headers: { 'content-type': OCTET, 'content-length': end - start + 1, 'content-range': `${start}-${end}` },
        body: () => createReadStream(file.path, { start, end, highWaterMark: 1024 * 1024 }),
        signal,
      },
      202,
    );
    patches++;
    const range = header(reply, 'range');
    if (range && range !== `0-${end}`) throw new Error(`after PATCH ${start}-${end} the server reports Range ${range}`);
    loc = locationOf(client, reply);
  }
  const reply = await client.expect(
    { method: 'PUT', path: withQuery(loc, 'digest', file.digest), headers: { 'content-length': 0 }, signal },
    201,
  );
  checkDigest(reply, file.digest);
  return patches;
}

/** Uploads a small in-memory blob (POST + PUT). */
export async function uploadSmall(client: HttpClient, repo: string, bytes: Buffer, digest: string, signal?: AbortSignal): Promise<void> {
  const loc = await startUpload(client, repo, signal);
  const reply = await client.expect(
    { method: 'PUT', path: withQuery(loc, 'digest', digest), headers: { 'content-type': OCTET, 'content-length': bytes.length }, body: bytes, signal },
    201,
  );
  checkDigest(reply, digest);
}

/** Streams a blob and discards it; returns the number of bytes received. */
export async function downloadBlob(client: HttpClient, repo: string, digest: string, signal?: AbortSignal): Promise<number> {
  const reply = await client.expect({ method: 'GET', path: `/v2/${repo}/blobs/${digest}`, keepBody: false, signal }, 200);
  return reply.bytes;
}

export async function headBlob(client: HttpClient, repo: string, digest: string, signal?: AbortSignal): Promise<Reply> {
  return client.expect({ method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, signal }, 200);
}

export async function putManifest(
  client: HttpClient,
  repo: string,
  reference: string,
  manifest: { mediaType: string; bytes: Buffer; digest: string },
  signal?: AbortSignal,
): Promise<void> {
  const reply = await client.expect(
    { method: 'PUT', path: `/v2/${repo}/manifests/${reference}`, headers: { 'content-type': manifest.mediaType }, body: manifest.bytes, signal },
    201,
  );
  checkDigest(reply, manifest.digest);
}

export async function getManifest(client: HttpClient, repo: string, reference: string, accept: string, signal?: AbortSignal): Promise<Reply> {
  return client.expect({ method: 'GET', path: `/v2/${repo}/manifests/${reference}`, headers: { accept }, signal }, 200);
}

const LINK_NEXT = /<([^>]+)>\s*;\s*rel="?next"?/;

/**
 * Walks tags/list by the Link header, asking for pages of `n` (or the server's default when
 * undefined); returns the tags and the page count.
 */
/** One tags/list request as a paginating client sends it: `?n=<n>&last=<last>`; the tags it got. */
export async function listTagsPage(client: HttpClient, repo: string, n: number, last: string, signal?: AbortSignal): Promise<string[]> {
  const reply = await client.expect({ method: 'GET', path: `/v2/${repo}/tags/list?n=${n}&last=${encodeURIComponent(last)}`, signal }, 200);
  return (JSON.parse(reply.body.toString('utf8')) as { tags?: string[] | null }).tags ?? [];
}

export async function listAllTags(client: HttpClient, repo: string, n: number | undefined, signal?: AbortSignal): Promise<{ tags: string[]; pages: number }> {
  const tags: string[] = [];
  let next: string | undefined = `/v2/${repo}/tags/list${n === undefined ? '' : `?n=${n}`}`;
  let pages = 0;
  while (next) {
    const reply = await client.expect({ method: 'GET', path: next, signal }, 200);
    pages++;
    const doc = JSON.parse(reply.body.toString('utf8')) as { tags?: string[] | null };
    tags.push(...(doc.tags ?? []));
    const link = LINK_NEXT.exec(header(reply, 'link'));
    next = link ? client.pathOf(link[1]) : undefined;
    if (pages > 1_000_000) throw new Error('tags/list pagination does not end');
  }
  return { tags, pages };
}
