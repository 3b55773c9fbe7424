/**
 * The benchmark scenarios. Each one runs against one server at a time and returns a figure;
 * untimed preparation (uploading referenced blobs, creating tags) happens inside `run` but
 * outside the timed window. Scenarios that need an earlier one's data prepare it themselves
 * when it is missing, so a failure in one row does not cascade.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { CpuSpent } from './cpu-time.ts';
import type { BenchData, DataFile } from './data.ts';
import { seedDistributionTags } from './distribution-seed.ts';
import { HttpClient } from './http-client.ts';
import { startInspectionProcess } from './inspection-process.ts';
import { ACCEPT_SCHEMA2, buildManifestSet, checkManifestSet, type ManifestSet } from './manifest-data.ts';
import { formatBytes, type BenchOptions, type ServerKind } from './options.ts';
import { latencySummary, runPool } from './pool.ts';
import {
  downloadBlob,
  getManifest,
  headBlob,
  listAllTags,
  listTagsPage,
  putManifest,
  startUpload,
  uploadChunked,
  uploadMonolithic,
  uploadSlice,
  uploadSmall,
} from './registry-client.ts';
import type { RunningServer } from './servers.ts';

export interface Outcome {
  value: number;
  detail: string;
}

/** What one server has been given so far in this run. */
export interface TargetState {
  monoUploaded: boolean;
  manifestBlobsIn: Set<string>;
  manifestsPut: boolean;
  targzV2Uploaded: boolean;
  /** how the tags/list fixture was made, once it exists */
  tagsNote?: string;
}

export interface Target {
  server: RunningServer;
  state: TargetState;
}

export interface RunContext {
  opts: BenchOptions;
  data: BenchData;
  manifests: ManifestSet;
  /** what the manifest PUT scenario pushes in each round (round 0 is `manifests`) */
  putSets: ManifestSet[];
  /** 0 for the first round of a repeatable scenario */
  round: number;
  /** manifests that only serve the tags/list scenario */
  tagManifest: ManifestSet;
  signal: AbortSignal;
  /** the timed windows of this run, in microseconds of the monotonic clock (for --cpu-prof) */
  windows: Array<[number, number]>;
  /** CPU the server (and its database process, if separate) has used so far, in ms */
  serverCpuMs: () => number | undefined;
  /** what the server spent over the timed windows (cpu-time.ts); cpuMs is NaN when unreadable */
  spent: CpuSpent;
}

function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Opens a timed window; the function returned closes it, recording its time and the server's CPU. */
function openWindow(ctx: RunContext): () => void {
  const start = nowUs();
  const cpu0 = ctx.serverCpuMs();
  return () => {
    const end = nowUs();
    const cpu1 = ctx.serverCpuMs();
    ctx.windows.push([start, end]);
    ctx.spent.wallMs += (end - start) / 1000;
    ctx.spent.cpuMs += cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : NaN;
  };
}

/** Runs the timed part of a scenario and records its window. */
async function timed<T>(ctx: RunContext, fn: () => Promise<T>): Promise<T> {
  const close = openWindow(ctx);
  try {
    return await fn();
  } finally {
    close();
  }
}

export type Comparison =
  | { kind: 'vs-distribution'; min: number; text: string }
  | { kind: 'vs-row'; row: string; min: number; text: string }
  | { kind: 'none'; text: string };

export interface Scenario {
  id: string;
  title: string;
  unit: string;
  higherIsBetter: boolean;
  servers: readonly ServerKind[];
  /** run once per --rounds (alternating which server goes first) and keep the best */
  repeatable: boolean;
  compare: Comparison;
  run(target: Target, ctx: RunContext): Promise<Outcome>;
}

const MIB = 1024 * 1024;
const REPO_LARGE = 'bench/large';
const REPO_MANIFESTS = 'bench/manifests';
const REPO_TAGS = 'bench/tags';
const REPO_VOLUME_OCI = 'bench/volume-oci';

