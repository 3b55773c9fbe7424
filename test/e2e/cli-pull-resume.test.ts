import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { steppedClock, type SteppedClock } from '../helpers/stepped-clock.ts';
import { describeTree, makeSampleTree } from '../helpers/tree.ts';

/**
 * `volreg pull` over a connection that breaks mid-download (a proxy's timeout, a flaky link):
 * it goes on from the bytes it has with a Range request to volreg, and restores the same tree
 * as an unbroken pull; through a proxy that drops the Range, it starts over, and gives up once
 * tries get no further, leaving the target as it was. A wall clock stepped while it waits for
 * a registry that does not answer neither ends nor stretches its --timeout.
 */
let server: TestServer;
let work = '';
let src = '';
let cutting: Server;
let cuttingUrl = '';
/**
 * what the proxy does to blob GETs: how many body bytes a reply gets before its connection
 * breaks, whether Range reaches volreg, and how many Range requests it drops unanswered (the
 * first of which calls `onDrop`)
 */
const proxyRules = { cutAfter: Infinity, passRange: true, dropRanges: 0, onDrop: (): unknown => undefined };
const rangesAsked: Array<string | undefined> = [];
const CUT = 1024 * 1024;

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-pull-resume' });
  work = await mkdtemp(join(tmpdir(), 'volreg-pull-resume-'));
  src = join(work, 'src');
  // a 3 MiB random file among small ones: a layer of a few MiB, cut in several places
  await makeSampleTree(src);
  const upstream = new URL(server.url);
  cutting = createServer((req, res) => {
    const blob = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
    const headers = { ...req.headers };
    if (blob) rangesAsked.push(headers.range);
    if (blob && headers.range !== undefined && proxyRules.dropRanges > 0) {
      proxyRules.dropRanges--;
      void Promise.resolve(proxyRules.onDrop()).then(() => req.socket.destroy());
      proxyRules.onDrop = () => undefined;
      return;
    }
    if (blob && !proxyRules.passRange) delete headers.range;
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      let left = blob ? proxyRules.cutAfter : Infinity;
      up.on('data', (chunk: Buffer) => {
        if (chunk.length < left) {
          left -= chunk.length;
          res.write(chunk);
          return;
        }
        up.destroy();
        res.write(chunk.subarray(0, left), () => res.destroy());
      });
      up.on('end', () => res.end());
    });
    req.pipe(out);
  });
  await new Promise<void>((resolve) => cutting.listen(0, '127.0.0.1', resolve));
  cuttingUrl = `http://127.0.0.1:${(cutting.address() as AddressInfo).port}`;
  const push = await runVolreg(['push', '--compression', 'none', src, 'resume/vol:v1'], { url: server.url, cwd: work });
  if (push.code !== 0) throw new Error(`push: ${push.stderr}`);
});

test.after.always(async () => {
  cutting?.closeAllConnections();
  await new Promise((resolve) => cutting?.close(resolve));
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

/** `volreg pull` of the snapshot through the proxy, under `rules`, into `work/<dir>`; the Ranges it asks are in rangesAsked. */
async function pullThroughProxy(
  rules: Partial<typeof proxyRules>,
  dir: string,
  opts: { args?: string[]; env?: Record<string, string> } = {},
): Promise<{ target: string; run: Awaited<ReturnType<typeof runVolreg>> }> {
  Object.assign(proxyRules, { cutAfter: Infinity, passRange: true, dropRanges: 0, onDrop: () => undefined }, rules);
  rangesAsked.length = 0;
  const target = join(work, dir);
  return { target, run: await runVolreg(['pull', ...(opts.args ?? []), 'resume/vol:v1', target], { url: cuttingUrl, cwd: work, env: opts.env }) };
}

test.serial('a pull whose connection breaks every MiB goes on from where it broke and restores the tree exactly', async (t) => {
  const { target, run } = await pullThroughProxy({ cutAfter: CUT, passRange: true }, 'resumed');
  t.is(run.code, 0, run.stderr);
  t.deepEqual(await describeTree(target), await describeTree(src));
  // the first request whole, each later one from where the one before broke off
  t.is(rangesAsked[0], undefined);
  t.true(rangesAsked.length >= 4, JSON.stringify(rangesAsked));
  const starts = rangesAsked.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? '')?.[1]));
  t.true(starts.every((s, i) => s > 0 && s <= CUT * (i + 1) && (i === 0 || s > starts[i - 1]!)), JSON.stringify(rangesAsked));
  const warnings = run.stderr.split('\n').filter(Boolean);
  t.is(warnings.length, rangesAsked.length - 1, run.stderr);
  for (const w of warnings) t.regex(w, /^volreg pull: warning: the download of resume\/vol:v1 broke off after \d+ of \d+ bytes \(.+\); resuming from there$/);
});

test.serial('through a proxy that drops Range, a pull breaking at the same place every time gives up and leaves the target as it was (exit 1)', async (t) => {
  const { target, run } = await pullThroughProxy({ cutAfter: CUT, passRange: false }, 'given-up');
  t.is(run.code, 1, run.stderr);
  const failure = /\nvolreg pull: the connection to the registry broke during the download, after (\d+) of \d+ bytes \(.+\)\n$/.exec(run.stderr);
  t.truthy(failure, run.stderr);
  // the furthest any try got (what reaches the file of a reply cut at CUT varies a little)
  t.true(Number(failure?.[1]) > 0 && Number(failure?.[1]) <= CUT, run.stderr);
  // every reply started over at byte 0; tries went on while one got further, then two more, then no more
  t.true(rangesAsked.length >= 3 && rangesAsked.length <= 12, JSON.stringify(rangesAsked));
  t.deepEqual(await readdir(target), [], 'nothing extracted, no download left behind');
});

test.serial('a wall clock stepped forward while a broken pull waits for the registry to answer again does not end its --timeout', async (t) => {
  const clock: SteppedClock = await steppedClock();
  t.teardown(() => clock.close());
  // the resumption goes unanswered 4 times (the CLI's own 2 retries, then a wait of its outage),
  // and the pull's clock is stepped a day forward as the first goes unanswered
  const { target, run } = await pullThroughProxy({ cutAfter: CUT, dropRanges: 4, onDrop: () => clock.step('+1d') }, 'stepped', {
    args: ['--timeout', '60'],
    env: clock.env,
  });
  t.is(run.code, 0, run.stderr);
  t.regex(run.stderr, /the registry does not answer: .*; trying again for up to 60 s/);
  t.deepEqual(await describeTree(target), await describeTree(src));
});
