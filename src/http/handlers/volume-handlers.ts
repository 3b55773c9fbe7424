import { withPermissions } from '../write-permissions.ts';
import { sendBlob } from '../send-blob.ts';
import { clientHolds, etagOf, rangeToHonour, requestPreconditions } from '../conditional.ts';
import { declaredLength } from '../body.ts';
import type { Context } from 'koa';
import { contentRange, resolveRange, type ByteRange } from '../../domain/byte-range.ts';
import { digestHex, oneDigestPerAlgorithm, parseDigest, parseRfc3230Digests, rfc3230Digest, type Digest } from '../../domain/digest.ts';
import { VolregError } from '../../domain/errors.ts';
import { parseTag } from '../../domain/names.ts';
import type { Compression } from '../../domain/volumes/media-types.ts';
import { parseHost, parseLabels } from '../../domain/volumes/snapshot-config.ts';
import type { SnapshotInfo, VolumeSummary } from '../../domain/volumes/snapshot.ts';
import { snapshotPosition } from '../../domain/volumes/listing-position.ts';
import type { VolumeService } from '../../services/volume-service.ts';
import { listingQuery, unfilteredListingQuery } from '../listing-query.ts';
import { queryOne, queryValues } from '../query-values.ts';
import { paths } from '../route-table.ts';
import type { HandlerMap, RouteRequest } from '../router.ts';

/**
 * /api/v1/volumes: curl-first volume snapshots (DESIGN.md section 4). JSON replies, raw
 * streams for content. Parsing here, decisions in VolumeService.
 *
 * Upload metadata: the source host from `X-Volreg-Host` or `?host=`; labels from `?label=k=v`
 * (repeatable) and `X-Volreg-Label: k=v` headers (several headers, or comma-separated), query
 * labels winning. The expected digests from `?digest=sha256:<hex>` (or sha512) and
 * `Digest: sha-256=<b64>` (or sha-512; each value given is checked).
 */
export interface VolumeHandlerDeps {
  volumes: VolumeService;
}

const CONTENT_TYPES: Record<Compression, string> = { none: 'application/x-tar', gzip: 'application/gzip', zstd: 'application/zstd' };
/** What the client says the body hashes to: `?digest=` and every sha-256 and sha-512 value of `Digest` (all are checked). */
function expectedDigests(ctx: Context): Digest[] {
  const fromQuery = queryOne(ctx, 'digest');
  const header = ctx.get('Digest'); // several Digest headers arrive joined with ", "
  return oneDigestPerAlgorithm([...(fromQuery !== undefined ? [parseDigest(fromQuery)] : []), ...(header !== '' ? parseRfc3230Digests(header) : [])]);
}

function uploadHost(ctx: Context): string | null {
  const header = ctx.get('X-Volreg-Host');
  const query = queryOne(ctx, 'host');
  const value = query ?? (header !== '' ? header : undefined);
  return value === undefined ? null : parseHost(value);
}

/**
 * A header's value as the UTF-8 text the client sent: Node hands header bytes over one
 * character per byte (latin1). Bytes that are not UTF-8 are refused rather than guessed at.
 */
function utf8Header(value: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(value, 'latin1'));
  } catch {
    throw new VolregError('BAD_REQUEST', 'a header value is not UTF-8');
  }
}

function uploadLabels(ctx: Context): Record<string, string> {
  const raw = ctx.req.headers['x-volreg-label'];
  const headerPairs = (Array.isArray(raw) ? raw : raw !== undefined ? [raw] : [])
    .map(utf8Header)
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
  return parseLabels([...headerPairs, ...queryValues(ctx, 'label')]);
}

/**
 * `Link: <...>; rel="next"` while more remain, keeping the request's other parameters: the next
 * page starts after the position of this page's last entry (not at an offset, which entries
 * pushed or deleted meanwhile would shift). Returns that position (null: the last page).
 */
function nextPageLink(ctx: Context, path: string, limit: number, more: boolean, lastPosition: string | undefined): string | null {
  if (!more || lastPosition === undefined) return null;
  const next = new URLSearchParams(ctx.querystring);
  next.delete('offset');
  next.set('after', lastPosition);
  next.set('limit', String(limit));
  ctx.set('Link', `<${path}?${next.toString()}>; rel="next"`);
  return lastPosition;
}

export function snapshotJson(info: SnapshotInfo, fileName: string): Record<string, unknown> {
  return {
    volume: info.volume,
    tag: info.tag,
    digest: info.manifestDigest,
    manifestDigest: info.manifestDigest,
    configDigest: info.configDigest,
    layer: info.layer,
    size: info.layer.size,
    compression: info.compression,
    uncompressed: info.uncompressed,
    entries: info.entries,
    unsafeEntries: info.unsafeEntries,
    host: info.host,
    labels: info.labels,
    created: info.created,
    lastVerify: info.lastVerify,
    source: info.source,
    fileName,
    links: {
      self: paths.volumeTag(info.volume, info.tag),
      content: paths.volumeContent(info.volume, info.tag),
      sha256: paths.volumeContentSha256(info.volume, info.tag),
    },
  };
}

function volumeJson(v: VolumeSummary, fileName: (s: SnapshotInfo) => string): Record<string, unknown> {
  return { volume: v.volume, snapshots: v.snapshots, totalSize: v.totalSize, storedSize: v.storedSize, latest: snapshotJson(v.latest, fileName(v.latest)) };
}

