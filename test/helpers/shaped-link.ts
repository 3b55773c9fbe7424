import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A slow link between this machine and a host of its own: a network namespace (the host)
 * joined to this one by a veth pair, each end shaped with tbf to `rate` (with a queue of
 * `queueMs`, which a full link turns into latency as a real one does), and iptables in the
 * namespace to lose packets at random, stall the link (every packet dropped, silently) or take
 * its interface down (no route: connections fail at once). Servers listen on `serverAddress`;
 * clients run in the namespace through `prefix` (`ip netns exec NAME ...`).
 *
 * Needs root, iproute2 and iptables (`.ci/run` installs them). `close()` removes the namespace
 * and the veth pair; a link left by a test process that died is removed by the next one opened.
 */
export interface ShapedLink {
  /** the address of this machine's end: what a server listens on */
  serverAddress: string;
  /** the address of the namespace's end: what the server sees clients come from */
  clientAddress: string;
  /** a command run in the namespace is this plus its own argv */
  prefix: string[];
  /** drops every packet both ways, silently (a link that stalls), until resume() */
  stall(): Promise<void>;
  resume(): Promise<void>;
  /** takes the namespace's interface down (no route to the server) until up() */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

export interface ShapedLinkOptions {
  /** tc's rate, e.g. '8mbit' */
  rate: string;
  /** queue length, in ms at `rate` */
  queueMs?: number;
  /** the share of packets lost each way, 0 to 1 */
  loss?: number;
}

const NS_PREFIX = 'volreg-link-';

export async function openShapedLink(opts: ShapedLinkOptions): Promise<ShapedLink> {
  await removeOrphans();
  const ns = `${NS_PREFIX}${process.pid}`;
  const host = `vl${process.pid}h`;
  const peer = `vl${process.pid}c`;
  const [serverAddress, clientAddress] = await freeSubnet();
  const inNs = (...argv: string[]) => run('ip', ['netns', 'exec', ns, ...argv]);
  const tbf = ['tbf', 'rate', opts.rate, 'burst', '32kb', 'latency', `${opts.queueMs ?? 300}ms`];
  try {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', peer]);
    await run('ip', ['link', 'set', peer, 'netns', ns]);
    await run('ip', ['addr', 'add', `${serverAddress}/30`, 'dev', host]);
    await run('ip', ['link', 'set', host, 'up']);
    await inNs('ip', 'addr', 'add', `${clientAddress}/30`, 'dev', peer);
    await inNs('ip', 'link', 'set', peer, 'up');
    await inNs('ip', 'link', 'set', 'lo', 'up');
    await run('tc', ['qdisc', 'add', 'dev', host, 'root', ...tbf]);
    await inNs('tc', 'qdisc', 'add', 'dev', peer, 'root', ...tbf);
    if (opts.loss) {
      for (const [chain, dir] of [['INPUT', '-i'], ['OUTPUT', '-o']] as const) {
        await inNs('iptables', '-A', chain, dir, peer, '-m', 'statistic', '--mode', 'random', '--probability', String(opts.loss), '-j', 'DROP');
      }
    }
  } catch (err) {
    await removeLink(ns, host);
    throw err;
  }
  const dropAll = (op: '-I' | '-D') => Promise.all([inNs('iptables', op, 'INPUT', '-i', peer, '-j', 'DROP'), inNs('iptables', op, 'OUTPUT', '-o', peer, '-j', 'DROP')]);
  return {
    serverAddress,
    clientAddress,
    prefix: ['ip', 'netns', 'exec', ns],
    stall: async () => void (await dropAll('-I')),
    resume: async () => void (await dropAll('-D')),
    down: async () => void (await inNs('ip', 'link', 'set', peer, 'down')),
    // the kernel puts the subnet's route back itself once the interface is up
    up: async () => void (await inNs('ip', 'link', 'set', peer, 'up')),
    close: () => removeLink(ns, host),
  };
}

async function removeLink(ns: string, host: string): Promise<void> {
  await run('ip', ['link', 'del', host]).catch(() => undefined);
  await run('ip', ['netns', 'del', ns]).catch(() => undefined);
}

/** links whose test process is gone (killed before its teardown) */
async function removeOrphans(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const line of stdout.split('\n')) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)\\b`).exec(line);
    if (m && !existsSync(`/proc/${m[1]}`)) await removeLink(`${NS_PREFIX}${m[1]}`, `vl${m[1]}h`);
  }
}

/** a /30 in 10.213.0.0/16 that no interface here uses: [this end, the namespace's end] */
async function freeSubnet(): Promise<[string, string]> {
  const { stdout } = await run('ip', ['-4', '-o', 'addr', 'show']);
  for (let i = process.pid % 16384, n = 0; n < 16384; i = (i + 1) % 16384, n++) {
    const [server, client] = [1, 2].map((k) => `10.213.${i >> 6}.${(i & 63) * 4 + k}`) as [string, string];
    if (!stdout.includes(` ${server}/`) && !stdout.includes(` ${client}/`)) return [server, client];
  }
  throw new Error('no free /30 in 10.213.0.0/16');
}
