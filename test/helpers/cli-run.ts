import { execFile } from 'node:child_process';
import { VOLREG_BIN } from './server.ts';

/** nobody:nogroup, whom `asNobody` runs the CLI as (setpriv, so the test itself must be root) */
export const NOBODY = 65534;

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliRunOptions {
  /** the registry (VOLREG_URL) */
  url: string;
  cwd: string;
  env?: Record<string, string>;
  /** what the CLI reads on stdin (closed when absent) */
  input?: Buffer | string;
  asNobody?: boolean;
  /** a command the CLI runs under, e.g. `ip netns exec NAME` (test/helpers/shaped-link.ts) */
  prefix?: string[];
}

/** Runs the built `volreg` CLI: its exit code and its whole output. */
export function runVolreg(args: string[], opts: CliRunOptions): Promise<CliRun> {
  return new Promise((resolve) => {
    const env = { ...process.env, VOLREG_URL: opts.url, ...opts.env };
    const [cmd, ...argv] = [
      ...(opts.prefix ?? []),
      ...(opts.asNobody ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'] : []),
      process.execPath,
      VOLREG_BIN,
      ...args,
    ];
    const child = execFile(cmd!, argv, { env, cwd: opts.cwd, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin!.end(opts.input);
  });
}
