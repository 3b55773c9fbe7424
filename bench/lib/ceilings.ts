/**
 * What this machine allows at best, measured by the harness in the same run with no registry
 * involved, so the rows can be read against it:
 *
 * - durable write: the upload-sized file (in the page cache) copied to a file on the servers'
 *   filesystem and fdatasync'd at the end, as `dd conv=fdatasync` does. Both servers fsync an
 *   upload before they make it visible, so no upload can beat this by much.
 * - bare node:http: a server that answers every request with fixed bytes (a manifest-sized
 *   body for GET, headers only for HEAD), hit by the same client, concurrency and count as the
 *   manifest GET and blob HEAD rows. It is what any node service gets on this machine before
 *   it does any work; the client shares the cores with it, as in the real rows.
 * - the same server making one MongoDB round trip per request (a findOne by _id through the
 *   official driver to volreg's embedded engine on a worker thread of the same process, as
 *   volreg runs it): what a node service that consults its database once per request gets here.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { DataFile } from './data.ts';
import { HttpClient } from './http-client.ts';
import { latencySummary, runPool } from './pool.ts';
import type { Outcome } from './scenarios.ts';

export interface Ceiling extends Outcome {
  id: 'durable-write' | 'http-get' | 'http-head' | 'http-get-db' | 'http-head-db';
  title: string;
  unit: string;
  /** the scenario rows this figure bounds */
  bounds: readonly string[];
}

/** Copies `src` to a new file in `dir` and fdatasyncs it; best of `rounds`. */
export async function measureDurableWrite(src: DataFile, dir: string, rounds: number, signal: AbortSignal): Promise<Ceiling> {
  const figures: number[] = [];
  for (let r = 0; r < rounds; r++) {
    signal.throwIfAborted();
    const target = path.join(dir, `ceiling-${r}.bin`);
    const fh = await fs.open(target, 'w');
    try {
      const started = performance.now();
      let pos = 0;
      for await (const chunk of createReadStream(src.path, { highWaterMark: 1024 * 1024, signal })) {
        const buf = chunk as Buffer;
        for (let off = 0; off < buf.length; ) {
          const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      }
      await fh.datasync();
      figures.push(src.size / (1024 * 1024) / ((performance.now() - started) / 1000));
    } finally {
      await fh.close();
      await fs.rm(target, { force: true });
    }
  }
  return {
    id: 'durable-write',
    title: `durable write: ${Math.round(src.size / (1024 * 1024))} MiB from page cache to the data filesystem + fdatasync`,
    unit: 'MiB/s',
    value: Math.max(...figures),
    detail: `best of ${rounds}: ${figures.map((f) => f.toFixed(1)).join(', ')} MiB/s`,
    bounds: ['upload-mono', 'upload-chunked', 'targz-v2'],
  };
}

// The bare server: fixed replies, nothing computed per request, or one findOne each (ROUND_TRIPS=1).
const BARE_SERVER = `
import http from 'node:http';
const body = Buffer.alloc(Number(process.env.BODY_BYTES), 0x7b);
let find = async () => undefined;
if (process.env.ROUND_TRIPS === '1') {
  const { MongoClient } = await import('mongodb');
  const { startEngineThread } = await import(process.env.ENGINE_MODULE);
  const engine = await startEngineThread({ host: '127.0.0.1', port: 0 }, () => undefined);
  const client = new MongoClient(engine.uri);
  await client.connect();
  const units = client.db('ceiling').collection('units');
  await units.insertMany(Array.from({ length: 1000 }, (_, i) => ({ _id: 'u' + i, digest: 'sha256:' + String(i).padStart(64, '0') })));
  let next = 0;
  find = async () => {
    if (!(await units.findOne({ _id: 'u' + (next++ % 1000) }, { projection: { _id: 1 } }))) throw new Error('unit missing');
  };
}
const server = http.createServer({ keepAliveTimeout: 30000 }, (req, res) => {
  find().then(() => {
    res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Content-Length': body.length,
      'Docker-Content-Digest': 'sha256:' + '0'.repeat(64), 'Docker-Distribution-Api-Version': 'registry/2.0' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }, (err) => { res.writeHead(500); res.end(String(err)); });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));
`;

export interface HttpCeilingPlan {
  getCount: number;
  getClients: number;
  /** the size of a manifest of the GET row */
  bodyBytes: number;
  headCount: number;
  headClients: number;
  /** 0: fixed replies; 1: one findOne through the driver per request */
  roundTrips: 0 | 1;
}

/**
 * Runs the bare server as its own process (from `repoRoot`, whose built engine and mongodb
 * driver the round-trip variant loads) and measures GET and HEAD rates against it.
 */
export async function measureBareHttp(repoRoot: string, plan: HttpCeilingPlan, rounds: number, signal: AbortSignal): Promise<Ceiling[]> {
  const env = {
    ...process.env,
    BODY_BYTES: String(plan.bodyBytes),
    ROUND_TRIPS: String(plan.roundTrips),
    ENGINE_MODULE: pathToFileURL(path.join(repoRoot, 'dist/src/workers/engine-thread.js')).href,
  };
  const child = spawn(process.execPath, ['--input-type=module', '-e', BARE_SERVER], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const exited = once(child, 'exit', { signal }).then(([code]) => {
      throw new Error(`bare server exited (${String(code)}) before it listened`);
    });
    const [first] = (await Promise.race([once(child.stdout, 'data', { signal }), exited])) as [Buffer];
    const base = new URL(`http://127.0.0.1:${Number(first.toString().trim())}/`);
    const rate = async (method: 'GET' | 'HEAD', count: number, clients: number): Promise<{ value: number; detail: string }> => {
      const c = new HttpClient(base, clients);
      try {
        const figures: number[] = [];
        let last = '';
        for (let r = 0; r < rounds; r++) {
          const res = await runPool(
            count,
            clients,
            async (i) => {
              const reply = await c.request({ method, path: `/v2/bare/manifests/t${i}`, signal });
              if (reply.status !== 200) throw new Error(`bare server answered ${reply.status}: ${reply.body.toString().slice(0, 200)}`);
            },
            signal,
          );
          figures.push(count / (res.elapsedMs / 1000));
          last = latencySummary(res.latenciesMs);
        }
        return { value: Math.max(...figures), detail: `${last}; best of ${rounds}: ${figures.map((f) => f.toFixed(0)).join(', ')} req/s` };
      } finally {
        c.close();
      }
    };
    const get = await rate('GET', plan.getCount, plan.getClients);
    const head = await rate('HEAD', plan.headCount, plan.headClients);
    const db = plan.roundTrips === 1;
    const what = db ? 'node:http + 1 driver round trip per request' : 'bare node:http';
    return [
      { id: db ? 'http-get-db' : 'http-get', title: `${what}: GET, ${plan.bodyBytes}-byte body, ${plan.getCount} at ${plan.getClients} clients`, unit: 'req/s', ...get, bounds: ['manifest-get'] },
      { id: db ? 'http-head-db' : 'http-head', title: `${what}: HEAD, ${plan.headCount} at ${plan.headClients} clients`, unit: 'req/s', ...head, bounds: ['blob-head'] },
    ];
  } finally {
    child.kill('SIGKILL');
  }
}
