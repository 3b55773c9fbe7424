/**
 * Summarises a V8 .cpuprofile (as written by `node --cpu-prof`): where self time went, by
 * function and by file, so a slow scenario can be traced to the code that costs.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function shortUrl(url: string, repoRoot: string): string {
  if (!url) return '(native/vm)';
  let p = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
  if (p.startsWith(repoRoot)) p = path.relative(repoRoot, p);
  return p.replace(/^.*node_modules\//, 'node_modules/');
}

export async function loadProfile(file: string): Promise<Profile> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as Profile;
}

/**
 * `windows` (microseconds of the monotonic clock, which V8's profile timestamps share with
 * process.hrtime in any process on the machine) keeps only the samples taken inside them.
 */
export function summariseProfile(profile: Profile, label: string, repoRoot: string, windows?: ReadonlyArray<readonly [number, number]>, top = 25): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let t = profile.startTime;
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    if (windows && !windows.some(([a, b]) => t >= a && t <= b)) continue;
    const id = profile.samples[i];
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
    total += delta;
  }
  if (total === 0) return `${label}: no samples`;
  const fnTotals = new Map<string, number>();
  const fileTotals = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const f = node.callFrame;
    const file = shortUrl(f.url, repoRoot);
    const fn = `${f.functionName || '(anonymous)'}  ${file}${f.url && f.lineNumber > 0 ? `:${f.lineNumber + 1}` : ''}`;
    fnTotals.set(fn, (fnTotals.get(fn) ?? 0) + us);
    fileTotals.set(file, (fileTotals.get(file) ?? 0) + us);
  }
  // inclusive time: a sample counts for every distinct function on its stack
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (n: ProfileNode): string => {
    const f = n.callFrame;
    return `${f.functionName || '(anonymous)'}  ${shortUrl(f.url, repoRoot)}${f.url && f.lineNumber > 0 ? `:${f.lineNumber + 1}` : ''}`;
  };
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const node = byId.get(cur);
      if (!node || !node.callFrame.url.includes('/src/')) continue;
      const key = keyOf(node);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  const ms = (us: number): string => `${(us / 1000).toFixed(0).padStart(7)} ms`;
  const lines = [`${label}: ${(total / 1e6).toFixed(1)} s of main-thread samples`, 'self time by function:'];
  for (const [fn, us] of [...fnTotals].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(us)} ${ms(us)}  ${fn}`);
  lines.push('inclusive time of volreg source functions (src/), self + callees:');
  for (const [fn, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(us)} ${ms(us)}  ${fn}`);
  lines.push('self time by file:');
  for (const [f, us] of [...fileTotals].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(us)} ${ms(us)}  ${f}`);
  return lines.join('\n');
}