/**
 * Where round `round` of an upload scenario pushes: a repository (or tag) of its own, so a
 * later round is a whole upload again on both servers (each receives, hashes, writes and
 * syncs every byte; only the final placing of bytes it already holds differs), not a mount.
 */
function perRound(name: string, round: number): string {
  return round === 0 ? name : `${name}-r${round}`;
}
const VOLUME = 'bench/volume';

export function newTargetState(): TargetState {
  return { monoUploaded: false, manifestBlobsIn: new Set(), manifestsPut: false, targzV2Uploaded: false };
}

function mibPerSec(bytes: number, ms: number): number {
  return bytes / MIB / (ms / 1000);
}

function client(target: Target, sockets: number): HttpClient {
  return new HttpClient(target.server.base, sockets);
}

async function withClient<T>(target: Target, sockets: number, fn: (c: HttpClient) => Promise<T>): Promise<T> {
  const c = client(target, sockets);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

async function ensureMonoBlob(target: Target, c: HttpClient, ctx: RunContext): Promise<void> {
  if (target.state.monoUploaded) return;
  await uploadMonolithic(c, REPO_LARGE, ctx.data.blobMono, ctx.signal);
  target.state.monoUploaded = true;
}

/** Uploads the blobs a manifest set references into `repo` (untimed), 16 at a time. */
async function ensureBlobs(target: Target, c: HttpClient, repo: string, set: ManifestSet, ctx: RunContext): Promise<void> {
  const missing = set.blobs.filter((b) => !target.state.manifestBlobsIn.has(`${repo}@${b.digest}`));
  await runPool(
    missing.length,
    16,
    async (i) => {
      const b = missing[i];
      await uploadSmall(c, repo, b.bytes, b.digest, ctx.signal);
      target.state.manifestBlobsIn.add(`${repo}@${b.digest}`);
    },
    ctx.signal,
  );
  // sanity: what the first manifests reference is really there
  for (const m of set.manifests.slice(0, 2)) for (const d of m.references) await headBlob(c, repo, d, ctx.signal);
}

function manifestTag(i: number, round = 0): string {
  return `m-${round > 0 ? `r${round}-` : ''}${String(i).padStart(6, '0')}`;
}

function listTag(i: number): string {
  return `t-${String(i).padStart(6, '0')}`;
}

async function ensureManifests(target: Target, c: HttpClient, ctx: RunContext): Promise<void> {
  if (target.state.manifestsPut) return;
  await ensureBlobs(target, c, REPO_MANIFESTS, ctx.manifests, ctx);
  const list = ctx.manifests.manifests;
  await runPool(list.length, 16, (i) => putManifest(c, REPO_MANIFESTS, manifestTag(i), list[i], ctx.signal), ctx.signal);
  target.state.manifestsPut = true;
}

interface CurlResult {
  status: number;
  body: string;
  wallMs: number;
}

/** `curl -T file url` (a PUT with Content-Length), the way the README tells users to. */
function curlPut(url: string, file: string, timeoutMs: number, signal: AbortSignal): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    const marker = '\n__volreg_bench__ ';
    const args = ['-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), '-o', '-', '-w', `${marker}%{http_code}`, '-T', file, url];
    const started = performance.now();
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      if (out.length < 1_000_000) out += c;
    });
    child.stderr.on('data', (c: string) => {
      if (err.length < 10_000) err += c;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = performance.now() - started;
      const at = out.lastIndexOf(marker);
      if (code !== 0 || at < 0) {
        reject(new Error(`curl exited with ${code}: ${err.trim() || out.slice(0, 200)}`));
        return;
      }
      resolve({ status: Number(out.slice(at + marker.length).trim()), body: out.slice(0, at), wallMs });
    });
  });
}

/** `curl -o /dev/null url`: a download the client side costs almost nothing for. */
function curlGet(url: string, timeoutMs: number, signal: AbortSignal): Promise<{ status: number; bytes: number; wallMs: number }> {
  return new Promise((resolve, reject) => {
    const args = ['-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url];
    const started = performance.now();
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c: string) => (out += c));
    child.stderr.on('data', (c: string) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = performance.now() - started;
      const [status, bytes] = out.trim().split(' ').map(Number);
      if (code !== 0) reject(new Error(`curl exited with ${code}: ${err.trim()}`));
      else resolve({ status, bytes, wallMs });
    });
  });
}

