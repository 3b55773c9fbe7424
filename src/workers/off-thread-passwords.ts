import type { Worker } from 'node:worker_threads';
import { VolregError } from '../domain/errors.ts';
import { HELPER_THREAD_LIMITS } from './heap-settings.ts';
import { startModuleWorker } from './module-worker.ts';
import type { PasswordReply, PasswordRequest } from './password-protocol.ts';

/**
 * bcrypt comparisons on a worker thread (password-worker.ts).
 *
 * Why: a comparison takes tens to hundreds of milliseconds of CPU on purpose. On the event
 * loop, a client sending wrong passwords (none of which the success cache can answer) stalled
 * every other request: /healthz took 3 s under 32 such clients. Here they only wait for each
 * other, and at most `maxWaiting` of them: beyond that a check is refused at once with 429
 * TOOMANYREQUESTS rather than queued without bound.
 *
 * One worker, started on first use; it does not keep the process alive while idle. If it dies,
 * waiting checks fail (500, logged) and the next check starts a new one.
 */
export class OffThreadPasswords {
  private worker: Worker | null = null;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (ok: boolean) => void; reject: (err: Error) => void }>();

  constructor(private readonly maxWaiting = 64) {}

  compare(password: string, hash: string): Promise<boolean> {
    if (this.waiting.size >= this.maxWaiting) {
      return Promise.reject(new VolregError('TOOMANYREQUESTS', 'too many password checks at once; retry shortly', undefined, { 'Retry-After': '1' }));
    }
    const worker = this.ensure();
    const id = ++this.nextId;
    const result = new Promise<boolean>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    if (this.waiting.size === 1) worker.ref();
    worker.postMessage({ id, password, hash } satisfies PasswordRequest);
    return result;
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const worker = startModuleWorker(import.meta.url, './password-worker', undefined, HELPER_THREAD_LIMITS);
    worker.unref();
    worker.on('message', (m: PasswordReply) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) worker.unref();
      w.resolve(m.ok);
    });
    const fail = (err: Error): void => {
      if (this.worker === worker) this.worker = null;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`password worker exited (${code})`)));
    this.worker = worker;
    return worker;
  }
}
