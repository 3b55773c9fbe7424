/**
 * Starts the servers under test as child processes on loopback, each with its own temporary
 * data directory: volreg (`volreg serve`, embedded MongoDB engine on a thread of its process) and CNCF
 * distribution (Debian's `docker-registry` binary with a generated YAML config).
 */
import { execFile, spawn, type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ServerKind } from './options.ts';

const execFileAsync = promisify(execFile);

export interface RunningServer {
  kind: ServerKind;
  base: URL;
  pid: number;
  dataDir: string;
  version: string;
  /** why the process ended, if it did */
  exitReason(): string | undefined;
  /** the last lines the server printed, for error messages */
  outputTail(): string;
  /** a mark in the server's output; linesSince(mark) gives what it printed after it */
  outputMark(): number;
  linesSince(mark: number): string[];
  /** peak RSS (VmHWM, KiB) of a separate database process the server uses, if any */
  databasePeakKiB?(): number | undefined;
  /** pid of that separate database process, if any */
  databasePid?: number;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

class Tail {
  private lines: string[] = [];
  private partial = '';
  /** lines seen so far, kept or not */
  count = 0;
  constructor(private readonly max: number) {}
  push(chunk: string): string[] {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    this.lines.push(...parts);
    this.count += parts.length;
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
    return parts;
  }
  text(): string {
    return [...this.lines, this.partial].filter(Boolean).join('\n');
  }
  /** the kept lines printed after the `count` given */
  since(count: number): string[] {
    const n = Math.min(this.lines.length, this.count - count);
    return n > 0 ? this.lines.slice(-n) : [];
  }
}

function track(child: ChildProcess): { tail: Tail; exitReason: () => string | undefined; exited: Promise<void> } {
  live.add(child);
  const tail = new Tail(30);
  let reason: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      live.delete(child);
      reason = signal ? `killed by ${signal}` : `exited with code ${code}`;
      resolve();
    });
    child.on('error', (err) => {
      live.delete(child);
      reason = `could not start: ${err.message}`;
      resolve();
    });
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (c: string) => tail.push(c));
  return { tail, exitReason: () => reason, exited };
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const LISTENING = /volreg listening on (http:\/\/[^\s]+)/;

export interface VolregStartOptions {
  cpuProfDir?: string | undefined;
  nodeFlags?: readonly string[];
  /** run the embedded engine as its own process (`volreg db`) instead of inside volreg */
  separateDb?: boolean;
  startTimeoutMs?: number;
}

const DB_LISTENING = /volreg db listening on (\S+)/;

/** `volreg db` on a unix socket in `dataDir`; resolves with its connection string once it listens. */
/** `prof`: the service's --cpu-prof flags, so the engine's CPU is profiled too (its own file, its own pid) */
async function startSeparateDb(repoRoot: string, dataDir: string, timeoutMs: number, prof: readonly string[]): Promise<{ uri: string; child: ChildProcess; exited: Promise<void> }> {
  const dbPath = path.join(dataDir, 'separate-db');
  await fs.mkdir(dbPath);
  const child = spawn(process.execPath, [...prof, 'dist/src/cli/main.js', 'db', '--dbpath', dbPath, '--socket', path.join(dataDir, 'db.sock')], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { exitReason, exited } = track(child);
  const uri = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('volreg db did not start')), timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (c: string) => {
      const m = DB_LISTENING.exec(c);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then(() => reject(new Error(`volreg db ${exitReason()} before listening`)));
  });
  return { uri, child, exited };
}

function peakKiBOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The node flags `npm start` gives the service (package.json is their one place): the bench measures what operators run. */
export function startNodeFlags(repoRoot: string): string[] {
  const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const m = /\bnode((?:\s+--\S+)*)\s+dist\/src\/cli\/main\.js serve\b/.exec(pkg.scripts.start);
  if (!m) throw new Error(`package.json's start script does not run dist/src/cli/main.js serve: ${pkg.scripts.start}`);
  return m[1]!.trim().split(/\s+/).filter(Boolean);
}

