/**
 * What racing requests may end as: each took effect at one instant, so together they leave
 * what one serial order of them leaves, and that order must also give the replies they got.
 * The race tests run requests at once against a real server and check its end state against
 * every order the replies allow.
 */

/** One request as the model sees it: changes the state, answers the reply it gives (e.g. "201"). */
export type ModelStep<S> = (state: S) => string;

/** Every order of `items`. */
export function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((first, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [first, ...rest]));
}

/**
 * The end states (as `describe` writes them) of the serial orders of `steps` from `start` whose
 * replies are `replies` (the reply of each step, in the order of `steps`). Empty: no order gives
 * these replies at all.
 */
export function serialOutcomes<S>(start: S, steps: readonly ModelStep<S>[], replies: readonly string[], describe: (state: S) => string): Set<string> {
  const out = new Set<string>();
  for (const order of permutations(steps.map((_, i) => i))) {
    const state = structuredClone(start);
    const got: string[] = [];
    for (const i of order) got[i] = steps[i]!(state);
    if (got.every((r, i) => r === replies[i])) out.add(describe(state));
  }
  return out;
}