function oneLine(text: string, max = 200): string {
  return text.replace(/\s+/g, ' ').trim().slice(0, max);
}

async function curlV2Upload(target: Target, c: HttpClient, file: DataFile, ctx: RunContext): Promise<number> {
  const t0 = performance.now();
  const loc = await startUpload(c, perRound(REPO_VOLUME_OCI, ctx.round), ctx.signal);
  const url = new URL(loc, target.server.base);
  url.searchParams.set('digest', file.digest);
  const res = await timed(ctx, () => curlPut(url.href, file.path, ctx.opts.scenarioTimeoutMs, ctx.signal));
  const ms = performance.now() - t0;
  if (res.status !== 201) throw new Error(`PUT (curl) -> ${res.status} ${oneLine(res.body)}`);
  return ms;
}

/** How many hosts push at once in the upload-many scenario, each its own part of the chunked blob. */
export const MANY_HOSTS = 64;

const sliceCache = new Map<string, Array<{ start: number; end: number; digest: string }>>();

/** `file` cut into `parts` blobs, with their digests (hashed once per run, untimed). */
async function slicesOf(file: DataFile, parts: number): Promise<Array<{ start: number; end: number; digest: string }>> {
  const key = `${file.path}:${parts}`;
  const cached = sliceCache.get(key);
  if (cached) return cached;
  const size = Math.floor(file.size / parts);
  const slices: Array<{ start: number; end: number; digest: string }> = [];
  for (let i = 0; i < parts; i++) {
    const start = i * size;
    const end = start + size - 1;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file.path, { start, end, highWaterMark: MIB })) hash.update(chunk as Buffer);
    slices.push({ start, end, digest: `sha256:${hash.digest('hex')}` });
  }
  sliceCache.set(key, slices);
  return slices;
}

