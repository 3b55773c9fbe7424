import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';
import { assertRoot } from '../helpers/root.ts';
import { startTestServer, VOLREG_BIN, type TestServer } from '../helpers/server.ts';
import { openShapedLink, type ShapedLink } from '../helpers/shaped-link.ts';
import { describeTree, makeSampleTree } from '../helpers/tree.ts';

/**
 * A host on a slow WAN link (8 Mbit/s each way, a little loss, a 300 ms queue) backing up to
 * volreg and restoring from it with the real clients, while the link stalls (packets dropped,
 * silently) or goes down (no route) for a while: stalls shorter than the timeouts are only a
 * wait; longer ones fail with exit 1 and leave nothing behind on the registry and the target of
 * a pull as it was; a pull whose link comes back within --timeout of its break resumes and
 * restores the exact tree. The registry closes connections idle for 4 s, so every case takes
 * seconds.
 */
const IDLE = 4;
const LARGE = 6 * 1024 * 1024;
let link: ShapedLink;
let server: TestServer;
let work = '';
let src = '';

test.before(async (t) => {
  assertRoot(t, 'it makes a network namespace and shapes its link');
  link = await openShapedLink({ rate: '8mbit', loss: 0.002 });
  server = await startTestServer({
    label: 'e2e-slow-link',
    env: { VOLREG_ADDR: `${link.serverAddress}:0`, VOLREG_CLIENT_IDLE_TIMEOUT: String(IDLE) },
  });
  work = await mkdtemp(join(tmpdir(), 'volreg-slow-link-'));
  src = join(work, 'src');
  await makeSampleTree(src, LARGE);
  // pushed from this machine's end, unshaped: the fixture the pulls fetch
  const push = await runVolreg(['push', '--compression', 'none', src, 'wan/vol:base'], { url: server.url, cwd: work });
  if (push.code !== 0) throw new Error(`push: ${push.stderr}`);
});

test.after.always(async () => {
  await server?.close();
  await link?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** the CLI on the far end of the link */
function remote(args: string[]): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work, prefix: link.prefix });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** resolves once a pull into `target` has downloaded `bytes` (its partial download file) */
async function downloaded(target: string, bytes: number): Promise<void> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(100)) {
    const work = (await readdir(target).catch(() => [])).find((n) => n.startsWith('.volreg-'));
    const size = work ? await stat(join(target, work, 'download')).then((s) => s.size, () => 0) : 0;
    if (size >= bytes) return;
  }
  throw new Error(`the pull into ${target} never got ${bytes} bytes`);
}

/** resolves once an upload session on the server holds `bytes` */
async function uploaded(bytes: number): Promise<void> {
  const uploads = join(server.dataDir, 'uploads');
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(100)) {
    for (const id of await readdir(uploads).catch(() => [])) {
      if ((await stat(join(uploads, id, 'data')).then((s) => s.size, () => 0)) >= bytes) return;
    }
  }
  throw new Error(`no upload session got ${bytes} bytes`);
}

/** the blob files on the server's disk */
async function blobFiles(): Promise<string[]> {
  const root = join(server.dataDir, 'blobs');
  return (await readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isFile() && e.name !== 'store-id').map((e) => join(e.parentPath, e.name));
}

/** nothing of a failed push is visible: no tag, no upload session on disk, no blob more than `blobsBefore` */
async function assertNothingLeft(t: ExecutionContext, volume: string, tag: string, blobsBefore: string[]): Promise<void> {
  const res = await fetch(`${server.url}/api/v1/volumes/${volume}/tags/${tag}`);
  t.is(res.status, 404, `${volume}:${tag} must not exist`);
  // the session of an aborted upload is removed once its request ends
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await sleep(100)) {
    if ((await readdir(join(server.dataDir, 'uploads')).catch(() => [])).length === 0) break;
  }
  t.deepEqual(await readdir(join(server.dataDir, 'uploads')).catch(() => []), []);
  t.deepEqual((await blobFiles()).sort(), [...blobsBefore].sort());
}

test.serial('a pull whose link goes down for longer than --timeout resumes once it is back, within --timeout of the break, and restores the exact tree', async (t) => {
  const target = join(work, 'resumed');
  await mkdir(target);
  const pull = remote(['pull', '--timeout', '4', 'wan/vol:base', target]);
  await downloaded(target, 1024 * 1024);
  await link.down();
  // silent for 4 s, the break; then no route for 2 s more: tries at +0, +1, +3 s after the break
  await sleep(6000);
  await link.up();
  const run = await pull;
  t.is(run.code, 0, run.stderr);
  t.regex(run.stderr, /broke off after \d+ of \d+ bytes \(nothing came for 4 s\)/);
  t.regex(run.stderr, /the registry does not answer: .*ENETUNREACH.*trying again for up to 4 s/);
  t.deepEqual(await describeTree(target), await describeTree(src));
});

