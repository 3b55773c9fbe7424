/** Turns the measured cells into the printed tables (and the JSON written by --json). */
import type { CpuSpent } from './cpu-time.ts';
import type { PeakReport } from './rss.ts';
import type { ServerKind } from './options.ts';
import type { Scenario } from './scenarios.ts';

/** The server's own memory figures (from its /metrics), in bytes, right after a scenario. */
export interface HeapFigures {
  heapTotal: number;
  heapUsed: number;
  external: number;
}

export interface Cell {
  value?: number;
  error?: string;
  detail?: string;
  peak?: PeakReport;
  heap?: HeapFigures;
  /** the server's CPU over the timed part */
  cpu?: CpuSpent;
}

export type Results = Map<string, Partial<Record<ServerKind, Cell>>>;

export interface ServerSummary {
  kind: ServerKind;
  version: string;
  /** why the server could not be measured at all */
  unavailable?: string;
  peakKiB?: number;
  /** RSS right after start-up, before any scenario */
  startKiB?: number;
  childrenPeakKiB?: number;
  /** peak RSS of volreg's database when it ran as a separate process (--separate-db) */
  databasePeakKiB?: number | undefined;
  rssMethod?: string;
}

export const RSS_TARGET_MB = 150;

function fmtValue(v: number, unit: string): string {
  if (unit === 'MiB/s' || unit === 'MB') return v.toFixed(1);
  return v >= 100 ? Math.round(v).toString() : v.toFixed(1);
}

function cellText(cell: Cell | undefined, unit: string, applies: boolean): string {
  if (!applies) return '-';
  if (!cell) return 'n/a (not run)';
  if (cell.value !== undefined) return fmtValue(cell.value, unit);
  const msg = (cell.error ?? 'unknown').replace(/\s+/g, ' ');
  return `n/a (error: ${msg.length > 60 ? `${msg.slice(0, 57)}...` : msg})`;
}

function ratioText(r: number | undefined): string {
  return r === undefined || !Number.isFinite(r) ? 'n/a' : `${r.toFixed(2)}x`;
}

export function renderTable(headers: string[], rows: string[][], rightAligned: Set<number>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n');
}

export interface Row {
  id: string;
  scenario: string;
  unit: string;
  better: 'higher' | 'lower';
  volreg: string;
  distribution: string;
  ratio: string;
  ratioOf: string;
  target: string;
  met: string;
  volregValue?: number;
  distributionValue?: number;
  ratioValue?: number;
}

export function buildRows(scenarios: Scenario[], results: Results, servers: ServerSummary[]): Row[] {
  const rows: Row[] = [];
  const value = (id: string, kind: ServerKind): number | undefined => results.get(id)?.[kind]?.value;
  for (const s of scenarios) {
    const cells = results.get(s.id) ?? {};
    const v = value(s.id, 'volreg');
    const d = value(s.id, 'distribution');
    let ratio: number | undefined;
    let ratioOf = 'volreg / distribution';
    if (s.compare.kind === 'vs-distribution' && v !== undefined && d !== undefined) ratio = v / d;
    if (s.compare.kind === 'vs-row') {
      ratioOf = `volreg / volreg "${s.compare.row}"`;
      const base = value(s.compare.row, 'volreg');
      if (v !== undefined && base !== undefined) ratio = v / base;
    }
    const min = s.compare.kind === 'none' ? undefined : s.compare.min;
    const met = ratio === undefined || min === undefined ? '?' : ratio >= min ? 'yes' : 'NO';
    rows.push({
      id: s.id,
      scenario: s.title,
      unit: s.unit,
      better: s.higherIsBetter ? 'higher' : 'lower',
      volreg: cellText(cells.volreg, s.unit, s.servers.includes('volreg')),
      distribution: cellText(cells.distribution, s.unit, s.servers.includes('distribution')),
      ratio: ratioText(ratio),
      ratioOf,
      target: s.compare.text,
      met,
      volregValue: v,
      distributionValue: d,
      ratioValue: ratio,
    });
  }
  const peak = (kind: ServerKind): number | undefined => {
    const s = servers.find((x) => x.kind === kind);
    return s?.peakKiB !== undefined ? (s.peakKiB * 1024) / 1e6 : undefined;
  };
  const vp = peak('volreg');
  const dp = peak('distribution');
  const unavailable = (kind: ServerKind): string => {
    const s = servers.find((x) => x.kind === kind);
    return s?.unavailable ? cellText({ error: s.unavailable }, 'MB', true) : 'n/a';
  };
  const rssRatio = vp !== undefined && dp !== undefined ? vp / dp : undefined;
  rows.push({
    id: 'rss-peak',
    scenario: 'peak server RSS over the whole run (VmHWM)',
    unit: 'MB',
    better: 'lower',
    volreg: vp !== undefined ? vp.toFixed(1) : unavailable('volreg'),
    distribution: dp !== undefined ? dp.toFixed(1) : unavailable('distribution'),
    ratio: ratioText(rssRatio),
    ratioOf: 'volreg / distribution',
    target: `volreg < ${RSS_TARGET_MB} MB`,
    met: vp === undefined ? '?' : vp < RSS_TARGET_MB ? 'yes' : 'NO',
    volregValue: vp,
    distributionValue: dp,
    ratioValue: rssRatio,
  });
  return rows;
}