export function buildScenarios(opts: BenchOptions): Scenario[] {
  const size = formatBytes(opts.size);
  const both: readonly ServerKind[] = ['distribution', 'volreg'];
  return [
    {
      id: 'upload-mono',
      title: `blob upload, monolithic POST+PUT, ${size}`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 3, text: '>= 3x distribution' },
      async run(target, ctx) {
        return withClient(target, 2, async (c) => {
          const t0 = performance.now();
          await timed(ctx, () => uploadMonolithic(c, perRound(REPO_LARGE, ctx.round), ctx.data.blobMono, ctx.signal));
          const ms = performance.now() - t0;
          target.state.monoUploaded = true;
          return { value: mibPerSec(ctx.data.blobMono.size, ms), detail: `${(ms / 1000).toFixed(2)} s` };
        });
      },
    },
    {
      id: 'upload-chunked',
      title: `blob upload, chunked, ${formatBytes(opts.chunkSize)} PATCHes, ${size}`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 3, text: '>= 3x distribution' },
      async run(target, ctx) {
        return withClient(target, 2, async (c) => {
          const t0 = performance.now();
          const patches = await timed(ctx, () => uploadChunked(c, perRound(REPO_LARGE, ctx.round), ctx.data.blobChunked, ctx.opts.chunkSize, ctx.signal));
          const ms = performance.now() - t0;
          return { value: mibPerSec(ctx.data.blobChunked.size, ms), detail: `${(ms / 1000).toFixed(2)} s, ${patches} PATCHes` };
        });
      },
    },
    {
      id: 'download',
      title: `blob download, GET, ${size} (node client)`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 1, text: '>= 1x distribution' },
      async run(target, ctx) {
        return withClient(target, 2, async (c) => {
          await ensureMonoBlob(target, c, ctx);
          const t0 = performance.now();
          const bytes = await timed(ctx, () => downloadBlob(c, REPO_LARGE, ctx.data.blobMono.digest, ctx.signal));
          const ms = performance.now() - t0;
          if (bytes !== ctx.data.blobMono.size) throw new Error(`received ${bytes} bytes, expected ${ctx.data.blobMono.size}`);
          return { value: mibPerSec(bytes, ms), detail: `${(ms / 1000).toFixed(2)} s` };
        });
      },
    },
    {
      id: 'download-curl',
      title: `blob download, GET, ${size} (curl -o /dev/null)`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 1, text: '>= 1x distribution' },
      async run(target, ctx) {
        await withClient(target, 1, (c) => ensureMonoBlob(target, c, ctx));
        const url = new URL(`/v2/${REPO_LARGE}/blobs/${ctx.data.blobMono.digest}`, target.server.base).href;
        const res = await timed(ctx, () => curlGet(url, ctx.opts.scenarioTimeoutMs, ctx.signal));
        if (res.status !== 200 || res.bytes !== ctx.data.blobMono.size) throw new Error(`GET (curl) -> ${res.status}, ${res.bytes} bytes`);
        return { value: mibPerSec(res.bytes, res.wallMs), detail: `${(res.wallMs / 1000).toFixed(2)} s` };
      },
    },
    {
      id: 'manifest-put',
      title: `manifest PUT by tag, ${opts.manifests} at ${opts.manifestClients} clients`,
      unit: 'req/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 2, text: '>= 2x distribution (2-3x)' },
      async run(target, ctx) {
        return withClient(target, ctx.opts.manifestClients, async (c) => {
          const set = ctx.putSets[ctx.round] ?? ctx.manifests;
          await ensureBlobs(target, c, REPO_MANIFESTS, set, ctx);
          const list = set.manifests;
          const res = await timed(ctx, () =>
            runPool(list.length, ctx.opts.manifestClients, (i) => putManifest(c, REPO_MANIFESTS, manifestTag(i, ctx.round), list[i], ctx.signal), ctx.signal),
          );
          if (set === ctx.manifests) target.state.manifestsPut = true;
          return { value: list.length / (res.elapsedMs / 1000), detail: latencySummary(res.latenciesMs) };
        });
      },
    },
    {
      id: 'manifest-get',
      title: `manifest GET by tag, ${opts.manifests} at ${opts.manifestClients} clients`,
      unit: 'req/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 2, text: '>= 2x distribution (2-3x)' },
      async run(target, ctx) {
        return withClient(target, ctx.opts.manifestClients, async (c) => {
          await ensureManifests(target, c, ctx);
          const list = ctx.manifests.manifests;
          let mismatches = 0;
          const res = await timed(ctx, () => runPool(
            list.length,
            ctx.opts.manifestClients,
            async (i) => {
              const reply = await getManifest(c, REPO_MANIFESTS, manifestTag(i), ACCEPT_SCHEMA2, ctx.signal);
              // the exact bytes pushed, under the digest pushed
              if (!reply.body.equals(list[i].bytes) || reply.headers['docker-content-digest'] !== list[i].digest) mismatches++;
            },
            ctx.signal,
          ));
          if (mismatches > 0) throw new Error(`${mismatches} GETs returned other bytes or digest than were PUT`);
          return { value: list.length / (res.elapsedMs / 1000), detail: latencySummary(res.latenciesMs) };
        });
      },
    },
    {
      id: 'blob-head',
      title: `blob HEAD, ${opts.heads} at ${opts.headClients} clients`,
      unit: 'req/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 2, text: '>= 2x distribution (2-3x)' },
      async run(target, ctx) {
        return withClient(target, ctx.opts.headClients, async (c) => {
          await ensureBlobs(target, c, REPO_MANIFESTS, ctx.manifests, ctx);
          const blobs = ctx.manifests.blobs;
          const res = await timed(ctx, () => runPool(
            ctx.opts.heads,
            ctx.opts.headClients,
            async (i) => {
              const b = blobs[i % blobs.length];
              const reply = await headBlob(c, REPO_MANIFESTS, b.digest, ctx.signal);
              if (Number(reply.headers['content-length']) !== b.bytes.length) throw new Error(`HEAD ${b.digest}: Content-Length ${reply.headers['content-length']}, expected ${b.bytes.length}`);
            },
            ctx.signal,
          ));
          return { value: ctx.opts.heads / (res.elapsedMs / 1000), detail: `${latencySummary(res.latenciesMs)}, over ${blobs.length} digests` };
        });
      },
    },
    {
      id: 'tags-paged',
      title: `tags/list, all ${opts.tags} tags by ?n=${opts.tagPageSize} + Link`,
      unit: 'tags/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 2, text: '>= 2x distribution (2-3x)' },
      run: (target, ctx) => tagsListing(target, ctx, ctx.opts.tagPageSize),
    },
    {
      id: 'tags-whole',
      title: `tags/list, all ${opts.tags} tags without n (+ Link)`,
      unit: 'tags/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 2, text: '>= 2x distribution (2-3x)' },
      run: (target, ctx) => tagsListing(target, ctx, undefined),
    },
    {
      id: 'tags-page',
      title: `tags/list, one page ?n=${opts.tagPageSize}&last=, ${opts.manifests} at ${opts.manifestClients} clients`,
      unit: 'req/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 2, text: '>= 2x distribution (2-3x)' },
      run: (target, ctx) => tagPages(target, ctx),
    },
    {
      id: 'targz-v2',
      title: `tar.gz ${formatBytes(opts.size)} via /v2 POST + curl -T PUT`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: both,
      repeatable: true,
      compare: { kind: 'vs-distribution', min: 3, text: '>= 3x distribution' },
      async run(target, ctx) {
        return withClient(target, 2, async (c) => {
          const ms = await curlV2Upload(target, c, ctx.data.tarV2, ctx);
          target.state.targzV2Uploaded = true;
          return { value: mibPerSec(ctx.data.tarV2.size, ms), detail: `${(ms / 1000).toFixed(2)} s` };
        });
      },
    },
    {
      id: 'targz-api',
      title: `tar.gz ${formatBytes(opts.size)} via PUT /api/v1/volumes (curl -T)`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: ['volreg'],
      repeatable: true,
      compare: { kind: 'vs-row', row: 'targz-v2', min: 0.8, text: '>= 0.8x volreg /v2 row' },
      async run(target, ctx) {
        const url = new URL(`/api/v1/volumes/${VOLUME}/tags/${perRound('v1', ctx.round)}?digest=${ctx.data.tarApi.digest}`, target.server.base);
        const res = await timed(ctx, () => curlPut(url.href, ctx.data.tarApi.path, ctx.opts.scenarioTimeoutMs, ctx.signal));
        if (res.status !== 201) throw new Error(`PUT -> ${res.status} ${oneLine(res.body)}`);
        const notes: string[] = [];
        if (!res.body.includes(ctx.data.tarApi.digest.slice('sha256:'.length))) notes.push('reply does not name the layer digest!');
        try {
          const reply = JSON.parse(res.body) as { entries?: unknown; compression?: unknown };
          if (typeof reply.entries === 'number' && reply.entries !== ctx.data.tarEntries) notes.push(`reply counts ${reply.entries} entries, the tar has ${ctx.data.tarEntries}!`);
          if (typeof reply.compression === 'string') notes.push(`${reply.compression}, ${String(reply.entries)} entries`);
        } catch {
          notes.push('reply is not JSON!');
        }
        return { value: mibPerSec(ctx.data.tarApi.size, res.wallMs), detail: [`${(res.wallMs / 1000).toFixed(2)} s`, ...notes].join('; ') };
      },
    },
    {
      // A PUT to /api/v1 does what the /v2 upload does plus the inspection; here both run at
      // once with no coupling, so the time until both are done is the least it can take.
      id: 'targz-bound',
      title: `bound for /api/v1: tar.gz ${size} via /v2 while another process inspects one`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: ['volreg'],
      repeatable: true,
      compare: { kind: 'vs-row', row: 'targz-v2', min: 0.8, text: '>= 0.8x, or /api/v1 cannot reach it' },
      async run(target, ctx) {
        const inspector = await startInspectionProcess(ctx.data.tarApi.path, ctx.signal);
        try {
          // alone first (untimed by the row): what the inspection costs with the cores to itself
          const alone = await inspector.go();
          return await withClient(target, 2, async (c) => {
            const t0 = performance.now();
            const [uploadMs, inspection] = await Promise.all([curlV2Upload(target, c, ctx.data.tarBound, ctx), inspector.go()]);
            const ms = performance.now() - t0;
            for (const r of [alone, inspection]) {
              if (r.entries !== ctx.data.tarEntries) throw new Error(`the inspection counted ${r.entries} entries, the tar has ${ctx.data.tarEntries}`);
            }
            return {
              value: mibPerSec(ctx.data.tarBound.size, ms),
              detail: `both done in ${(ms / 1000).toFixed(2)} s: the /v2 upload ${(uploadMs / 1000).toFixed(2)} s, the inspection ${(inspection.ms / 1000).toFixed(2)} s (alone before: ${(alone.ms / 1000).toFixed(2)} s)`,
            };
          });
        } finally {
          inspector.kill();
        }
      },
    },
    {
      // What a central backup store sees at 02:00: many hosts pushing at once. Memory must not
      // grow with their number (the per-scenario RSS table), nor the disk's rate drop. Last, so
      // the memory the allocator keeps after it does not count in the other rows' peaks.
      id: 'upload-many',
      title: `blob upload, ${MANY_HOSTS} at once, ${formatBytes(Math.floor(opts.size / MANY_HOSTS))} each`,
      unit: 'MiB/s',
      higherIsBetter: true,
      servers: both,
      repeatable: false,
      compare: { kind: 'vs-distribution', min: 3, text: '>= 3x distribution' },
      async run(target, ctx) {
        const file = ctx.data.blobChunked;
        const slices = await slicesOf(file, MANY_HOSTS);
        return withClient(target, MANY_HOSTS, async (c) => {
          const t0 = performance.now();
          await timed(ctx, () => Promise.all(slices.map((s, i) => uploadSlice(c, `bench/host-${i}`, file, s, ctx.signal))));
          const ms = performance.now() - t0;
          const bytes = slices.reduce((n, s) => n + s.end - s.start + 1, 0);
          return { value: mibPerSec(bytes, ms), detail: `${(ms / 1000).toFixed(2)} s for ${MANY_HOSTS} blobs` };
        });
      },
    },
  ];
}

