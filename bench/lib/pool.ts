/** Runs `count` tasks with at most `concurrency` in flight and records each one's latency. */
import { performance } from 'node:perf_hooks';

export interface PoolResult {
  elapsedMs: number;
  latenciesMs: number[];
}

export async function runPool(count: number, concurrency: number, task: (i: number) => Promise<void>, signal: AbortSignal): Promise<PoolResult> {
  const latenciesMs: number[] = new Array<number>(count);
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      signal.throwIfAborted();
      const i = next++;
      const t0 = performance.now();
      try {
        await task(i);
      } catch (err) {
        next = count; // stop the other workers too
        throw err;
      }
      latenciesMs[i] = performance.now() - t0;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { elapsedMs: performance.now() - started, latenciesMs };
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

export function latencySummary(values: readonly number[]): string {
  return `p50 ${percentile(values, 50).toFixed(1)} ms, p99 ${percentile(values, 99).toFixed(1)} ms`;
}
