/**
 * volreg's archive inspection (the compiled `inspectArchive`: gunzip, sha256 of the tar, tar
 * parsing) in a process of its own, reading a file. That is the work a PUT to /api/v1 adds to
 * a /v2 upload of the same bytes, here with no coupling to the upload at all: the bound row
 * runs it next to a /v2 upload to show what the /api/v1 row can reach on this machine.
 *
 * The process loads its modules first and prints `ready`; each line on its stdin starts one
 * inspection (so module loading is not timed), whose result it prints as one JSON line.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const REPO_ROOT = path.resolve(import.meta.dirname, '../..');

const INSPECTOR = `
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
const { inspectArchive } = await import(process.env.INSPECTOR_MODULE);
createInterface({ input: process.stdin }).on('line', () => {
  inspectArchive(createReadStream(process.env.INSPECT_FILE, { highWaterMark: 1 << 20 })).then(
    (r) => process.stdout.write(JSON.stringify({ entries: r.entries, uncompressedSize: r.uncompressedSize }) + '\\n'),
    (err) => { process.stderr.write(String((err && err.message) || err) + '\\n'); process.exit(1); },
  );
});
process.stdout.write('ready\\n');
`;

export interface InspectionRun {
  entries: number;
  uncompressedSize: number;
}

export interface InspectionProcess {
  /** runs one inspection; resolves with its result and how long it took */
  go(): Promise<InspectionRun & { ms: number }>;
  kill(): void;
}

/** Starts the process (volreg must be built: `dist/`) and waits until it is ready. */
export async function startInspectionProcess(file: string, signal: AbortSignal): Promise<InspectionProcess> {
  const env = {
    ...process.env,
    INSPECT_FILE: file,
    INSPECTOR_MODULE: pathToFileURL(path.join(REPO_ROOT, 'dist/src/domain/volumes/archive-inspector.js')).href,
  };
  const child = spawn(process.execPath, ['--input-type=module', '-e', INSPECTOR], { cwd: REPO_ROOT, env, stdio: ['pipe', 'pipe', 'pipe'], signal });
  child.on('error', () => undefined); // an abort kills it; the waits below report it
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const line = (n: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const lines = out.split('\n');
        if (lines.length > n) {
          child.stdout.off('data', onData);
          resolve(lines[n - 1]!);
        }
      };
      const onData = (c: string): void => {
        out += c;
        check();
      };
      child.stdout.on('data', onData);
      check();
      void exited.then((code) => reject(new Error(`inspection process exited (${String(code)}): ${err.trim().slice(0, 300)}`)));
    });
  if ((await line(1)) !== 'ready') throw new Error('inspection process did not start');
  let runs = 0;
  return {
    async go() {
      const t0 = performance.now();
      child.stdin.write('go\n');
      runs++;
      const r = JSON.parse(await line(runs + 1)) as InspectionRun;
      return { ...r, ms: performance.now() - t0 };
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}
