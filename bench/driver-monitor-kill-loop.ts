/**
 * kill -9 of `volreg db` under a busy MongoClient, over and over: after each restart the client
 * must find its database again. Counts the cycles after which it did not (its monitor stopped).
 *
 *   node --import=tsx bench/driver-monitor-kill-loop.ts [cycles] [port] [--watch]
 *
 * --workers=N: concurrent operations (24).
 * --watch: the service's socket watch (src/metadata/driver-sockets.ts) is on, as in volreg serve.
 * --holes: after each restart another client holds connections while this one's monitor
 *   reconnects, then lets them go, and this client's pool grows into them: the database's
 *   connections it closes first at the next kill (lowest descriptors first) are then the pool's,
 *   not the monitor's, as when `volreg gc` shares the database with `volreg serve`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { watchDriverSockets } from '../src/metadata/driver-sockets.ts';

const REPO_ROOT = join(import.meta.dirname, '..');
const VOLREG_BIN = join(REPO_ROOT, 'bin/volreg.js');

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const cycles = Number(args[0] ?? 100);
const port = Number(args[1] ?? 22903);
if (process.argv.includes('--watch')) watchDriverSockets();
const dbPath = mkdtempSync(join(tmpdir(), 'volreg-kill-loop-'));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function startDb(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [VOLREG_BIN, 'db', '--dbpath', dbPath, '--port', String(port)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (out.includes('volreg db listening on')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`volreg db exited (${code})`)));
  });
}

let db = await startDb();
const client = new MongoClient(`mongodb://127.0.0.1:${port}/?directConnection=true`, { serverSelectionTimeoutMS: 15_000 });
await client.connect();
const coll = client.db('loop').collection<{ _id: number; n: number; pad: string }>('docs');
let stop = false;
let ops = 0;
const holes = process.argv.includes('--holes');
const WORKERS = Number(process.argv.find((a) => a.startsWith('--workers='))?.slice('--workers='.length) ?? 24);
let active = WORKERS;
const worker = async (id: number): Promise<void> => {
  const pad = 'x'.repeat(2000 + id * 100);
  while (!stop) {
    if (id >= active) {
      await sleep(10);
      continue;
    }
    const k = Math.floor(Math.random() * 1000);
    await coll
      .updateOne({ _id: k }, { $inc: { n: 1 }, $set: { pad } }, { upsert: true })
      .then(() => coll.findOne({ _id: (k + 1) % 1000 }))
      .then(() => ops++, () => sleep(20));
  }
};
void Array.from({ length: WORKERS }, (_, i) => worker(i));

let wedged = 0;
for (let cycle = 1; cycle <= cycles; cycle++) {
  await sleep(300 + Math.random() * 1200);
  const exited = new Promise((r) => db.once('exit', r));
  db.kill('SIGKILL');
  await exited;
  await sleep(Math.random() * 300);
  db = await startDb();
  if (holes) {
    active = Math.min(2, WORKERS);
    const holder = new MongoClient(`mongodb://127.0.0.1:${port}/?directConnection=true`, { maxPoolSize: 12, serverSelectionTimeoutMS: 5000 });
    await Promise.all(Array.from({ length: 12 }, () => holder.db('admin').command({ ping: 1 }).catch(() => undefined)));
    await client.db('admin').command({ ping: 1 }, { timeoutMS: 20_000 }).catch(() => undefined);
    await holder.close();
    active = WORKERS;
  }
  // the monitor's next heartbeat is within 10 s; a new connection answers at once
  const t0 = Date.now();
  const back = await client.db('admin').command({ ping: 1 }, { timeoutMS: 25_000 }).then(() => true, () => false);
  if (!back) {
    wedged++;
    console.log(`cycle ${cycle}: WEDGED (no answer for ${Date.now() - t0} ms; a new client: ${await freshPing()})`);
    break;
  }
  console.log(`cycle ${cycle}: back after ${Date.now() - t0} ms, ${ops} ops so far`);
}
console.log(`${wedged} wedged`);
stop = true;
const dbExited = new Promise((r) => db.once('exit', r));
db.kill('SIGKILL');
await dbExited;
rmSync(dbPath, { recursive: true, force: true });
process.exit(wedged ? 1 : 0);

async function freshPing(): Promise<string> {
  const fresh = new MongoClient(`mongodb://127.0.0.1:${port}/?directConnection=true`, { serverSelectionTimeoutMS: 3000 });
  try {
    await fresh.db('admin').command({ ping: 1 });
    return 'answered';
  } catch (err) {
    return `failed: ${(err as Error).message}`;
  } finally {
    await fresh.close();
  }
}
