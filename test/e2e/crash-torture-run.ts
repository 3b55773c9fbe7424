import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MongoClient } from 'mongodb';
import { configBlob, dockerManifest, ociIndex, ociManifest, blobOf, type Blob, type Built } from '../helpers/manifest-fixtures.ts';
import { ACCEPT_ALL } from '../helpers/oci-client.ts';
import { seededBytes } from '../helpers/seeded-bytes.ts';
import { REPO_ROOT, spawnServer, VOLREG_BIN, type SpawnedServer } from '../helpers/server.ts';

/**
 * A seeded crash torture of the whole service: concurrent clients push, move, delete and pull
 * images, indexes, snapshots and blobs (some uploads left unfinished) while garbage collection
 * runs with no grace; at a random moment `volreg serve` (and a running `volreg gc`), or in the
 * second mode the database process alone, is killed with SIGKILL. After every restart the run
 * checks, through the HTTP surfaces and the CLI, everything the clients saw acknowledged against
 * a model: a reply received is acknowledged, a request the kill cut is either outcome, never half.
 *
 * Each client owns its repositories, tags and volumes, so acknowledged writes of one client are
 * ordered; content (blobs, archives) is shared by all of them, so uploads reuse the same blobs
 * in many repositories at once and across restarts.
 */

const run = promisify(execFile);

export type TortureMode = 'serve' | 'database';

export interface TortureOptions {
  seed: number;
  cycles: number;
  /** a fresh empty directory the run owns */
  dir: string;
  mode: TortureMode;
  clients?: number;
  /** the standalone database's port (mode "database"); it must come back on the same one */
  dbPort?: number;
  log?: (line: string) => void;
}

export interface TortureReport {
  violations: string[];
  /** counts of what was done, by kind (acknowledged replies, kills, checks) */
  counts: Record<string, number>;
}

// ----------------------------------------------------------------------------------------------
// randomness

export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    // mulberry32
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

// ----------------------------------------------------------------------------------------------
// http

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

