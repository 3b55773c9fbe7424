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
 * Checks are handed to the worker one at a time, taking turns between clients (by address),
 * each client having at most `perClient` waiting: a client flooding wrong passwords delays
 * another's login by one comparison per turn, rather than filling the queue and locking every
 * new login out. A check whose client has gone (its `signal` aborted) is dropped unrun.
 *
 * One worker, started on first use; it does not keep the process alive while idle. If it dies,
 * waiting checks fail (500, logged) and the next check starts a new one.
 */
interface Check {
  password: string;
  hash: string;
  client: string;
  resolve: (ok: boolean) => void;
  reject: (err: Error) => void;
}

export class OffThreadPasswords {
  private worker: Worker | null = null;
  private nextId = 0;
  /** waiting checks by client, in the order clients take turns */
  private readonly queues = new Map<string, Check[]>();
  private running: { id: number; check: Check } | null = null;

  constructor(
    private readonly maxWaiting = 64,
    private readonly perClient = 8,
  ) {}

  compare(password: string, hash: string, from: { client?: string; signal?: AbortSignal } = {}): Promise<boolean> {
    const client = from.client ?? '';
    const queue = this.queues.get(client) ?? [];
    if (this.waiting() >= this.maxWaiting || queue.length >= this.perClient) {
      return Promise.reject(new VolregError('TOOMANYREQUESTS', 'too many password checks at once; retry shortly', undefined, { 'Retry-After': '1' }));
    }
    return new Promise<boolean>((resolve, reject) => {
      const check: Check = { password, hash, client, resolve, reject };
      queue.push(check);
      this.queues.set(client, queue);
      from.signal?.addEventListener('abort', () => this.drop(check), { once: true });
      this.runNext();
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
  }

  private waiting(): number {
    let n = 0;
    for (const queue of this.queues.values()) n += queue.length;
    return n;
  }

  /** A waiting check whose client left: out of the queue, never run. */
  private drop(check: Check): void {
    const queue = this.queues.get(check.client);
    const at = queue?.indexOf(check) ?? -1;
    if (!queue || at < 0) return;
    queue.splice(at, 1);
    if (queue.length === 0) this.queues.delete(check.client);
    check.reject(new Error('the client went away'));
  }

  /** Hands the next client's oldest check to the worker, unless one is running. */
  private runNext(): void {
    if (this.running) return;
    const next = this.queues.entries().next();
    if (next.done) {
      this.worker?.unref();
      return;
    }
    const [client, queue] = next.value;
    const check = queue.shift()!;
    // this client's turn is over: it goes to the back
    this.queues.delete(client);
    if (queue.length > 0) this.queues.set(client, queue);
    const worker = this.ensure();
    worker.ref();
    const id = ++this.nextId;
    this.running = { id, check };
    worker.postMessage({ id, password: check.password, hash: check.hash } satisfies PasswordRequest);
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const worker = startModuleWorker(import.meta.url, './password-worker', undefined, HELPER_THREAD_LIMITS);
    worker.unref();
    worker.on('message', (m: PasswordReply) => {
      if (this.running?.id !== m.id) return;
      const { check } = this.running;
      this.running = null;
      check.resolve(m.ok);
      this.runNext();
    });
    const fail = (err: Error): void => {
      if (this.worker === worker) this.worker = null;
      else if (this.worker) return; // an earlier worker's end: the checks are the new one's
      const failed = [...(this.running ? [this.running.check] : []), ...[...this.queues.values()].flat()];
      this.running = null;
      this.queues.clear();
      for (const c of failed) c.reject(err);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`password worker exited (${code})`)));
    this.worker = worker;
    return worker;
  }
}