export async function startVolreg(repoRoot: string, tmpRoot: string, opts: VolregStartOptions = {}): Promise<RunningServer> {
  const { cpuProfDir, nodeFlags = [], separateDb = false, startTimeoutMs = 90_000 } = opts;
  const dataDir = await fs.mkdtemp(path.join(tmpRoot, 'volreg-data-'));
  const env: NodeJS.ProcessEnv = { ...process.env, VOLREG_ADDR: '127.0.0.1:0', VOLREG_DATA_DIR: dataDir, VOLREG_LOG_LEVEL: 'warn' };
  // the embedded engine, no authentication, the filesystem driver: the out-of-the-box setup
  delete env.VOLREG_MONGODB_URL;
  delete env.VOLREG_AUTH_FILE;
  delete env.VOLREG_STORAGE;
  const prof = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  // what `npm start` runs: the compiled service (built once here), not the sources under tsx
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'inherit'] });
  const db = separateDb ? await startSeparateDb(repoRoot, dataDir, startTimeoutMs, prof) : undefined;
  if (db) env.VOLREG_MONGODB_URL = db.uri;
  const child = spawn(process.execPath, [...prof, ...startNodeFlags(repoRoot), ...nodeFlags, 'dist/src/cli/main.js', 'serve'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const { tail: errTail, exitReason, exited } = track(child);
  const outTail = new Tail(30);
  const outputTail = (): string => [outTail.text(), errTail.text()].filter(Boolean).join('\n');
  const base = await new Promise<URL>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`volreg did not print its listening line within ${startTimeoutMs / 1000}s`)), startTimeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      for (const line of outTail.push(c)) {
        const m = LISTENING.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(new URL(m[1]));
        }
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`volreg ${exitReason()} before listening`));
    });
  }).catch(async (err: Error) => {
    await stopChild(child, exited);
    if (db) await stopChild(db.child, db.exited);
    throw new Error(`${err.message}${outputTail() ? `: ${lastLines(outputTail(), 6)}` : ''}`);
  });
  let version = 'unknown';
  try {
    version = (await execFileAsync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot })).stdout.trim();
  } catch {
    // not a git checkout
  }
  return {
    kind: 'volreg',
    base,
    pid: child.pid as number,
    dataDir,
    version: `volreg @ ${version}`,
    exitReason,
    outputTail,
    outputMark: () => outTail.count + errTail.count,
    linesSince: (mark) => sinceBoth(outTail, errTail, mark),
    databasePeakKiB: () => peakKiBOf(db?.child.pid),
    ...(db?.child.pid !== undefined ? { databasePid: db.child.pid } : {}),
    stop: async () => {
      await stopChild(child, exited);
      if (db) await stopChild(db.child, db.exited);
    },
  };
}

function distributionConfig(dataDir: string, port: number): string {
  // Filesystem storage, no auth, deletes enabled, the in-memory blob descriptor cache of the
  // stock configuration, and upload purging off so nothing runs in the background.
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(path.join(dataDir, 'registry'))}`,
    '  delete:',
    '    enabled: true',
    '  cache:',
    '    blobdescriptor: inmemory',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: volreg-bench-not-a-secret',
    '',
  ].join('\n');
}

export async function distributionBinary(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/local/bin'])) {
    const candidate = path.join(dir, 'docker-registry');
    try {
      await fs.access(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function startDistribution(binary: string, tmpRoot: string, startTimeoutMs = 30_000): Promise<RunningServer> {
  const dataDir = await fs.mkdtemp(path.join(tmpRoot, 'distribution-data-'));
  const port = await freePort();
  const configFile = path.join(dataDir, 'config.yml');
  await fs.writeFile(configFile, distributionConfig(dataDir, port));
  const child = spawn(binary, ['serve', configFile], { cwd: dataDir, stdio: ['ignore', 'pipe', 'pipe'] });
  const { tail: errTail, exitReason, exited } = track(child);
  const outTail = new Tail(30);
  const outputTail = (): string => [outTail.text(), errTail.text()].filter(Boolean).join('\n');
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (c: string) => outTail.push(c));
  const base = new URL(`http://127.0.0.1:${port}/`);
  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (exitReason()) throw new Error(`docker-registry ${exitReason()}: ${lastLines(outputTail(), 6)}`);
    try {
      const res = await fetch(new URL('/v2/', base), { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stopChild(child, exited);
      throw new Error(`docker-registry did not answer GET /v2/ within ${startTimeoutMs / 1000}s: ${lastLines(outputTail(), 6)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let version = 'docker-registry';
  try {
    version = (await execFileAsync(binary, ['--version'])).stdout.trim();
  } catch {
    // keep the generic name
  }
  return {
    kind: 'distribution',
    base,
    pid: child.pid as number,
    dataDir,
    version,
    exitReason,
    outputTail,
    outputMark: () => outTail.count + errTail.count,
    linesSince: (mark) => sinceBoth(outTail, errTail, mark),
    stop: () => stopChild(child, exited),
  };
}

// Both streams' lines after a mark taken as the sum of their counts; order between the two
// streams is not kept, which is fine for error context.
function sinceBoth(out: Tail, err: Tail, mark: number): string[] {
  const extra = out.count + err.count - mark;
  if (extra <= 0) return [];
  return [...out.since(out.count - extra), ...err.since(err.count - extra)].slice(-extra);
}

function lastLines(text: string, n: number): string {
  return text.split('\n').slice(-n).join(' | ');
}
