import { spawn } from 'node:child_process';

/**
 * A failing filesystem, as a running process sees it: strace attached to the process (all its
 * threads) makes chosen system calls on chosen paths fail with an errno the kernel would give
 * (EIO from a dying disk, EROFS after a remount), without touching the disk. The call is not
 * made at all, so a test can clear the fault and see what a retry does.
 */

export interface Fault {
  /** the system call to fail: fsync, fdatasync, pread64, pwritev, openat... */
  syscall: string;
  /** the errno it returns */
  error: string;
  /** only calls on these files or directories fail (strace -P; a descriptor counts by its path) */
  paths: string[];
  /** strace's when= (per thread): "3+" lets each thread's first two calls through */
  when?: string;
}

export interface InjectedFault {
  /** calls failed so far */
  injected(): number;
  /** detaches strace: the fault is cleared, the process goes on */
  clear(): Promise<void>;
}

/** Attaches strace to `pid` and resolves once every thread of it is traced. */
export async function injectFault(pid: number, fault: Fault): Promise<InjectedFault> {
  const inject = `inject=${fault.syscall}:error=${fault.error}${fault.when ? `:when=${fault.when}` : ''}`;
  const args = ['-f', '-p', String(pid), '-e', `trace=${fault.syscall}`, '-e', inject, ...fault.paths.flatMap((p) => ['-P', p])];
  const strace = spawn('strace', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exited = new Promise<void>((resolve) => strace.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`strace did not attach within 10 s: ${log}`)), 10_000);
    strace.once('error', (err) => reject(new Error(`strace could not run (is it installed?): ${err.message}`)));
    void exited.then(() => reject(new Error(`strace exited: ${log}`)));
    strace.stderr.setEncoding('utf8').on('data', (s: string) => {
      log += s;
      if (/attached/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return {
    injected: () => log.split('(INJECTED)').length - 1,
    clear: async () => {
      strace.kill('SIGINT'); // strace detaches and lets the process run on
      await exited;
    },
  };
}
