import { idleWhileBusy } from '../client-idle.ts';
import { sendBlob, sendPieces } from '../send-blob.ts';
import { multipartRanges } from '../multipart-ranges.ts';
import { clientHolds, etagOf, rangeToHonour } from '../conditional.ts';
import { declaredLength } from '../body.ts';
import type { Context } from 'koa';
import { contentRange, parseChunkRange, uploadRange, type ByteRange } from '../../domain/byte-range.ts';
import { isSupportedAlgorithm, parseDigest, type Digest, type DigestAlgorithm } from '../../domain/digest.ts';
import { VolregError, isVolregError } from '../../domain/errors.ts';
import { parseRepositoryName, type RepositoryName } from '../../domain/names.ts';
import type { BlobService } from '../../services/blob-service.ts';
import type { UploadService } from '../../services/upload-service.ts';
import { paths } from '../route-table.ts';
import type { HandlerMap } from '../router.ts';

/**
 * /v2 blobs and uploads (OCI distribution-spec v1.1): parse the request, call the service,
 * shape the reply. Statuses and headers follow the spec; where it leaves a choice they follow
 * CNCF distribution (see README "Blobs and uploads").
 */

export interface BlobHandlerDeps {
  blobs: BlobService;
  uploads: UploadService;
}

/** Advertised on POST: a hint (not enforced) to keep chunks large enough to be efficient. */
export const OCI_CHUNK_MIN_LENGTH = 1024 * 1024;

export function blobHandlers(deps: BlobHandlerDeps): HandlerMap {
  const { blobs, uploads } = deps;
  return {
    blob: {
      GET: async (ctx, { params, repository }) => {
        const digest = parseDigest(params.digest ?? '');
        if (clientHolds(ctx.get('If-None-Match'), digest)) {
          // the client has these bytes: 304, once the repository is known to hold them
          if (!(await blobs.stat(repository, digest))) throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
          contentHeaders(ctx, digest);
          ctx.status = 304;
          return;
        }
        const opened = await blobs.openRangesToSend(repository, digest, { range: rangeToHonour(ctx.get('Range'), ctx.get('If-Range'), etagOf(digest)) });
        contentHeaders(ctx, digest);
        ctx.set('Accept-Ranges', 'bytes');
        ctx.type = 'application/octet-stream';
        if ('parts' in opened) {
          const body = multipartRanges(opened.parts, opened.blob.size, 'application/octet-stream', opened.open);
          ctx.status = 206;
          ctx.type = body.contentType;
          ctx.length = body.length;
          await sendPieces(ctx, body.pieces, body.longest);
          return;
        }
        if (opened.range) {
          ctx.status = 206;
          ctx.set('Content-Range', contentRange(opened.range, opened.blob.size));
        } else {
          ctx.status = 200;
        }
        ctx.length = opened.reader.length;
        await sendBlob(ctx, opened.reader);
      },
      HEAD: async (ctx, { params, repository }) => {
        const digest = parseDigest(params.digest ?? '');
        const blob = await blobs.stat(repository, digest);
        if (!blob) throw new VolregError('BLOB_UNKNOWN', undefined, { digest });
        contentHeaders(ctx, digest);
        if (clientHolds(ctx.get('If-None-Match'), digest)) {
          ctx.status = 304;
          return;
        }
        ctx.set('Accept-Ranges', 'bytes');
        ctx.status = 200;
        ctx.type = 'application/octet-stream';
        ctx.length = blob.size;
      },
      DELETE: async (ctx, { params, repository }) => {
        const digest = parseDigest(params.digest ?? '');
        await blobs.delete(repository, digest);
        ctx.set('Docker-Content-Digest', digest);
        empty(ctx, 202);
      },
    },

    uploadStart: {
      POST: async (ctx, { repository }) => {
        const digest = optional(ctx, 'digest', parseDigest);
        const mount = optional(ctx, 'mount', parseDigest);
        let from = optional(ctx, 'from', parseRepositoryName);
        const algorithm = optional(ctx, 'digest-algorithm', parseAlgorithm) ?? (digest ? algorithmOf(digest) : undefined);
        // A mount reads the `from` repository: a user who may not pull there gets an ordinary
        // upload session instead (202), as for any mount the registry does not do (OCI spec).
        if (mount && from && ctx.state.permissions && !ctx.state.permissions.may('pull', from)) from = undefined;
        const result = await uploads.start(repository, {
          ...(digest ? { digest, body: ctx.req } : {}),
          ...(digest ? declaredLength(ctx) : {}),
          ...(mount ? { mount } : {}),
          ...(from ? { from } : {}),
          ...(algorithm ? { algorithm } : {}),
        });
        if (result.kind === 'created') {
          created(ctx, repository, result.blob.digest);
        } else {
          sessionHeaders(ctx, repository, result.id, result.offset);
          ctx.set('OCI-Chunk-Min-Length', String(OCI_CHUNK_MIN_LENGTH));
          empty(ctx, 202);
        }
      },
    },

    upload: {
      GET: async (ctx, { params, repository }) => {
        const uuid = params.uuid ?? '';
        const { offset } = await uploads.status(repository, uuid);
        sessionHeaders(ctx, repository, uuid, offset);
        ctx.status = 204;
      },
      PATCH: async (ctx, { params, repository }) => {
        const uuid = params.uuid ?? '';
        const { offset } = await withRangeHeaders(uploads, repository, uuid, () =>
          uploads.append(repository, uuid, ctx.req, { ...chunkRange(ctx), ...declaredLength(ctx), busy: idleWhileBusy(ctx) }),
        );
        sessionHeaders(ctx, repository, uuid, offset);
        empty(ctx, 202);
      },
      PUT: async (ctx, { params, repository }) => {
        const uuid = params.uuid ?? '';
        const raw = ctx.query.digest;
        if (raw === undefined || raw === '') {
          // The session stays, so the client can retry with the digest.
          throw new VolregError('DIGEST_INVALID', 'the digest query parameter is required');
        }
        const digest = parseDigest(single(raw, 'digest'));
        // A Content-Range announces a final chunk even when no byte of it came (then SIZE_INVALID).
        const body = hasBody(ctx) || ctx.get('Content-Range') !== '' ? ctx.req : null;
        const blob = await withRangeHeaders(uploads, repository, uuid, () =>
          uploads.finish(repository, uuid, digest, body, { ...chunkRange(ctx), ...declaredLength(ctx), busy: idleWhileBusy(ctx) }),
        );
        created(ctx, repository, blob.digest);
      },
      DELETE: async (ctx, { params, repository }) => {
        const uuid = params.uuid ?? '';
        await uploads.cancel(repository, uuid);
        ctx.set('Docker-Upload-UUID', uuid);
        ctx.status = 204;
      },
    },
  };
}

