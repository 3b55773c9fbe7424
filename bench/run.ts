/**
 * volreg benchmark: starts volreg and (when installed) CNCF distribution on loopback, runs the
 * same scenarios against both and prints each figure with the ratio and the issue's target.
 * See bench/README.md. Bounded in time: a whole-run budget and a per-scenario timeout.
 */
import { execFileSync } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { measureBareHttp, measureDurableWrite, type Ceiling } from './lib/ceilings.ts';
import { loadProfile, summariseProfile } from './lib/cpu-profile.ts';
import { prepareData, type DataFile } from './lib/data.ts';
import { formatBytes, parseOptions, USAGE, type BenchOptions, type ServerKind } from './lib/options.ts';
import { buildRows, renderCeilings, renderCpu, renderDetails, renderMain, renderRss, type Cell, type HeapFigures, type Results, type ServerSummary } from './lib/report.ts';
import { RssProbe } from './lib/rss.ts';
import { processCpuMs, type CpuSpent } from './lib/cpu-time.ts';
import { buildScenarios, newTargetState, prepareManifestSets, type RunContext, type Scenario, type Target } from './lib/scenarios.ts';
import { distributionBinary, startDistribution, startVolreg, type RunningServer } from './lib/servers.ts';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');

function log(msg: string): void {
  process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    return `${err.message}${cause}`.replace(/\s+/g, ' ');
  }
  return String(err);
}

function loadText(): string {
  return os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
}

function toolVersion(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0].trim();
  } catch {
    return 'not found';
  }
}

/** volreg's own V8 heap figures from its Prometheus /metrics (prom-client default metrics). */
async function heapFigures(base: URL): Promise<HeapFigures | undefined> {
  try {
    const res = await fetch(new URL('/metrics', base), { signal: AbortSignal.timeout(3000) });
    const text = await res.text();
    if (res.status !== 200) return undefined;
    const metric = (name: string): number | undefined => {
      const m = new RegExp(`^\\w*${name} (\\d+(?:\\.\\d+)?(?:e\\+?\\d+)?)$`, 'm').exec(text);
      return m ? Number(m[1]) : undefined;
    };
    const heapTotal = metric('nodejs_heap_size_total_bytes');
    const heapUsed = metric('nodejs_heap_size_used_bytes');
    const external = metric('nodejs_external_memory_bytes');
    if (heapTotal === undefined || heapUsed === undefined || external === undefined) return undefined;
    return { heapTotal, heapUsed, external };
  } catch {
    return undefined;
  }
}

interface Live {
  server: RunningServer;
  probe: RssProbe;
  target: Target;
}

async function startServers(opts: BenchOptions, tmpRoot: string, summaries: ServerSummary[]): Promise<Map<ServerKind, Live>> {
  const live = new Map<ServerKind, Live>();
  for (const kind of opts.servers) {
    const summary: ServerSummary = { kind, version: kind };
    summaries.push(summary);
    try {
      let server: RunningServer;
      if (kind === 'volreg') {
        if (opts.cpuProfDir) await fs.mkdir(opts.cpuProfDir, { recursive: true });
        server = await startVolreg(REPO_ROOT, tmpRoot, { cpuProfDir: opts.cpuProfDir, nodeFlags: opts.nodeFlags, separateDb: opts.separateDb });
      } else {
        const binary = await distributionBinary();
        if (!binary) throw new Error('docker-registry is not installed (apt-get install -y docker-registry)');
        server = await startDistribution(binary, tmpRoot);
      }
      summary.version = server.version;
      const probe = new RssProbe(server.pid);
      summary.startKiB = probe.currentKiB();
      live.set(kind, { server, probe, target: { server, state: newTargetState() } });
      log(`${kind} listening on ${server.base.href} (pid ${server.pid}, data in ${server.dataDir})`);
    } catch (err) {
      summary.unavailable = errorText(err);
      log(`${kind} unavailable: ${summary.unavailable}`);
    }
  }
  return live;
}