function call(base: string, method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer; timeoutMs?: number } = {}): Promise<Reply> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined) headers['Content-Length'] = String(opts.body.length);
    const req = httpRequest(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error(`${method} ${path}: no reply within ${opts.timeoutMs ?? 60_000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

// ----------------------------------------------------------------------------------------------
// the model

/** what a tag may hold: digests, and null for "absent" */
type Allowed = Set<string | null>;

interface KnownManifest {
  built: Built;
  /** blobs it references directly, children (of an index) */
  blobs: Blob[];
  children: string[];
}

interface Session {
  repo: string;
  location: string;
  blob: Blob;
  /** bytes acknowledged (a 202 with that Range received) */
  acked: number;
  /** bytes sent in total, acknowledged or not */
  sent: number;
}

interface ClientModel {
  id: number;
  repos: string[];
  /** `${repo}:${tag}` -> allowed digests */
  tags: Map<string, Allowed>;
  volume: string;
  /** snapshot tag -> allowed layer digests (null: absent) */
  snapshots: Map<string, Allowed>;
  /** snapshot tag -> manifest digest of its last acknowledged push (for If-Match) */
  snapshotManifests: Map<string, string>;
  sessions: Session[];
}

// ----------------------------------------------------------------------------------------------

const TAGS = ['t0', 't1', 't2', 't3', 't4'];
const SNAPSHOT_TAGS = ['s0', 's1', 's2'];

export async function runTorture(opts: TortureOptions): Promise<TortureReport> {
  const rng = new Rng(opts.seed);
  const log = opts.log ?? (() => {});
  const violations: string[] = [];
  const counts: Record<string, number> = {};
  const count = (k: string, n = 1): void => {
    counts[k] = (counts[k] ?? 0) + n;
  };
  let phase = 'start';
  const violation = (what: string): void => {
    violations.push(`[cycle ${phase}] ${what}`);
    log(`VIOLATION [cycle ${phase}] ${what}`);
  };

  const dataDir = join(opts.dir, 'data');
  const dbPath = join(opts.dir, 'db');
  await mkdir(dataDir, { recursive: true });
  await mkdir(dbPath, { recursive: true });

  // shared content: blobs of a few sizes (below, around and above a chunk) and archives made by tar
  const pool: Blob[] = [];
  for (let i = 0; i < 24; i++) pool.push(blobOf(seededBytes(opts.seed * 1000 + i + 1, [10, 700, 5000, 70_000, 300_000, 3_000_000][i % 6]!)));
  const archives = await makeArchives(opts.dir, opts.seed, 5);
  const known = new Map<string, KnownManifest>();
  /** `repo:tag` or `volume:tag` -> the last requests on it and their outcome, for a violation's message */
  const history = new Map<string, string[]>();
  const note = (key: string, what: string): void => {
    const h = history.get(key) ?? [];
    h.push(`c${phase} ${what}`);
    history.set(key, h.slice(-8));
  };
  const told = (key: string): string => ` (history: ${(history.get(key) ?? []).join('; ')})`;

  const clients: ClientModel[] = [];
  for (let i = 0; i < (opts.clients ?? 3); i++) {
    clients.push({
      id: i,
      repos: [`torture/c${i}-img`, `torture/c${i}-idx`],
      tags: new Map(),
      volume: `torture-vol/c${i}`,
      snapshots: new Map(),
      snapshotManifests: new Map(),
      sessions: [],
    });
  }

  // ---------------------------------------------------------------- processes
  const dbUrl = `mongodb://127.0.0.1:${opts.dbPort ?? 0}/?directConnection=true`;
  const dbEnv: Record<string, string> = opts.mode === 'database' ? { VOLREG_MONGODB_URL: dbUrl, VOLREG_MONGODB_DATABASE: 'torture' } : {};
  const serveEnv: Record<string, string> = {
    ...dbEnv,
    VOLREG_UPLOAD_PURGE_INTERVAL: '0',
    // the embedded engine holds the data directory: collect garbage inside serve instead
    ...(opts.mode === 'serve' ? { VOLREG_GC_INTERVAL: '1', VOLREG_GC_GRACE: '0', VOLREG_GC_DELETE_UNTAGGED: 'true' } : {}),
  };
  let db: ChildProcess | undefined;
  /** what the database processes (the one killed while starting included) wrote, each start marked; its end goes into a report */
  let dbOutput = '';
  const keepDbOutput = (child: ChildProcess, what: string): void => {
    const add = (s: string): void => void (dbOutput = (dbOutput + s).slice(-20_000));
    add(`\n--- ${what} (pid ${child.pid}) ---\n`);
    child.stdout!.setEncoding('utf8').on('data', add);
    child.stderr!.setEncoding('utf8').on('data', add);
    child.once('exit', (code, signal) => add(`--- pid ${child.pid} exited (${code ?? signal}) ---\n`));
  };
  const startDb = async (): Promise<void> => {
    const child = spawn(process.execPath, [VOLREG_BIN, 'db', '--dbpath', dbPath, '--port', String(opts.dbPort)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    keepDbOutput(child, 'volreg db');
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`volreg db did not listen: ${out}`)), 60_000);
      child.stdout!.on('data', (s: string) => {
        out += s;
        if (/volreg db listening on/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr!.on('data', (s: string) => (out += s));
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`volreg db exited (${code}) before listening: ${out.slice(-3000)}`));
      });
    });
    db = child;
  };
  /** `volreg db` started and killed after `ms`, listening or not yet: a crash while it recovers */
  const crashDbWhileStarting = async (ms: number): Promise<void> => {
    const child = spawn(process.execPath, [VOLREG_BIN, 'db', '--dbpath', dbPath, '--port', String(opts.dbPort)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    keepDbOutput(child, `volreg db, to be killed after ${ms} ms`);
    const exited = new Promise((r) => child.once('exit', r));
    await sleep(ms);
    child.kill('SIGKILL');
    await exited;
    count('database kills during start-up');
  };
  const killDb = async (): Promise<void> => {
    const child = db;
    db = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };

  let server: SpawnedServer | undefined;
  const startServer = async (): Promise<string | undefined> => {
    try {
      server = await spawnServer({ dataDir, env: serveEnv, timeoutMs: 120_000 });
      count('serve starts');
      return server.url;
    } catch (err) {
      violation(`the service does not start: ${(err as Error).message.slice(0, 3000)}`);
      return undefined;
    }
  };
  const killServer = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (!s) return;
    s.kill('SIGKILL');
    await s.waitExit();
    // a client the service had to reopen (README "Using a real MongoDB"): allowed, and told
    const reopened = s.stdout().split('\n').filter((l) => l.includes('while a new client does: reopening it'));
    if (reopened.length > 0) {
      count('MongoDB client reopenings', reopened.length);
      log(`the service reopened its MongoDB client: ${reopened.join('\n')}`);
    }
  };

  let gcChild: ChildProcess | undefined;
  const gcLoop = async (stop: () => boolean): Promise<void> => {
    // `volreg gc` beside the server, over and over (mode "database": the database is shared)
    while (!stop()) {
      const env: Record<string, string> = {};
      for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) env[k] = v;
      Object.assign(env, dbEnv, { VOLREG_DATA_DIR: dataDir });
      const child = spawn(process.execPath, [VOLREG_BIN, 'gc', '--grace', '0s', '--delete-untagged', '--json'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      gcChild = child;
      let err = '';
      child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
      child.stdout!.resume();
      const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
      gcChild = undefined;
      if (signal === 'SIGKILL') count('gc killed');
      else if (code === 0) count('gc runs');
      else if (!stop()) {
        // exit 1 while the database is down is expected; anything else is reported
        if (code === 4) violation(`volreg gc found blobs missing that manifests use: ${err.slice(-2000)}`);
        else count(`gc exit ${code}`);
      }
      await sleep(200 + rng.int(800));
    }
  };
  /** `volreg gc` on the stopped server's data directory (the embedded engine), killed after `killAfterMs` */
  const offlineGc = async (killAfterMs: number): Promise<void> => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) env[k] = v;
    Object.assign(env, { VOLREG_DATA_DIR: dataDir });
    const child = spawn(process.execPath, [VOLREG_BIN, 'gc', '--grace', '0s', '--delete-untagged', '--json'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdout!.resume();
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    const { code, signal } = await exit;
    clearTimeout(timer);
    if (signal === 'SIGKILL') count('offline gc killed');
    else if (code === 0) count('offline gc runs');
    else violation(`volreg gc on the stopped data directory exits ${code}: ${err.slice(-2000)}`);
  };
  const killGc = async (): Promise<void> => {
    const child = gcChild;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };

  // ---------------------------------------------------------------- one request, judged
  /** the statuses a request may answer while the database is away */
  let databaseAway = false;
  /** before /readyz first says ready, a 503 is allowed too */
  let starting = false;
  const req = async (base: string, method: string, path: string, o: { headers?: Record<string, string>; body?: Buffer } = {}): Promise<Reply> => {
    const r = await call(base, method, path, o);
    count(`${method} ${r.status}`);
    if (r.status >= 500) {
      const allowed =
        r.status === 503 &&
        // away database: 503, never 500
        (databaseAway ||
          // a snapshot push whose blobs a collection with no grace took meanwhile (README "Garbage collection")
          (method === 'PUT' && path.startsWith('/api/v1/')) ||
          starting);
      if (!allowed) violation(`${method} ${path} answered ${r.status}: ${r.body.toString('utf8').slice(0, 500)}`);
    }
    return r;
  };

  // ---------------------------------------------------------------- workload
  const uploadMonolithic = async (base: string, repo: string, blob: Blob): Promise<boolean> => {
    const r = await req(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=${blob.digest}`, { headers: { 'Content-Type': 'application/octet-stream' }, body: blob.bytes });
    return r.status === 201;
  };

  const uploadChunked = async (base: string, c: ClientModel, repo: string, blob: Blob, leaveUnfinished: boolean): Promise<boolean> => {
    const post = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
    if (post.status !== 202) return false;
    const session: Session = { repo, location: String(post.headers.location), blob, acked: 0, sent: 0 };
    c.sessions.push(session);
    const parts = Math.max(1, Math.min(3, Math.ceil(blob.size / 2000)));
    const step = Math.ceil(blob.size / parts);
    for (let at = 0; at < blob.size; at += step) {
      const end = Math.min(blob.size, at + step);
      if (leaveUnfinished && end === blob.size) return false;
      session.sent = end;
      const r = await req(base, 'PATCH', session.location, {
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${at}-${end - 1}` },
        body: blob.bytes.subarray(at, end),
      });
      if (r.status !== 202) {
        c.sessions.splice(c.sessions.indexOf(session), 1);
        return false;
      }
      session.acked = end;
      session.location = String(r.headers.location ?? session.location);
    }
    const put = await req(base, 'PUT', withQuery(session.location, `digest=${blob.digest}`));
    c.sessions.splice(c.sessions.indexOf(session), 1);
    return put.status === 201;
  };

  const uploadBlob = async (base: string, c: ClientModel, repo: string, blob: Blob): Promise<boolean> =>
    rng.chance(0.5) ? uploadMonolithic(base, repo, blob) : uploadChunked(base, c, repo, blob, false);

  /** a manifest PUT, with the model updated by what came back (or did not) */
  const putManifest = async (base: string, c: ClientModel, repo: string, ref: string, m: Built, tags: string[]): Promise<number> => {
    const keys = tags.map((t) => `${repo}:${t}`);
    for (const k of keys) if (!c.tags.has(k)) c.tags.set(k, new Set([null]));
    const query = tags.filter((t) => t !== ref).map((t) => `tag=${t}`).join('&');
    let r: Reply;
    try {
      r = await req(base, 'PUT', `/v2/${repo}/manifests/${ref}${query ? `?${query}` : ''}`, { headers: { 'Content-Type': m.mediaType }, body: m.bytes });
    } catch (err) {
      for (const k of keys) {
        c.tags.get(k)!.add(m.digest);
        note(k, `PUT ${m.digest.slice(7, 19)} cut`);
      }
      throw err;
    }
    for (const k of keys) note(k, `PUT ${m.digest.slice(7, 19)} ${r.status}`);
    if (r.status >= 500) for (const k of keys) c.tags.get(k)!.add(m.digest);
    if (r.status === 201) {
      count('manifest pushes acknowledged');
      for (const k of keys) c.tags.set(k, new Set([m.digest]));
      if (r.headers['docker-content-digest'] !== m.digest) violation(`PUT ${repo}/${ref}: Docker-Content-Digest ${String(r.headers['docker-content-digest'])}, not ${m.digest}`);
    }
    return r.status;
  };

  const makeImage = (): KnownManifest => {
    const layers = Array.from({ length: 1 + rng.int(3) }, () => rng.pick(pool));
    const config = configBlob({ nonce: String(rng.int(6)) }); // few distinct configs: manifests repeat
    const built = rng.chance(0.5) ? ociManifest({ config, layers }) : dockerManifest({ config, layers });
    return { built, blobs: [config, ...layers], children: [] };
  };

  const pushImage = async (base: string, c: ClientModel, repo: string): Promise<KnownManifest | undefined> => {
    const img = makeImage();
    for (const b of img.blobs) if (!(await uploadBlob(base, c, repo, b))) return undefined;
    known.set(img.built.digest, img);
    const byDigest = rng.chance(0.3);
    const tags = byDigest ? (rng.chance(0.5) ? [] : [rng.pick(TAGS)]) : [rng.pick(TAGS)];
    const status = await putManifest(base, c, repo, byDigest ? img.built.digest : tags[0]!, img.built, tags);
    return status === 201 ? img : undefined;
  };

  const pushIndex = async (base: string, c: ClientModel, repo: string): Promise<void> => {
    const children: KnownManifest[] = [];
    for (let i = 0; i < 2; i++) {
      const img = makeImage();
      for (const b of img.blobs) if (!(await uploadBlob(base, c, repo, b))) return;
      known.set(img.built.digest, img);
      if ((await putManifest(base, c, repo, img.built.digest, img.built, [])) !== 201) return;
      children.push(img);
    }
    const index = ociIndex(children.map((ch, i) => ({ manifest: ch.built, platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' } })));
    known.set(index.digest, { built: index, blobs: [], children: children.map((ch) => ch.built.digest) });
    const tag = rng.pick(TAGS);
    await putManifest(base, c, repo, tag, index, [tag]);
  };

  const moveTag = async (base: string, c: ClientModel): Promise<void> => {
    // an old manifest (acknowledged before, maybe before a crash) pushed to another tag
    const candidates = [...c.tags.entries()].flatMap(([k, a]) => [...a].filter((d): d is string => d !== null && known.has(d)).map((d) => ({ repo: k.slice(0, k.lastIndexOf(':')), d })));
    if (candidates.length === 0) return;
    const { repo, d } = rng.pick(candidates);
    const m = known.get(d)!;
    // its blobs again, as a client would after a HEAD found them missing
    for (const b of m.blobs) {
      const head = await req(base, 'HEAD', `/v2/${repo}/blobs/${b.digest}`);
      if (head.status !== 200 && !(await uploadMonolithic(base, repo, b))) return;
    }
    const tag = rng.pick(TAGS);
    await putManifest(base, c, repo, tag, m.built, [tag]);
  };

  const deleteTag = async (base: string, c: ClientModel): Promise<void> => {
    const repo = rng.pick(c.repos);
    const tag = rng.pick(TAGS);
    const k = `${repo}:${tag}`;
    const allowed = c.tags.get(k) ?? new Set([null]);
    c.tags.set(k, allowed);
    let r: Reply;
    try {
      r = await req(base, 'DELETE', `/v2/${repo}/manifests/${tag}`);
    } catch (err) {
      allowed.add(null);
      note(k, 'DELETE cut');
      throw err;
    }
    note(k, `DELETE ${r.status}`);
    if (r.status >= 500) allowed.add(null);
    if (r.status === 202) {
      count('tag deletes acknowledged');
      c.tags.set(k, new Set([null]));
    }
  };

  const deleteManifest = async (base: string, c: ClientModel): Promise<void> => {
    const repo = rng.pick(c.repos);
    const ds = [...c.tags.entries()].filter(([k]) => k.startsWith(`${repo}:`)).flatMap(([, a]) => [...a].filter((d): d is string => d !== null));
    if (ds.length === 0) return;
    const d = rng.pick(ds);
    const affected = [...c.tags.entries()].filter(([k, a]) => k.startsWith(`${repo}:`) && a.has(d));
    let r: Reply;
    try {
      r = await req(base, 'DELETE', `/v2/${repo}/manifests/${d}`);
    } catch (err) {
      for (const [k, a] of affected) {
        a.add(null);
        note(k, `DELETE by digest ${d.slice(7, 19)} cut`);
      }
      throw err;
    }
    for (const [k] of affected) note(k, `DELETE by digest ${d.slice(7, 19)} ${r.status}`);
    if (r.status >= 500) for (const [, a] of affected) a.add(null);
    if (r.status === 202) {
      count('manifest deletes acknowledged');
      for (const [, a] of affected) {
        a.delete(d);
        a.add(null);
      }
    }
  };

  const pushSnapshot = async (base: string, c: ClientModel): Promise<void> => {
    const tag = rng.pick(SNAPSHOT_TAGS);
    const archive = rng.pick(archives);
    const allowed = c.snapshots.get(tag) ?? new Set([null]);
    c.snapshots.set(tag, allowed);
    const headers: Record<string, string> = { 'Content-Type': 'application/gzip' };
    const held = [...allowed];
    if (held.length === 1 && held[0] !== null && c.snapshotManifests.has(tag)) headers['If-Match'] = `"${c.snapshotManifests.get(tag)}"`;
    let r: Reply;
    try {
      r = await req(base, 'PUT', `/api/v1/volumes/${c.volume}/tags/${tag}`, { headers, body: archive.bytes });
    } catch (err) {
      allowed.add(archive.digest);
      c.snapshotManifests.delete(tag);
      note(`${c.volume}:${tag}`, `PUT ${archive.digest.slice(7, 19)}${headers['If-Match'] ? ' If-Match' : ''} cut`);
      throw err;
    }
    note(`${c.volume}:${tag}`, `PUT ${archive.digest.slice(7, 19)}${headers['If-Match'] ? ' If-Match' : ''} ${r.status} ${r.status >= 400 ? r.body.toString('utf8').slice(0, 120) : ''}`);
    if (r.status >= 500) {
      allowed.add(archive.digest);
      c.snapshotManifests.delete(tag);
    }
    if (r.status === 201) {
      count('snapshot pushes acknowledged');
      const j = JSON.parse(r.body.toString('utf8')) as { manifestDigest: string; layer: { digest: string } };
      if (j.layer.digest !== archive.digest) violation(`snapshot ${c.volume}:${tag} stored layer ${j.layer.digest}, the archive is ${archive.digest}`);
      c.snapshots.set(tag, new Set([archive.digest]));
      c.snapshotManifests.set(tag, j.manifestDigest);
    }
  };

  const deleteSnapshot = async (base: string, c: ClientModel): Promise<void> => {
    const tag = rng.pick(SNAPSHOT_TAGS);
    const allowed = c.snapshots.get(tag) ?? new Set([null]);
    c.snapshots.set(tag, allowed);
    let r: Reply;
    try {
      r = await req(base, 'DELETE', `/api/v1/volumes/${c.volume}/tags/${tag}`);
    } catch (err) {
      allowed.add(null);
      note(`${c.volume}:${tag}`, 'DELETE cut');
      throw err;
    }
    note(`${c.volume}:${tag}`, `DELETE ${r.status}`);
    if (r.status >= 500) allowed.add(null);
    if (r.status >= 200 && r.status < 300) {
      count('snapshot deletes acknowledged');
      c.snapshots.set(tag, new Set([null]));
      c.snapshotManifests.delete(tag);
    }
  };

  const pull = async (base: string, c: ClientModel): Promise<void> => {
    // a pull of an own tag: nothing else writes it, so it must be what the model allows
    const repo = rng.pick(c.repos);
    const tag = rng.pick(TAGS);
    await checkTag(base, c, `${repo}:${tag}`, 'pull');
  };

  const op = async (base: string, c: ClientModel): Promise<void> => {
    const x = rng.int(100);
    if (x < 22) await pushImage(base, c, c.repos[0]!);
    else if (x < 32) await pushIndex(base, c, c.repos[1]!);
    else if (x < 40) await moveTag(base, c);
    else if (x < 46) await deleteTag(base, c);
    else if (x < 51) await deleteManifest(base, c);
    else if (x < 64) await pushSnapshot(base, c);
    else if (x < 68) await deleteSnapshot(base, c);
    else if (x < 76) await uploadChunked(base, c, rng.pick(c.repos), rng.pick(pool), true);
    // (no blob DELETEs: one of a blob a manifest uses unlinks it from the repository on purpose)
    else if (x < 82) await uploadMonolithic(base, rng.pick(c.repos), rng.pick(pool));
    else await pull(base, c);
  };

  // ---------------------------------------------------------------- checks
  const checkBlob = async (base: string, repo: string, digest: string, why: string): Promise<void> => {
    const r = await req(base, 'GET', `/v2/${repo}/blobs/${digest}`);
    count('blobs checked');
    // a 5xx is judged by req (a 503 while the database is away is allowed)
    if (r.status >= 500) return;
    if (r.status !== 200) violation(`blob ${repo}@${digest} (${why}) answers ${r.status}: ${r.body.toString('utf8').slice(0, 300)}`);
    else if (sha256(r.body) !== digest) violation(`blob ${repo}@${digest} (${why}) downloads ${r.body.length} bytes hashing to ${sha256(r.body)}`);
  };

  /** a manifest that resolves: its bytes, its blobs and children whole */
  const checkManifest = async (base: string, repo: string, digest: string, body: Buffer, why: string): Promise<void> => {
    if (sha256(body) !== digest) {
      violation(`manifest ${repo}@${digest} (${why}) has bytes hashing to ${sha256(body)}`);
      return;
    }
    const k = known.get(digest);
    if (k && !k.built.bytes.equals(body)) violation(`manifest ${repo}@${digest} (${why}) is not byte-identical`);
    const doc = JSON.parse(body.toString('utf8')) as { config?: { digest: string }; layers?: Array<{ digest: string }>; manifests?: Array<{ digest: string }> };
    for (const d of [doc.config?.digest, ...(doc.layers ?? []).map((l) => l.digest)]) if (d) await checkBlob(base, repo, d, `used by ${digest}, ${why}`);
    for (const child of doc.manifests ?? []) {
      const r = await req(base, 'GET', `/v2/${repo}/manifests/${child.digest}`, { headers: { Accept: ACCEPT_ALL } });
      if (r.status >= 500) continue;
      if (r.status !== 200) violation(`manifest ${repo}@${child.digest}, listed by ${digest} (${why}), answers ${r.status}`);
      else await checkManifest(base, repo, child.digest, r.body, `listed by ${digest}, ${why}`);
    }
  };

  const checkTag = async (base: string, c: ClientModel, key: string, why: string): Promise<void> => {
    const [repo, tag] = [key.slice(0, key.lastIndexOf(':')), key.slice(key.lastIndexOf(':') + 1)];
    const allowed = c.tags.get(key) ?? new Set([null]);
    const r = await req(base, 'GET', `/v2/${repo}/manifests/${tag}`, { headers: { Accept: ACCEPT_ALL } });
    count('tags checked');
    if (r.status === 404) {
      if (!allowed.has(null)) violation(`${key} (${why}) is gone; acknowledged: ${[...allowed].join(' | ')}${told(key)}`);
      c.tags.set(key, new Set([null]));
      return;
    }
    if (r.status !== 200) {
      if (r.status < 500) violation(`${key} (${why}) answers ${r.status}`);
      return;
    }
    const d = String(r.headers['docker-content-digest']);
    if (!allowed.has(d)) violation(`${key} (${why}) resolves to ${d}; acknowledged: ${[...allowed].map((x) => x ?? 'absent').join(' | ')}${told(key)}`);
    c.tags.set(key, new Set([d])); // the unknown outcome is known now
    await checkManifest(base, repo, d, r.body, `${key}, ${why}`);
  };

  const checkAll = async (base: string): Promise<void> => {
    for (const c of clients) {
      for (const key of [...c.tags.keys()]) await checkTag(base, c, key, 'after restart');
      // every tag listed resolves
      for (const repo of c.repos) {
        const r = await req(base, 'GET', `/v2/${repo}/tags/list`);
        if (r.status === 404) continue;
        if (r.status !== 200) {
          violation(`tags/list of ${repo} answers ${r.status}`);
          continue;
        }
        for (const tag of (JSON.parse(r.body.toString('utf8')) as { tags: string[] | null }).tags ?? []) {
          if (!c.tags.has(`${repo}:${tag}`)) violation(`tags/list of ${repo} lists ${tag}, never pushed`);
          const g = await req(base, 'HEAD', `/v2/${repo}/manifests/${tag}`, { headers: { Accept: ACCEPT_ALL } });
          if (g.status !== 200) violation(`tags/list of ${repo} lists ${tag}, which answers ${g.status}`);
        }
      }
      await checkSnapshots(base, c);
      await checkSessions(base, c);
    }
    const cat = await req(base, 'GET', '/v2/_catalog');
    if (cat.status !== 200) violation(`_catalog answers ${cat.status}`);
    else {
      for (const repo of (JSON.parse(cat.body.toString('utf8')) as { repositories: string[] }).repositories) {
        const r = await req(base, 'GET', `/v2/${repo}/tags/list`);
        if (r.status !== 200) violation(`_catalog lists ${repo}, whose tags/list answers ${r.status}`);
      }
    }
    count('checks');
  };

  const checkSnapshots = async (base: string, c: ClientModel): Promise<void> => {
    const list = await req(base, 'GET', `/api/v1/volumes/${c.volume}/tags`);
    const listed = new Map<string, string>();
    if (list.status === 200) {
      for (const s of (JSON.parse(list.body.toString('utf8')) as { snapshots: Array<{ tag: string; layer: { digest: string } }> }).snapshots) listed.set(s.tag, s.layer.digest);
    } else if (list.status !== 404) violation(`snapshot listing of ${c.volume} answers ${list.status}`);
    for (const tag of new Set([...c.snapshots.keys(), ...listed.keys()])) {
      const allowed = c.snapshots.get(tag) ?? new Set([null]);
      const base1 = `/api/v1/volumes/${c.volume}/tags/${tag}`;
      const content = await req(base, 'GET', `${base1}/content`);
      count('snapshots checked');
      if (content.status === 404) {
        if (!allowed.has(null)) violation(`snapshot ${c.volume}:${tag} is gone; acknowledged: ${[...allowed].join(' | ')}${told(`${c.volume}:${tag}`)}`);
        c.snapshots.set(tag, new Set([null]));
        c.snapshotManifests.delete(tag);
        if (listed.has(tag)) violation(`snapshot ${c.volume}:${tag} is listed but its content answers 404`);
        continue;
      }
      if (content.status !== 200) {
        violation(`snapshot ${c.volume}:${tag} content answers ${content.status}`);
        continue;
      }
      const d = sha256(content.body);
      if (!allowed.has(d)) violation(`snapshot ${c.volume}:${tag} downloads ${d}; acknowledged: ${[...allowed].map((x) => x ?? 'absent').join(' | ')}${told(`${c.volume}:${tag}`)}`);
      if (allowed.size > 1 || !allowed.has(d)) {
        c.snapshots.set(tag, new Set([d]));
        c.snapshotManifests.delete(tag);
      }
      if (!listed.has(tag)) violation(`snapshot ${c.volume}:${tag} downloads but is not listed`);
      else if (listed.get(tag) !== d) violation(`snapshot ${c.volume}:${tag} is listed with layer ${listed.get(tag)}, downloads ${d}`);
      const sum = await req(base, 'GET', `${base1}/content.sha256`);
      if (sum.status !== 200 || `sha256:${sum.body.toString('utf8').split(' ')[0]}` !== d) violation(`snapshot ${c.volume}:${tag} content.sha256 answers ${sum.status} ${sum.body.toString('utf8').slice(0, 200)}, content is ${d}`);
    }
  };

  const checkSessions = async (base: string, c: ClientModel): Promise<void> => {
    const sessions = c.sessions.splice(0);
    for (const s of sessions) {
      const r = await req(base, 'GET', s.location);
      count('sessions checked');
      if (r.status === 404) continue; // gone (purged by a collection, or never recorded)
      if (r.status !== 204) {
        violation(`upload session ${s.location} answers ${r.status}`);
        continue;
      }
      const m = /^0-(\d+)$/.exec(String(r.headers.range ?? ''));
      // an empty session reports "0-0", as distribution does
      const offset = m ? (m[1] === '0' && s.acked === 0 ? 0 : Number(m[1]) + 1) : 0;
      if (offset < s.acked || offset > s.sent) {
        violation(`upload session ${s.location} reports ${offset} bytes; ${s.acked} acknowledged, ${s.sent} sent`);
        continue;
      }
      if (!rng.chance(0.5)) continue; // left for later, or for the purge
      const loc = String(r.headers.location ?? s.location);
      const put = await req(base, 'PUT', withQuery(loc, `digest=${s.blob.digest}`), {
        headers: { 'Content-Type': 'application/octet-stream', ...(offset < s.blob.size ? { 'Content-Range': `${offset}-${s.blob.size - 1}` } : {}) },
        body: s.blob.bytes.subarray(offset),
      });
      count('sessions resumed');
      if (put.status === 201) await checkBlob(base, s.repo, s.blob.digest, 'a resumed upload');
      else if (put.status !== 404) violation(`upload session ${s.location} resumed at ${offset}: PUT answers ${put.status} ${put.body.toString('utf8').slice(0, 300)}`);
    }
  };

  /** whether the database answers a client of its own: tells a database that does not serve from a service that does not find it again */
  const databaseAnswers = async (): Promise<string> => {
    const client = new MongoClient(dbUrl, { serverSelectionTimeoutMS: 5000 });
    try {
      await client.db('admin').command({ ping: 1 });
      return 'the database answers a ping from a new client';
    } catch (err) {
      return `the database does not answer a ping from a new client either (${(err as Error).message})`;
    } finally {
      await client.close().catch(() => undefined);
    }
  };

  const waitReady = async (base: string): Promise<boolean> => {
    const until = Date.now() + 120_000;
    starting = true;
    while (Date.now() < until) {
      // clients do not wait for readiness: a pull and a blob HEAD meanwhile get 503 or a right answer
      const c = rng.pick(clients);
      await checkTag(base, c, `${c.repos[0]}:${rng.pick(TAGS)}`, 'during start-up').catch(() => undefined);
      await req(base, 'HEAD', `/v2/${c.repos[0]}/blobs/${rng.pick(pool).digest}`).catch(() => undefined);
      const r = await call(base, 'GET', '/readyz').catch(() => undefined);
      if (r?.status === 200) {
        starting = false;
        return true;
      }
      if (r && r.status !== 503) violation(`/readyz answers ${r.status} during start-up`);
      await sleep(100);
    }
    starting = false;
    const last = await call(base, 'GET', '/readyz').catch((err: Error) => ({ status: 0, body: Buffer.from(err.message) }));
    violation(
      `the service was not ready within 120 s: /readyz ${last.status} ${last.body.toString('utf8').slice(0, 300)}; its log ends: ${server?.stdout().slice(-3000)}` +
        (opts.mode === 'database' ? `; ${await databaseAnswers()}; the database's output ends: ${dbOutput.slice(-3000)}` : ''),
    );
    return false;
  };

  const cliChecks = async (base: string): Promise<void> => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('VOLREG_')) env[k] = v;
    Object.assign(env, dbEnv, { VOLREG_DATA_DIR: dataDir });
    const scrub = await run(process.execPath, [VOLREG_BIN, 'scrub', '--dry-run', '--json'], { cwd: REPO_ROOT, env, maxBuffer: 64 << 20 }).then(
      () => 0,
      (e: { code?: number; stdout?: string; stderr?: string }) => {
        violation(`volreg scrub --dry-run exits ${e.code}: ${String(e.stdout).slice(0, 1500)} ${String(e.stderr).slice(-1500)}`);
        return e.code;
      },
    );
    const verify = await run(process.execPath, [VOLREG_BIN, 'verify', '--all', '--quiet', '--json', '--url', base], { cwd: REPO_ROOT, env, maxBuffer: 64 << 20 }).then(
      () => 0,
      (e: { code?: number; stdout?: string; stderr?: string }) => {
        violation(`volreg verify --all exits ${e.code}: ${String(e.stdout).slice(0, 1500)} ${String(e.stderr).slice(-1500)}`);
        return e.code;
      },
    );
    count('scrub runs');
    count('verify runs');
    void scrub;
    void verify;
  };

  // ---------------------------------------------------------------- the cycles
  try {
    if (opts.mode === 'database') await startDb();
    let base = await startServer();
    for (let cycle = 0; cycle < opts.cycles && base; cycle++) {
      phase = String(cycle);
      let stopped = false;
      const killDbOnly = opts.mode === 'database' && rng.chance(0.5);
      const workMs = 500 + rng.int(2500);
      log(`cycle ${cycle}: ${workMs} ms of work, then kill -9 of ${killDbOnly ? 'the database' : 'serve'}`);
      const gc = opts.mode === 'database' ? gcLoop(() => stopped) : Promise.resolve();
      const workers = clients.map(async (c) => {
        const url = base!;
        while (!stopped) {
          try {
            await op(url, c);
          } catch {
            count('requests cut');
            if (!stopped) await sleep(50);
          }
        }
      });
      await sleep(workMs);
      if (killDbOnly) {
        // the database alone: the service answers 503 while it is gone, never 500
        databaseAway = true;
        await killDb();
        count('database kills');
        await sleep(1000 + rng.int(2000));
        const probe = await call(base, 'GET', `/v2/${clients[0]!.repos[0]}/manifests/t0`, { headers: { Accept: ACCEPT_ALL } }).catch(() => undefined);
        if (probe && probe.status !== 503) violation(`with the database down, a pull by tag answers ${probe.status}, not 503`);
        stopped = true;
        // their replies are waited for (up to the service's 15 s wait for a database each): a
        // request the client gave up on would still go on in the service and could take effect
        // after the checks had seen it not taken
        await Promise.all(workers);
        if (rng.chance(0.3)) await crashDbWhileStarting(rng.int(2000));
        await startDb();
        // until the service has found the database again, 503 is still its answer
        const until = Date.now() + 60_000;
        while (Date.now() < until && (await call(base, 'GET', '/readyz').catch(() => undefined))?.status !== 200) await sleep(200);
        databaseAway = false;
        await killGc();
        await gc;
      } else {
        await killServer();
        await killGc();
        count('serve kills');
        if (opts.mode === 'database' && rng.chance(0.3)) {
          // the machine's crash: both at once
          await killDb();
          count('database kills');
          await startDb();
        }
        stopped = true;
        await Promise.all(workers);
        await gc;
        if (opts.mode === 'serve' && rng.chance(0.3)) await offlineGc(rng.int(8000));
        base = await startServer();
        if (!base) break;
        if (rng.chance(0.25)) {
          // killed again while it recovers: at once, or after a moment of the clients' retries
          await sleep(rng.int(300));
          await killServer();
          count('serve kills during start-up');
          base = await startServer();
          if (!base) break;
        }
      }
      if (!(await waitReady(base))) break;
      await checkAll(base);
      await cliChecks(base);
      log(`cycle ${cycle}: checked, ${violations.length} violations so far`);
      if (violations.length > 20) break;
    }
  } finally {
    await killServer();
    await killGc();
    await killDb();
  }
  return { violations, counts };
}

function withQuery(location: string, query: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}${query}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Archive {
  bytes: Buffer;
  digest: string;
}

/** small .tar.gz archives made by GNU tar from seeded trees */
async function makeArchives(dir: string, seed: number, n: number): Promise<Archive[]> {
  const out: Archive[] = [];
  for (let i = 0; i < n; i++) {
    const tree = join(dir, 'trees', String(i));
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.bin'), seededBytes(seed * 7919 + i + 1, 1000 + i * 20_000));
    await writeFile(join(tree, 'sub', 'b.txt'), `volume ${i} of seed ${seed}\n`);
    const file = join(dir, 'trees', `${i}.tar.gz`);
    await run('tar', ['-C', tree, '-czf', file, '.']);
    const bytes = await readFile(file);
    out.push({ bytes, digest: sha256(bytes) });
  }
  return out;
}