function parseAlgorithm(input: string): DigestAlgorithm {
  const alg = input.toLowerCase();
  if (!isSupportedAlgorithm(alg)) throw new VolregError('DIGEST_INVALID', 'unsupported digest algorithm', { algorithm: input.slice(0, 32) });
  return alg;
}

function algorithmOf(digest: Digest): DigestAlgorithm {
  return digest.slice(0, digest.indexOf(':')) as DigestAlgorithm;
}

function single(value: string | string[], name: string): string {
  if (Array.isArray(value)) {
    if (value.length !== 1) throw new VolregError('BAD_REQUEST', `query parameter ${name} given more than once`);
    return value[0]!;
  }
  return value;
}

function optional<T>(ctx: Context, name: string, parse: (s: string) => T): T | undefined {
  const raw = ctx.query[name];
  if (raw === undefined || raw === '') return undefined;
  return parse(single(raw, name));
}

/** Does the request carry a body? (Content-Length above zero, or a chunked one.) */
function hasBody(ctx: Context): boolean {
  if (ctx.get('Transfer-Encoding')) return true;
  const cl = ctx.get('Content-Length');
  return cl !== '' && cl !== '0';
}

function chunkRange(ctx: Context): { range?: ByteRange } {
  const header = ctx.get('Content-Range');
  return header ? { range: parseChunkRange(header) } : {};
}

/** A 416 on an upload tells the client where the session really is. */
async function withRangeHeaders<T>(uploads: UploadService, repo: RepositoryName, uuid: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!isVolregError(err) || err.code !== 'RANGE_INVALID') throw err;
    const detail = err.detail as { offset?: unknown } | undefined;
    const offset = typeof detail?.offset === 'number' ? detail.offset : (await uploads.status(repo, uuid)).offset;
    throw new VolregError('RANGE_INVALID', err.message, { offset }, {
      Range: uploadRange(offset),
      Location: paths.upload(repo, uuid),
      'Docker-Upload-UUID': uuid,
    });
  }
}

function contentHeaders(ctx: Context, digest: Digest): void {
  ctx.set('Docker-Content-Digest', digest);
  ctx.set('ETag', etagOf(digest));
}

function sessionHeaders(ctx: Context, repo: RepositoryName, uuid: string, offset: number): void {
  ctx.set('Location', paths.upload(repo, uuid));
  ctx.set('Docker-Upload-UUID', uuid);
  ctx.set('Range', uploadRange(offset));
}

function created(ctx: Context, repo: RepositoryName, digest: Digest): void {
  ctx.set('Location', paths.blob(repo, digest));
  ctx.set('Docker-Content-Digest', digest);
  empty(ctx, 201);
}

/** A reply with this status and an empty body (Koa would otherwise write the status text). */
function empty(ctx: Context, status: number): void {
  ctx.status = status;
  ctx.body = '';
  ctx.remove('Content-Type');
}
