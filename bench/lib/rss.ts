/**
 * Peak resident memory of a server process, read from /proc/<pid>/status.
 *
 * Per scenario, the kernel's high-water mark (VmHWM) is reset by writing 5 to
 * /proc/<pid>/clear_refs (needs the same user or root) and read back afterwards, which
 * catches spikes between samples. Where the reset is refused, VmRSS sampled every 50 ms
 * stands in. Child processes (none expected) are sampled and reported separately.
 */
import fs from 'node:fs';

export interface PeakReport {
  /** peak RSS of the server process in KiB */
  peakKiB: number;
  /** 'hwm' when VmHWM after a reset, 'sampled' when from VmRSS samples */
  method: 'hwm' | 'sampled';
  /** peak summed RSS of the server's descendant processes (sampled), KiB */
  childrenPeakKiB: number;
}

function statusField(pid: number, field: string): number | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    } catch {
      // the task ended meanwhile
    }
  }
  return out;
}

function descendantsRssKiB(pid: number): number {
  let sum = 0;
  const stack = childPids(pid);
  while (stack.length > 0) {
    const child = stack.pop() as number;
    sum += statusField(child, 'VmRSS') ?? 0;
    stack.push(...childPids(child));
  }
  return sum;
}

export class RssProbe {
  /** peak over the whole run, folded in from every measurement and the start-up HWM */
  overallPeakKiB = 0;
  overallChildrenPeakKiB = 0;
  resetWorks: boolean | undefined;

  constructor(readonly pid: number) {}

  currentKiB(): number | undefined {
    return statusField(this.pid, 'VmRSS');
  }

  private foldHwm(): void {
    const hwm = statusField(this.pid, 'VmHWM');
    if (hwm !== undefined) this.overallPeakKiB = Math.max(this.overallPeakKiB, hwm);
  }

  private resetHwm(): boolean {
    try {
      fs.writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      return true;
    } catch {
      return false;
    }
  }

  /** Runs `fn` and reports the server's peak RSS while it ran. */
  async measure<T>(fn: () => Promise<T>): Promise<{ result: T; peak: PeakReport } | { error: unknown; peak: PeakReport }> {
    this.foldHwm();
    const reset = this.resetHwm();
    this.resetWorks ??= reset;
    let sampled = this.currentKiB() ?? 0;
    let children = 0;
    const timer = setInterval(() => {
      sampled = Math.max(sampled, this.currentKiB() ?? 0);
      children = Math.max(children, descendantsRssKiB(this.pid));
    }, 50);
    const finish = (): PeakReport => {
      clearInterval(timer);
      sampled = Math.max(sampled, this.currentKiB() ?? 0);
      children = Math.max(children, descendantsRssKiB(this.pid));
      const hwm = reset ? statusField(this.pid, 'VmHWM') : undefined;
      const peak: PeakReport =
        hwm !== undefined ? { peakKiB: Math.max(hwm, sampled), method: 'hwm', childrenPeakKiB: children } : { peakKiB: sampled, method: 'sampled', childrenPeakKiB: children };
      this.overallPeakKiB = Math.max(this.overallPeakKiB, peak.peakKiB);
      this.overallChildrenPeakKiB = Math.max(this.overallChildrenPeakKiB, children);
      return peak;
    };
    try {
      const result = await fn();
      return { result, peak: finish() };
    } catch (error) {
      return { error, peak: finish() };
    }
  }

  /** Folds in the current high-water mark (for phases measured by no scenario). */
  settle(): void {
    this.foldHwm();
    this.overallChildrenPeakKiB = Math.max(this.overallChildrenPeakKiB, descendantsRssKiB(this.pid));
  }
}