export function renderMain(rows: Row[]): string {
  return renderTable(
    ['scenario', 'unit', 'better', 'volreg', 'distribution', 'ratio v/d', 'target', 'met'],
    rows.map((r) => [r.scenario, r.unit, r.better, r.volreg, r.distribution, r.ratioOf === 'volreg / distribution' ? r.ratio : `${r.ratio} (*)`, r.target, r.met]),
    new Set([3, 4, 5]),
  );
}

export function renderRss(scenarios: Scenario[], results: Results): string {
  const mb = (cell: Cell | undefined): string => (cell?.peak ? ((cell.peak.peakKiB * 1024) / 1e6).toFixed(1) : '-');
  const heap = (cell: Cell | undefined): string =>
    cell?.heap ? `${(cell.heap.heapTotal / 1e6).toFixed(0)} / ${(cell.heap.heapUsed / 1e6).toFixed(0)} / ${(cell.heap.external / 1e6).toFixed(0)}` : '-';
  return renderTable(
    ['scenario', 'volreg peak RSS MB', 'volreg V8 heap total / used / external MB after', 'distribution peak RSS MB'],
    scenarios.map((s) => [s.title, mb(results.get(s.id)?.volreg), heap(results.get(s.id)?.volreg), mb(results.get(s.id)?.distribution)]),
    new Set([1, 2, 3]),
  );
}

/**
 * The servers' CPU over each row's timed part: cores kept busy, and CPU per unit of work (per
 * MiB, request or tag listed). Unlike a rate, CPU per unit hardly moves with the machine's
 * other load, so its ratio says which server does the work more cheaply even where the rates are
 * noisy; on a machine whose cores the servers share with the benchmark's clients, it also says
 * how far a rate can go.
 */
export function renderCpu(scenarios: Scenario[], results: Results): string {
  const what = (s: Scenario): string => s.unit.replace(/\/s$/, '');
  const perUnit = (s: Scenario, cell: Cell | undefined): number | undefined => {
    if (!cell?.cpu || cell.value === undefined || !Number.isFinite(cell.cpu.cpuMs)) return undefined;
    const work = cell.value * (cell.cpu.wallMs / 1000);
    return work > 0 ? cell.cpu.cpuMs / work : undefined;
  };
  const text = (s: Scenario, ms: number | undefined): string => {
    if (ms === undefined) return '-';
    return what(s) === 'MiB' ? `${ms.toFixed(2)} ms/MiB` : `${(ms * 1000).toFixed(ms * 1000 < 10 ? 1 : 0)} us/${what(s)}`;
  };
  const busy = (cell: Cell | undefined): string => (cell?.cpu && Number.isFinite(cell.cpu.cpuMs) ? (cell.cpu.cpuMs / cell.cpu.wallMs).toFixed(2) : '-');
  const rows = scenarios
    .filter((s) => results.get(s.id)?.volreg?.cpu || results.get(s.id)?.distribution?.cpu)
    .map((s) => {
      const v = results.get(s.id)?.volreg;
      const d = results.get(s.id)?.distribution;
      const pv = perUnit(s, v);
      const pd = perUnit(s, d);
      return [s.title, busy(v), busy(d), text(s, pv), text(s, pd), pv !== undefined && pd !== undefined ? `${(pv / pd).toFixed(2)}x` : '-'];
    });
  return renderTable(['scenario', 'volreg cores busy', 'distribution cores busy', 'volreg CPU per unit', 'distribution CPU per unit', 'ratio v/d (lower: volreg cheaper)'], rows, new Set([1, 2, 3, 4, 5]));
}

export function renderDetails(scenarios: Scenario[], results: Results): string {
  const lines: string[] = [];
  for (const s of scenarios) {
    for (const kind of ['volreg', 'distribution'] as const) {
      const cell = results.get(s.id)?.[kind];
      if (!cell) continue;
      const what = cell.error !== undefined ? `ERROR ${cell.error}` : (cell.detail ?? '');
      lines.push(`  ${s.id.padEnd(15)} ${kind.padEnd(12)} ${what}`);
    }
  }
  return lines.join('\n');
}

/** A machine ceiling (ceilings.ts) as the report needs it. */
export interface CeilingFigure {
  title: string;
  unit: string;
  value: number;
  bounds: readonly string[];
}

/**
 * Each ceiling next to the rows it bounds: where volreg stands against it, and what the row's
 * target would need (its minimum ratio x distribution's figure) against it. A target above the
 * ceiling cannot be met on this machine by any server.
 */
export function renderCeilings(ceilings: CeilingFigure[], rows: Row[], scenarios: Scenario[]): string {
  const table: string[][] = [];
  for (const c of ceilings) {
    for (const id of c.bounds) {
      const row = rows.find((r) => r.id === id);
      const s = scenarios.find((x) => x.id === id);
      if (!row || !s) continue;
      const min = s.compare.kind === 'vs-distribution' ? s.compare.min : undefined;
      const needs = min !== undefined && row.distributionValue !== undefined ? min * row.distributionValue : undefined;
      const of = (v: number | undefined): string => (v === undefined ? 'n/a' : `${(v / c.value).toFixed(2)}x`);
      table.push([
        c.title,
        `${fmtValue(c.value, c.unit)} ${c.unit}`,
        s.title,
        row.volregValue !== undefined ? fmtValue(row.volregValue, s.unit) : 'n/a',
        of(row.volregValue),
        needs !== undefined ? `${fmtValue(needs, s.unit)} (${min}x distribution)` : 'n/a',
        of(needs),
      ]);
    }
  }
  return renderTable(['ceiling', 'figure', 'row it bounds', 'volreg', 'volreg / ceiling', 'target needs', 'needs / ceiling'], table, new Set([1, 3, 4, 6]));
}