test.serial('a pull whose link stays down past --timeout after the break fails (exit 1) and leaves the target as it was', async (t) => {
  const target = join(work, 'kept');
  await mkdir(target);
  await writeFile(join(target, 'old.txt'), 'what the host had\n');
  const before = await describeTree(target);
  const pull = remote(['pull', '--force', '--timeout', '2', 'wan/vol:base', target]);
  await downloaded(target, 512 * 1024);
  await link.down();
  try {
    const run = await pull;
    t.is(run.code, 1, run.stderr);
    t.regex(run.stderr, /the download broke off after \d+ of \d+ bytes, and the registry did not answer again for 2 s \(--timeout\)/);
  } finally {
    await link.up();
  }
  t.deepEqual(await describeTree(target), before);
  t.deepEqual(await readdir(target), ['old.txt']);
});

test.serial('a pull whose link stalls silently for good fails (exit 1) about twice --timeout after its last byte, the target as it was', async (t) => {
  const target = join(work, 'silent');
  await mkdir(target);
  const pull = remote(['pull', '--timeout', '2', 'wan/vol:base', target]);
  await downloaded(target, 512 * 1024);
  await link.stall();
  const stalledAt = Date.now();
  try {
    const run = await pull;
    const took = Date.now() - stalledAt;
    t.is(run.code, 1, run.stderr);
    t.regex(run.stderr, /broke off after \d+ of \d+ bytes, and the registry did not answer again for 2 s \(--timeout\)/);
    // 2 s of silence make the break; the resumption hangs 2 s more, and no time is left for another
    t.true(took < 6500, `failed ${took} ms after the stall began`);
  } finally {
    await link.resume();
  }
  t.deepEqual(await readdir(target), []);
});

test.serial('a command whose link is silent from the start fails after --timeout, not after the kernel gives up connecting (2 min)', async (t) => {
  await link.stall();
  const started = Date.now();
  try {
    const run = await remote(['ls', '--timeout', '2']);
    t.is(run.code, 1, run.stderr);
    t.regex(run.stderr, /nothing came from the registry for 2 s \(GET \/api\/v1\/volumes\): it is stalled or unreachable/);
    t.true(Date.now() - started < 8000, `took ${Date.now() - started} ms`);
  } finally {
    await link.resume();
  }
});

/**
 * A stall well inside the timeouts: TCP resends what the stall dropped only at its next
 * retransmission, whose interval doubles each time (0.6 s, 1.2 s, 2.4 s... on this link's queue),
 * so after a 2 s stall the bytes could start again more than 4 s after the last ones came.
 */
const SHORT_STALL_MS = (IDLE / 4) * 1000;

test.serial('push and pull go through stalls shorter than the timeouts on both sides', async (t) => {
  const push = remote(['push', '--compression', 'none', '--timeout', String(IDLE), src, 'wan/vol:stalled']);
  await uploaded(1024 * 1024);
  await link.stall();
  await sleep(SHORT_STALL_MS);
  await link.resume();
  const pushed = await push;
  t.is(pushed.code, 0, pushed.stderr);

  const target = join(work, 'stalled');
  await mkdir(target);
  const pull = remote(['pull', '--timeout', String(IDLE), 'wan/vol:stalled', target]);
  await downloaded(target, 1024 * 1024);
  await link.stall();
  await sleep(SHORT_STALL_MS);
  await link.resume();
  const pulled = await pull;
  t.is(pulled.code, 0, pulled.stderr);
  t.notRegex(pulled.stderr, /broke off/, 'a stall within the timeouts breaks nothing');
  t.deepEqual(await describeTree(target), await describeTree(src));
});

test.serial('a push stalled past the registry\'s client idle timeout, or past its own --timeout, fails (exit 1) and stores nothing', async (t) => {
  const blobsBefore = await blobFiles();
  // the registry gives up first: the client hears of it when the link is back
  const cut = remote(['push', '--compression', 'none', '--timeout', '60', src, 'wan/vol:cut']);
  await uploaded(1024 * 1024);
  await link.stall();
  await sleep((IDLE + 3) * 1000);
  await link.resume();
  const cutRun = await cut;
  t.is(cutRun.code, 1, cutRun.stderr);
  t.regex(cutRun.stderr, /the registry closed the connection during the upload \(\w+\); nothing was stored/);
  await assertNothingLeft(t, 'wan/vol', 'cut', blobsBefore);

  // the client gives up first
  const gaveUp = remote(['push', '--compression', 'none', '--timeout', '2', src, 'wan/vol:gave-up']);
  await uploaded(1024 * 1024);
  await link.stall();
  try {
    const run = await gaveUp;
    t.is(run.code, 1, run.stderr);
    t.regex(run.stderr, /nothing came from the registry for 2 s/);
  } finally {
    await link.resume();
  }
  await assertNothingLeft(t, 'wan/vol', 'gave-up', blobsBefore);
});