export function volumeHandlers(deps: VolumeHandlerDeps): HandlerMap {
  const { volumes } = deps;
  const fileName = (s: SnapshotInfo): string => volumes.fileName(s);

  const content = async (ctx: Context, req: RouteRequest): Promise<void> => {
    const tag = parseTag(req.params.tag!);
    const { info, size, fileName: name } = await volumes.content(req.repository, tag);
    const etag = etagOf(info.layer.digest);
    ctx.set('ETag', etag);
    ctx.set('Accept-Ranges', 'bytes');
    ctx.set('Docker-Content-Digest', info.layer.digest);
    ctx.set('Digest', rfc3230Digest(info.layer.digest));
    ctx.set('X-Volreg-Manifest-Digest', info.manifestDigest);
    ctx.set('Content-Disposition', `attachment; filename="${name}"`);
    if (clientHolds(ctx.get('If-None-Match'), info.layer.digest)) {
      ctx.status = 304;
      return;
    }
    const wanted = rangeToHonour(ctx.get('Range'), ctx.get('If-Range'), etag);
    ctx.type = CONTENT_TYPES[info.compression];
    const reply = (range: ByteRange | null): void => {
      ctx.status = range ? 206 : 200;
      if (range) ctx.set('Content-Range', contentRange(range, size));
      ctx.set('Content-Length', String(range ? range.end - range.start + 1 : size));
    };
    if (ctx.method === 'HEAD') {
      const r = resolveRange(wanted, size);
      reply(r.kind === 'partial' ? r.range : null);
      return;
    }
    const opened = await volumes.openLayer(info, wanted);
    reply(opened.range);
    await sendBlob(ctx, opened.reader);
  };

  return {
    volumes: {
      GET: async (ctx) => {
        // this list does not filter: host, since and until are refused, not ignored
        const q = unfilteredListingQuery(ctx, "a volume's snapshot list (/api/v1/volumes/<name>/tags)");
        // only the volumes the user may pull are listed (no permissions: authentication is off)
        const permissions = ctx.state.permissions;
        const page = await volumes.listVolumes(q, permissions && ((name) => permissions.may('pull', name)));
        const next = nextPageLink(ctx, paths.volumes(), q.limit, page.more, page.items.at(-1)?.volume);
        ctx.body = { total: page.total, offset: q.offset, limit: q.limit, next, volumes: page.items.map((v) => volumeJson(v, fileName)) };
      },
    },
    volumeTags: {
      GET: async (ctx, req) => {
        const q = listingQuery(ctx);
        const page = await volumes.list(req.repository, q);
        const last = page.items.at(-1);
        const next = nextPageLink(ctx, paths.volumeTags(req.repository), q.limit, page.more, last && snapshotPosition(last));
        ctx.body = {
          volume: req.repository,
          total: page.total,
          offset: q.offset,
          limit: q.limit,
          next,
          snapshots: page.items.map((s) => snapshotJson(s, fileName(s))),
        };
      },
    },
    volumeTag: {
      PUT: async (ctx, req) => {
        const tag = parseTag(req.params.tag!);
        const opts = {
          expectedDigests: expectedDigests(ctx),
          host: uploadHost(ctx),
          labels: uploadLabels(ctx),
          ...declaredLength(ctx),
          preconditions: withPermissions(requestPreconditions(ctx.get('If-Match'), ctx.get('If-None-Match')), ctx, req.repository),
        };
        const info = await volumes.put(req.repository, tag, ctx.req, opts);
        ctx.status = 201;
        ctx.set('Location', paths.volumeTag(req.repository, tag));
        ctx.set('Docker-Content-Digest', info.manifestDigest);
        ctx.body = snapshotJson(info, fileName(info));
      },
      GET: async (ctx, req) => {
        const info = await volumes.get(req.repository, parseTag(req.params.tag!));
        ctx.set('Docker-Content-Digest', info.manifestDigest);
        ctx.body = snapshotJson(info, fileName(info));
      },
      DELETE: async (ctx, req) => {
        const info = await volumes.delete(req.repository, parseTag(req.params.tag!), {
          preconditions: requestPreconditions(ctx.get('If-Match'), ctx.get('If-None-Match')),
        });
        ctx.body = { deleted: { volume: info.volume, tag: info.tag, manifestDigest: info.manifestDigest } };
      },
    },
    volumeContent: { GET: content, HEAD: content },
    volumeContentSha256: {
      GET: async (ctx, req) => {
        const tag = parseTag(req.params.tag!);
        const { info, fileName: name } = await volumes.content(req.repository, tag);
        if (!info.layer.digest.startsWith('sha256:')) throw new VolregError('UNSUPPORTED', 'the layer digest is not sha256');
        ctx.type = 'text/plain; charset=utf-8';
        ctx.set('Content-Disposition', `attachment; filename="${name}.sha256"`);
        ctx.body = `${digestHex(info.layer.digest)}  ${name}\n`;
      },
    },
    volumeVerify: {
      POST: async (ctx, req) => {
        const info = await volumes.verify(req.repository, parseTag(req.params.tag!));
        ctx.body = { ...snapshotJson(info, fileName(info)), ok: info.lastVerify?.ok ?? false };
      },
    },
  };
}

