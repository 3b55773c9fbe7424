import { spawn, type ChildProcess } from 'node:child_process';
import { REPO_ROOT, VOLREG_BIN } from './server.ts';

/**
 * `volreg db` on its own directory and a free port, as an operator runs it for several
 * `volreg serve` processes to share (README "Using a real MongoDB"); resolves with the
 * VOLREG_MONGODB_URL that reaches it once it listens.
 */
export async function standaloneEngine(dbPath: string): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [VOLREG_BIN, 'db', '--dbpath', dbPath, '--port', '0'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`volreg db did not listen: ${out}`)), 30_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const m = /volreg db listening on (mongodb:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(`${m[1]}/?directConnection=true`);
      }
    });
    child.once('exit', (code) => reject(new Error(`volreg db exited (${code}): ${out}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    url,
    child,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