test.serial('curl: a chunked upload through a short stall is stored; a download given up on during a stall (-y/-Y) goes on with -C - to the same digest', async (t) => {
  const tarFile = join(work, 'vol.tar');
  await execFileText('tar', ['-C', src, '-cf', tarFile, '.']);
  const digest = `sha256:${createHash('sha256').update(await readFile(tarFile)).digest('hex')}`;
  const url = `${server.url}/api/v1/volumes/wan/curl/tags/v1`;
  const upload = curl(['-sS', '-f', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Transfer-Encoding: chunked', '-T', '-', url], tarFile);
  await uploaded(1024 * 1024);
  await link.stall();
  await sleep(SHORT_STALL_MS);
  await link.resume();
  t.is((await upload).stdout, '201');

  const out = join(work, 'curl.tar');
  const content = `${server.url}/v2/wan/curl/blobs/${digest}`;
  // curl waits for ever on a silent link unless told how slow is too slow (-y/-Y)
  const first = curl(['-sS', '-f', '-y', '2', '-Y', '1', '-o', out, content]);
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && (await stat(out).then((s) => s.size, () => 0)) < 1024 * 1024; ) await sleep(100);
  await link.stall();
  const broken = await first;
  await link.resume();
  t.is(broken.code, 28, broken.stderr);
  const resumed = await curl(['-sS', '-f', '-y', '2', '-Y', '1', '-C', '-', '-o', out, content]);
  t.is(resumed.code, 0, resumed.stderr);
  t.is(`sha256:${createHash('sha256').update(await readFile(out)).digest('hex')}`, digest);
});

test.serial('on a terminal, the progress of a pull over the link shows the rate the link gives, and a stall as one', async (t) => {
  const target = join(work, 'on-a-terminal');
  await mkdir(target);
  const command = [...link.prefix, 'env', `VOLREG_URL=${server.url}`, process.execPath, VOLREG_BIN, 'pull', '--timeout', '20', 'wan/vol:base', target].join(' ');
  // script(1) gives the CLI a terminal and copies what it draws to its own stdout
  const pull = new Promise<{ code: number; screen: string }>((resolve) => {
    execFile('script', ['-q', '-e', '-c', command, '/dev/null'], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, screen: stdout }),
    );
  });
  await downloaded(target, 2 * 1024 * 1024);
  await link.stall();
  await sleep(IDLE * 1000 + 500);
  await link.resume();
  const { code, screen } = await pull;
  t.is(code, 0, screen);
  const rates = [...screen.matchAll(/pulling wan\/vol:base \[[^\]]*\] \d+% [\d.]+ \w+\/[\d.]+ MiB at ([\d.]+) (B|KiB|MiB)\/s/g)].map(
    (m) => Number(m[1]) * { B: 1, KiB: 1024, MiB: 1024 * 1024 }[m[2] as 'B' | 'KiB' | 'MiB'],
  );
  t.true(rates.length > 5, screen.slice(0, 2000));
  // 8 Mbit/s is 0.95 MiB/s: the bar's rate is the link's, never more
  const top = Math.max(...rates);
  t.true(top > 0.5 * 1024 * 1024 && top < 1.2 * 1024 * 1024, `highest rate shown ${top} B/s`);
  t.regex(screen, /at 0 B\/s, nothing for [3-9] s/);
});

test.serial('skopeo copies a snapshot out of volreg and into another repository over the link, through a short stall', async (t) => {
  const layout = join(work, 'skopeo-layout');
  const home = join(work, 'skopeo-home');
  await mkdir(home, { recursive: true });
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_RUNTIME_DIR: home };
  const registry = new URL(server.url).host;
  const copy = (from: string, to: string) =>
    new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(link.prefix[0]!, [...link.prefix.slice(1), 'skopeo', 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', from, to], { env }, (err, _out, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
  const out = copy(`docker://${registry}/wan/vol:base`, `oci:${layout}:base`);
  await sleep(2000);
  await link.stall();
  await sleep(SHORT_STALL_MS);
  await link.resume();
  const pulled = await out;
  t.is(pulled.code, 0, pulled.stderr);
  const base = (await (await fetch(`${server.url}/api/v1/volumes/wan/vol/tags/base`)).json()) as { layer: { digest: string } };
  const blob = await readFile(join(layout, 'blobs', 'sha256', base.layer.digest.slice('sha256:'.length)));
  t.is(`sha256:${createHash('sha256').update(blob).digest('hex')}`, base.layer.digest);

  const pushed = await copy(`oci:${layout}:base`, `docker://${registry}/wan/copied:base`);
  t.is(pushed.code, 0, pushed.stderr);
  const copied = (await (await fetch(`${server.url}/api/v1/volumes/wan/copied/tags/base`)).json()) as { layer: { digest: string } };
  t.is(copied.layer.digest, base.layer.digest);
});

function curl(args: string[], stdinFile?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [...link.prefix, ...(stdinFile ? ['sh', '-c', `exec curl "$@" < "${stdinFile}"`, 'curl'] : ['curl']), ...args];
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

function execFileText(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => execFile(cmd, args, (err, stdout) => (err ? reject(err) : resolve(stdout))));
}