/** Pushes the tags the listing scenarios read; returns how they were made (for the report). */
async function ensureTags(target: Target, c: HttpClient, ctx: RunContext): Promise<string> {
  const note = target.state.tagsNote;
  if (note !== undefined) return note;
  await ensureBlobs(target, c, REPO_TAGS, ctx.tagManifest, ctx);
  const m = ctx.tagManifest.manifests[0];
  const total = ctx.opts.tags;
  let viaApi = total;
  if (target.server.kind === 'distribution' && total > 50) viaApi = 50;
  await runPool(viaApi, 16, (i) => putManifest(c, REPO_TAGS, listTag(i), m, ctx.signal), ctx.signal);
  let made = `${viaApi} tags pushed`;
  if (viaApi < total) {
    const rest = Array.from({ length: total - viaApi }, (_, i) => listTag(viaApi + i));
    if (await seedDistributionTags(target.server.dataDir, REPO_TAGS, listTag(0), rest)) {
      made = `${viaApi} tags pushed + ${rest.length} seeded on disk`;
    } else {
      await runPool(rest.length, 16, (i) => putManifest(c, REPO_TAGS, rest[i], m, ctx.signal), ctx.signal);
      made = `${total} tags pushed`;
    }
    // the seeded tags must resolve through the API like pushed ones
    await getManifest(c, REPO_TAGS, listTag(total - 1), ACCEPT_SCHEMA2, ctx.signal);
  }
  target.state.tagsNote = made;
  return made;
}

