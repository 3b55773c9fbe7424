/**
 * How many generated cases a property test runs, and from which seed: a fixed seed, so every
 * failure reproduces; VOLREG_FUZZ_RUNS sets the number of runs for a long run by hand, and
 * VOLREG_FUZZ_SEED starts from another seed (fast-check prints the seed and path of a failure).
 */

/** `base` runs, or VOLREG_FUZZ_RUNS; a costly property takes only its `share` of the latter. */
export function fuzzRuns(base: number, share = 1): number {
  const raw = process.env.VOLREG_FUZZ_RUNS;
  if (raw === undefined || raw === '') return base;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`VOLREG_FUZZ_RUNS must be a positive integer, not ${raw}`);
  return Math.ceil(n * share);
}

export function fuzzSeed(fixed: number): number {
  const raw = process.env.VOLREG_FUZZ_SEED;
  if (raw === undefined || raw === '') return fixed;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`VOLREG_FUZZ_SEED must be an integer, not ${raw}`);
  return n;
}