async function main(): Promise<number> {
  let opts: BenchOptions | 'help';
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${errorText(err)}\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const runStarted = performance.now();
  const cpus = os.cpus();
  const facts = [
    `machine: ${cpus.length} cores (${cpus[0]?.model.trim() ?? 'unknown cpu'}), ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}`,
    `node ${process.version}; ${toolVersion('curl', ['--version']).split(' ').slice(0, 2).join(' ')}`,
    `load average at start: ${loadText()}${os.loadavg()[0] > cpus.length ? '  (!) busier than its core count: other work competes with the servers' : ''}`,
    `sizes: blobs ${formatBytes(opts.size)}, chunks ${formatBytes(opts.chunkSize)}, ${opts.manifests} manifests @${opts.manifestClients}, ${opts.tags} tags, ${opts.heads} HEADs @${opts.headClients}${opts.quick ? ' (--quick)' : ''}`,
  ];
  for (const f of facts) log(f);

  const data = await prepareData(opts.cacheDir, opts.size, log);
  log(
    data.generatedNow
      ? `test data generated in ${(data.generateMs / 1000).toFixed(1)} s`
      : `test data reused from ${path.dirname(data.blobMono.path)}`,
  );
  log(`tar.gz: ${formatBytes(data.tarV2.size)} compressed, ${formatBytes(data.tarUncompressed)} tar, ${data.tarEntries} entries`);
  const { manifests, putSets, tagManifest, problems } = await prepareManifestSets(opts);
  if (problems.length > 0) {
    for (const p of problems.slice(0, 10)) log(`manifest data problem: ${p}`);
    throw new Error('the generated manifest data is inconsistent; refusing to time it');
  }
  log(`manifest data checked: ${manifests.manifests.length} manifests over ${manifests.blobs.length} blobs, every reference uploaded first`);

  const tmpRoot = await fs.mkdtemp(path.join(os.tmpdir(), 'volreg-bench-'));
  const summaries: ServerSummary[] = [];
  const results: Results = new Map();
  /** volreg's timed windows per scenario, for the --cpu-prof summary */
  const volregWindows = new Map<string, Array<[number, number]>>();
  /** the processes --cpu-prof profiles: the service, and with --separate-db the engine */
  const profiled: Array<{ label: string; pid: number }> = [];
  const scenarios = buildScenarios(opts).filter((s) => !opts.scenarios || opts.scenarios.includes(s.id));
  if (scenarios.length === 0) throw new Error(`no scenario matches --scenarios ${opts.scenarios?.join(',')}`);
  const overall = new AbortController();
  setMaxListeners(0, overall.signal);
  const budget = setTimeout(() => overall.abort(new Error('whole-run time budget spent')), opts.totalTimeoutMs);
  let live = new Map<ServerKind, Live>();
  const ceilings: Ceiling[] = [];
  const ceilingErrors: string[] = [];
  const onSignal = (): void => overall.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    live = await startServers(opts, tmpRoot, summaries);
    const volreg = live.get('volreg')?.server;
    if (volreg) profiled.push({ label: 'volreg', pid: volreg.pid });
    if (volreg?.databasePid !== undefined) profiled.push({ label: 'volreg db (the separate engine process)', pid: volreg.databasePid });
    const runOnce = async (scenario: Scenario, kind: ServerKind, round: number): Promise<Cell> => {
      const summary = summaries.find((s) => s.kind === kind);
      const l = live.get(kind);
      if (!l) return { error: summary?.unavailable ?? 'not started' };
      if (overall.signal.aborted) return { error: `skipped: ${errorText(overall.signal.reason)}` };
      const dead = l.server.exitReason();
      if (dead) return { error: `server ${dead}` };
      const signal = AbortSignal.any([overall.signal, AbortSignal.timeout(opts.scenarioTimeoutMs)]);
      // every in-flight request listens on it (up to 32 at a time)
      setMaxListeners(0, signal);
      const windows = kind === 'volreg' ? (volregWindows.get(scenario.id) ?? []) : [];
      if (kind === 'volreg') volregWindows.set(scenario.id, windows);
      const spent: CpuSpent = { cpuMs: 0, wallMs: 0 };
      const serverCpuMs = (): number | undefined => {
        const own = processCpuMs(l.server.pid);
        const db = l.server.databasePid === undefined ? 0 : processCpuMs(l.server.databasePid);
        return own === undefined || db === undefined ? undefined : own + db;
      };
      const ctx: RunContext = { opts, data, manifests, putSets, tagManifest, signal, windows, round, serverCpuMs, spent };
      // start every measurement with no dirty pages left by the previous one, so one
      // server's writeback does not land in the other's row
      execFileSync('sync');
      log(`${scenario.id}${round > 0 ? ` (round ${round + 1})` : ''} on ${kind} ... (load ${loadText()})`);
      const mark = l.server.outputMark();
      const measured = await l.probe.measure(() => scenario.run(l.target, ctx));
      const heap = kind === 'volreg' ? await heapFigures(l.server.base) : undefined;
      if ('result' in measured) {
        log(`  ${measured.result.value.toFixed(1)} ${scenario.unit} (${measured.result.detail}), peak RSS ${(measured.peak.peakKiB / 1024).toFixed(1)} MiB`);
        return { value: measured.result.value, detail: measured.result.detail, peak: measured.peak, heap, ...(spent.wallMs > 0 ? { cpu: spent } : {}) };
      }
      let msg = signal.aborted ? `timeout/abort: ${errorText(signal.reason)}; ${errorText(measured.error)}` : errorText(measured.error);
      const died = l.server.exitReason();
      if (died) msg = `server ${died}: ${msg}`;
      // what the server logged meanwhile (warn level and up) usually says why
      const said = l.server.linesSince(mark).slice(-3);
      if (said.length > 0) msg += ` | server log: ${said.map((x) => x.slice(0, 600)).join(' | ')}`;
      log(`  failed: ${msg}`);
      return { error: msg, peak: measured.peak, heap };
    };

    for (const scenario of scenarios) {
      const row: Partial<Record<ServerKind, Cell>> = {};
      results.set(scenario.id, row);
      const kinds = (['distribution', 'volreg'] as const).filter((k) => opts.servers.includes(k) && scenario.servers.includes(k));
      const rounds = scenario.repeatable ? opts.rounds : 1;
      const tries = new Map<ServerKind, Cell[]>(kinds.map((k) => [k, []]));
      for (let round = 0; round < rounds; round++) {
        // alternate which server goes first, so neither always follows the other's writeback
        const order = round % 2 === 0 ? kinds : [...kinds].reverse();
        for (const kind of order) tries.get(kind)?.push(await runOnce(scenario, kind, round));
      }
      for (const [kind, cells] of tries) row[kind] = bestOf(cells, scenario.higherIsBetter, scenario.unit);
    }
    if (opts.ceilings) await measureCeilings(opts, scenarios, data, manifests.manifests, tmpRoot, overall.signal, ceilings, ceilingErrors);
  } finally {
    clearTimeout(budget);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const [kind, l] of live) {
      l.probe.settle();
      const summary = summaries.find((s) => s.kind === kind);
      if (summary) {
        summary.peakKiB = l.probe.overallPeakKiB;
        summary.childrenPeakKiB = l.probe.overallChildrenPeakKiB;
        summary.rssMethod = l.probe.resetWorks ? 'VmHWM, reset per scenario via clear_refs' : 'VmRSS sampled every 50 ms';
        summary.databasePeakKiB = l.server.databasePeakKiB?.();
      }
      await l.server.stop();
    }
    if (!opts.keepData) await fs.rm(tmpRoot, { recursive: true, force: true });
    else log(`server data kept in ${tmpRoot}`);
  }

  const rows = buildRows(scenarios, results, summaries);
  const out: string[] = [];
  out.push('');
  out.push('== volreg benchmark ==');
  out.push(...facts);
  for (const s of summaries) out.push(`${s.kind}: ${s.version}${s.unavailable ? ` (unavailable: ${s.unavailable})` : ''}`);
  out.push(
    'targets (issues 4, 5): uploads >= 3x distribution, download >= 1x, metadata operations 2-3x,',
    `  volreg peak RSS < 150 MB whatever the blob size, /api/v1 tar.gz PUT >= 80% of volreg's /v2 upload of the same bytes`,
    '',
    renderMain(rows),
    '',
    'ratio v/d = volreg / distribution, so for "higher is better" rows above 1 favours volreg, for "lower" rows below 1 does;',
    '(*) = volreg / volreg\'s own row named in the target column, not / distribution.',
    '',
    'peak RSS of the server process per scenario (MB = 10^6 bytes; volreg runs its embedded MongoDB engine on a thread of its own process, so its figure includes the database):',
    renderRss(scenarios, results),
  );
  for (const s of summaries) {
    if (s.peakKiB !== undefined) {
      out.push(
        `  ${s.kind}: ${s.rssMethod}; RSS right after start ${(((s.startKiB ?? 0) * 1.024) / 1000).toFixed(1)} MB; child processes peak ${(((s.childrenPeakKiB ?? 0) * 1.024) / 1000).toFixed(1)} MB (not included above)${s.databasePeakKiB !== undefined ? `; its database ran as a separate process (--separate-db), peak RSS ${((s.databasePeakKiB * 1.024) / 1000).toFixed(1)} MB over the run (not included above)` : ''}`,
      );
    }
  }
  out.push(
    '',
    `CPU of the server process over each row's timed part (user + system, all threads; volreg's includes its embedded engine${opts.separateDb ? ' and, with --separate-db, the engine process' : ''}; the clients' CPU is not counted; ${os.cpus().length} cores):`,
    renderCpu(scenarios, results),
  );
  if (ceilings.length > 0 || ceilingErrors.length > 0) {
    out.push('', 'ceilings of this machine, measured by the harness in the same run with no registry involved (bench/lib/ceilings.ts):');
    if (ceilings.length > 0) out.push(renderCeilings(ceilings.map((c) => ({ ...c, value: c.value })), rows, scenarios));
    for (const c of ceilings) out.push(`  ${c.id.padEnd(15)} ${c.detail}`);
    for (const e of ceilingErrors) out.push(`  ceiling not measured: ${e}`);
  }
  out.push('', 'details (latencies are per request, client side):', renderDetails(scenarios, results));
  out.push('', `run took ${((performance.now() - runStarted) / 1000).toFixed(0)} s; load average at the end: ${loadText()}`);
  if (opts.cpuProfDir) {
    for (const { label, pid } of profiled) {
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread (tsx's
      // loader runs in a worker thread and writes its own profile)
      const profiles = (await fs.readdir(opts.cpuProfDir)).filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${pid}.0.`));
      const newest = await newestFile(opts.cpuProfDir, profiles);
      if (!newest) {
        out.push('', `no .cpuprofile of ${label} (pid ${pid}) in ${opts.cpuProfDir} (did it exit cleanly?)`);
        continue;
      }
      const profile = await loadProfile(newest);
      out.push('', `${label} CPU profile ${newest}, summarised over each scenario's timed part only:`);
      for (const [id, windows] of volregWindows) {
        if (windows.length > 0) out.push('', summariseProfile(profile, `== ${id}`, REPO_ROOT, windows, 20));
      }
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);

  if (opts.jsonOut) {
    const json = { facts, servers: summaries, rows, ceilings, results: Object.fromEntries(results), options: opts };
    await fs.writeFile(opts.jsonOut, JSON.stringify(json, null, 2));
    log(`results written to ${opts.jsonOut}`);
  }
  return 0;
}

/** The machine ceilings that bound the scenarios run (ceilings.ts); failures are reported, not fatal. */
async function measureCeilings(
  opts: BenchOptions,
  scenarios: Scenario[],
  data: { blobMono: DataFile },
  manifests: ReadonlyArray<{ bytes: Buffer }>,
  dir: string,
  signal: AbortSignal,
  into: Ceiling[],
  errors: string[],
): Promise<void> {
  const ran = (ids: readonly string[]): boolean => scenarios.some((s) => ids.includes(s.id));
  const rounds = Math.max(1, opts.rounds);
  try {
    if (ran(['upload-mono', 'upload-chunked', 'targz-v2'])) {
      execFileSync('sync');
      log(`ceiling: durable write of ${formatBytes(data.blobMono.size)} ... (load ${loadText()})`);
      into.push(await measureDurableWrite(data.blobMono, dir, rounds, signal));
    }
    if (ran(['manifest-get', 'blob-head'])) {
      log(`ceiling: bare node:http server ... (load ${loadText()})`);
      const bodyBytes = Math.round(manifests.reduce((n, m) => n + m.bytes.length, 0) / Math.max(1, manifests.length));
      for (const roundTrips of [0, 1] as const) {
        const plan = { getCount: opts.manifests, getClients: opts.manifestClients, bodyBytes, headCount: opts.heads, headClients: opts.headClients, roundTrips };
        into.push(...(await measureBareHttp(REPO_ROOT, plan, rounds, signal)));
      }
    }
  } catch (err) {
    errors.push(errorText(err));
  }
}

/** The best round of a scenario (by its figure), with every round's figure in its detail. */
function bestOf(cells: Cell[], higherIsBetter: boolean, unit: string): Cell {
  const ok = cells.filter((c) => c.value !== undefined);
  const peakKiB = Math.max(0, ...cells.map((c) => c.peak?.peakKiB ?? 0));
  const last = cells[cells.length - 1];
  if (ok.length === 0) return last ?? { error: 'not run' };
  const best = ok.reduce((a, b) => ((higherIsBetter ? (b.value ?? 0) > (a.value ?? 0) : (b.value ?? 0) < (a.value ?? 0)) ? b : a));
  if (cells.length === 1) return best;
  const figures = cells.map((c) => (c.value !== undefined ? c.value.toFixed(1) : 'error')).join(', ');
  const failed = cells.find((c) => c.error !== undefined);
  return {
    ...best,
    detail: `${best.detail ?? ''}; best of ${cells.length} rounds: ${figures} ${unit}${failed ? ` (a round failed: ${failed.error})` : ''}`,
    peak: best.peak ? { ...best.peak, peakKiB } : undefined,
    heap: last?.heap ?? best.heap,
  };
}

async function newestFile(dir: string, names: string[]): Promise<string | undefined> {
  let best: { file: string; mtime: number } | undefined;
  for (const name of names) {
    const file = path.join(dir, name);
    const { mtimeMs } = await fs.stat(file);
    if (!best || mtimeMs > best.mtime) best = { file, mtime: mtimeMs };
  }
  return best?.file;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