/**
 * Page requests as a paginating client makes them, each after a different tag. A server that
 * honours `n` and `last` must answer exactly the next names; one that ignores them (distribution
 * 2.8) must answer every tag, and the detail says so: its request rate is then that of whole lists.
 */
async function tagPages(target: Target, ctx: RunContext): Promise<Outcome> {
  const { tags: total, tagPageSize: n, manifests: count, manifestClients: clients } = ctx.opts;
  return withClient(target, clients, async (c) => {
    const made = await ensureTags(target, c, ctx);
    // a spread of starting points over the whole list, the same for every server
    const after = (i: number): number => (i * 7919) % total;
    let whole = 0;
    const res = await timed(ctx, () =>
      runPool(
        count,
        clients,
        async (i) => {
          const k = after(i);
          const got = await listTagsPage(c, REPO_TAGS, n, listTag(k), ctx.signal);
          if (got.length === total) {
            whole++;
            return;
          }
          const want = Array.from({ length: Math.min(n, total - k - 1) }, (_, j) => listTag(k + 1 + j));
          if (got.length !== want.length || got.some((t, j) => t !== want[j])) {
            throw new Error(`page after ${listTag(k)}: ${got.length} tags from ${got[0] ?? '-'}, expected ${want.length} from ${want[0] ?? '-'}`);
          }
        },
        ctx.signal,
      ),
    );
    if (whole !== 0 && whole !== count) throw new Error(`${whole} of ${count} pages were the whole list, the rest were pages`);
    const shape = whole === count ? `n and last ignored: every reply is all ${total} tags` : `each reply the ${n} names after last, checked`;
    return { value: count / (res.elapsedMs / 1000), detail: `${latencySummary(res.latenciesMs)}; ${shape}; ${made}` };
  });
}

