/**
 * Command-line options of the benchmark. Sizes accept plain bytes or a KiB/MiB/GiB suffix.
 */
import os from 'node:os';
import path from 'node:path';

export type ServerKind = 'volreg' | 'distribution';

export interface BenchOptions {
  /** size of each large blob and of the tar.gz */
  size: number;
  chunkSize: number;
  manifests: number;
  manifestClients: number;
  tags: number;
  tagPageSize: number;
  heads: number;
  headClients: number;
  /** the run stops starting scenarios after this and aborts the one running */
  totalTimeoutMs: number;
  scenarioTimeoutMs: number;
  servers: readonly ServerKind[];
  cacheDir: string;
  jsonOut: string | undefined;
  keepData: boolean;
  quick: boolean;
  /** run only these scenario ids (all when undefined) */
  scenarios: readonly string[] | undefined;
  /** rounds of each repeatable scenario (best kept) */
  rounds: number;
  /** run volreg under --cpu-prof, writing the profile here */
  cpuProfDir: string | undefined;
  /** extra node options for volreg (e.g. V8 heap flags to compare) */
  nodeFlags: readonly string[];
  /** run volreg's database as its own process, so volreg's RSS is the service alone */
  separateDb: boolean;
  /** measure the machine ceilings (durable write, bare node:http) after the scenarios */
  ceilings: boolean;
}

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, KIB: 1024, M: 1024 ** 2, MIB: 1024 ** 2, G: 1024 ** 3, GIB: 1024 ** 3 };

export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const factor = m ? UNITS[m[2].toUpperCase()] : undefined;
  if (!m || factor === undefined) throw new Error(`not a size: ${JSON.stringify(text)} (use e.g. 1GiB, 256MiB, 4096)`);
  const bytes = Math.round(Number(m[1]) * factor);
  if (bytes < 1024 * 1024) throw new Error(`size too small: ${text} (at least 1MiB)`);
  return bytes;
}

function positiveInt(flag: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag} needs a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

export const USAGE = `usage: npm run bench -- [options]

  --size SIZE            blob and tar.gz size (default 1GiB; e.g. 256MiB)
  --quick                smoke run: 64MiB blobs, 200 manifests, 1000 tags, 500 HEADs
  --chunk SIZE           PATCH chunk size for the chunked upload (default 8MiB)
  --manifests N          manifest PUTs and GETs (default 2000), 16 clients
  --tags N               tags to list in pages of 100 (default 10000)
  --heads N              blob HEADs (default 5000), 32 clients
  --rounds N             rounds of the repeatable scenarios (downloads, manifest PUT and
                         GET, HEADs, tags/list), alternating which server goes first;
                         the best round counts (default 2, 1 with --quick)
  --only volreg|distribution   run one server only
  --timeout MINUTES      whole-run budget (default 30); scenarios past it are skipped
  --scenario-timeout S   per scenario and server (default 300)
  --cache-dir DIR        where generated test data is kept between runs
                         (default $TMPDIR/volreg-bench-cache)
  --json FILE            also write the results as JSON
  --keep-data            keep the servers' temporary data directories
  --scenarios A,B        run only these scenario ids (see the details list of a run)
  --cpu-prof DIR         run volreg under node --cpu-prof, write the profile to DIR and
                         print where its CPU time went (self time by function and file);
                         with --separate-db, the engine process's too
  --node-flags "F ..."   start volreg with these extra node options (e.g. V8 heap flags)
  --separate-db          run volreg's embedded engine as its own process (volreg db), so
                         the RSS figures are the service alone; the engine's peak is printed
  --no-ceilings          skip the machine ceilings measured after the scenarios (a durable
                         write of the blob size, a bare node:http server under the same
                         client), which say what any server could reach here
  -h, --help             this text
`;

export function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  const opts: BenchOptions = {
    size: 1024 ** 3,
    chunkSize: 8 * 1024 ** 2,
    manifests: 2000,
    manifestClients: 16,
    tags: 10_000,
    tagPageSize: 100,
    heads: 5000,
    headClients: 32,
    totalTimeoutMs: 30 * 60_000,
    scenarioTimeoutMs: 300_000,
    servers: ['volreg', 'distribution'],
    cacheDir: path.join(os.tmpdir(), 'volreg-bench-cache'),
    jsonOut: undefined,
    keepData: false,
    quick: false,
    scenarios: undefined,
    cpuProfDir: undefined,
    nodeFlags: [],
    separateDb: false,
    ceilings: true,
    rounds: 2,
  };
  const explicit = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '-h':
      case '--help':
        return 'help';
      case '--quick':
        opts.quick = true;
        break;
      case '--size':
        opts.size = parseSize(value());
        explicit.add('size');
        break;
      case '--chunk':
        opts.chunkSize = parseSize(value());
        break;
      case '--manifests':
        opts.manifests = positiveInt(flag, value());
        explicit.add('manifests');
        break;
      case '--tags':
        opts.tags = positiveInt(flag, value());
        explicit.add('tags');
        break;
      case '--heads':
        opts.heads = positiveInt(flag, value());
        explicit.add('heads');
        break;
      case '--only': {
        const v = value();
        if (v !== 'volreg' && v !== 'distribution') throw new Error(`--only takes volreg or distribution, got ${v}`);
        opts.servers = [v];
        break;
      }
      case '--timeout':
        opts.totalTimeoutMs = positiveInt(flag, value()) * 60_000;
        break;
      case '--scenario-timeout':
        opts.scenarioTimeoutMs = positiveInt(flag, value()) * 1000;
        break;
      case '--cache-dir':
        opts.cacheDir = path.resolve(value());
        break;
      case '--json':
        opts.jsonOut = path.resolve(value());
        break;
      case '--keep-data':
        opts.keepData = true;
        break;
      case '--scenarios':
        opts.scenarios = value()
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean);
        break;
      case '--rounds':
        opts.rounds = positiveInt(flag, value());
        explicit.add('rounds');
        break;
      case '--cpu-prof':
        opts.cpuProfDir = path.resolve(value());
        break;
      case '--separate-db':
        opts.separateDb = true;
        break;
      case '--no-ceilings':
        opts.ceilings = false;
        break;
      case '--node-flags':
        opts.nodeFlags = value().split(/\s+/).filter(Boolean);
        break;
      default:
        throw new Error(`unknown option ${flag}\n\n${USAGE}`);
    }
  }
  if (opts.quick) {
    if (!explicit.has('size')) opts.size = 64 * 1024 ** 2;
    if (!explicit.has('manifests')) opts.manifests = 200;
    if (!explicit.has('tags')) opts.tags = 1000;
    if (!explicit.has('heads')) opts.heads = 500;
    if (!explicit.has('rounds')) opts.rounds = 1;
  }
  return opts;
}

export function formatBytes(n: number): string {
  if (n >= 1024 ** 3 && n % 1024 ** 3 === 0) return `${n / 1024 ** 3} GiB`;
  if (n >= 1024 ** 2) return `${+(n / 1024 ** 2).toFixed(1)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}