async function tagsListing(target: Target, ctx: RunContext, pageSize: number | undefined): Promise<Outcome> {
  return withClient(target, 1, async (c) => {
    const made = await ensureTags(target, c, ctx);
    const expected = Array.from({ length: ctx.opts.tags }, (_, i) => listTag(i));
    let walks = 0;
    let pages = 0;
    let sorted = true;
    const t0 = performance.now();
    const close = openWindow(ctx);
    // at least 3 full listings, and more until 3 s have passed (at most 50)
    while (walks < 3 || (performance.now() - t0 < 3000 && walks < 50)) {
      const res = await listAllTags(c, REPO_TAGS, pageSize, ctx.signal);
      walks++;
      pages = res.pages;
      if (walks === 1) {
        const got = [...res.tags];
        sorted = got.every((t, i) => i === 0 || got[i - 1] < t);
        got.sort();
        if (got.length !== expected.length || got.some((t, i) => t !== expected[i])) {
          throw new Error(`listing returned ${got.length} tags, expected exactly the ${expected.length} pushed`);
        }
      }
    }
    const ms = performance.now() - t0;
    close();
    const perWalk = ms / walks;
    return {
      value: (ctx.opts.tags * walks) / (ms / 1000),
      detail: `${perWalk.toFixed(1)} ms per full listing of ${pages} page${pages === 1 ? '' : 's'}${sorted ? '' : ', NOT lexically sorted'}${pageSize !== undefined && pages === 1 && ctx.opts.tags > pageSize ? ', n ignored' : ''}; ${made}`,
    };
  });
}

export async function prepareManifestSets(
  opts: BenchOptions,
): Promise<{ manifests: ManifestSet; putSets: ManifestSet[]; tagManifest: ManifestSet; problems: string[] }> {
  const putSets: ManifestSet[] = [];
  for (let r = 0; r < opts.rounds; r++) putSets.push(await buildManifestSet(opts.manifests, r * opts.manifests));
  const manifests = putSets[0];
  const tagManifest = await buildManifestSet(1);
  const problems = [...putSets.flatMap((set) => checkManifestSet(set)), ...checkManifestSet(tagManifest)];
  // rounds must not re-push a manifest an earlier round stored
  const digests = new Set<string>();
  for (const set of putSets) for (const m of set.manifests) digests.add(m.digest);
  if (digests.size !== opts.manifests * opts.rounds) problems.push('manifest digests repeat across rounds');
  return { manifests, putSets, tagManifest, problems };
}
