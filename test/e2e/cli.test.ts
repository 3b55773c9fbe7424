import { execFile, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, lchown, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { assertRoot } from '../helpers/root.ts';
import { sameBytes } from '../helpers/same-bytes.ts';
import type { Digest } from '../../src/domain/digest.ts';
import { blobPath } from '../../src/storage/paths.ts';
import { startTestServer, VOLREG_BIN, type TestServer } from '../helpers/server.ts';
import { buildTar, describeTree, makeSampleTree } from '../helpers/tree.ts';

/** The volreg host agent as a user runs it: the real binary against a real server. */
let server: TestServer;
let work = '';
let tree = '';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function volreg(args: string[], opts: { input?: Buffer | string; env?: Record<string, string>; shell?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const env = { ...process.env, VOLREG_URL: server.url, ...opts.env };
    const cmd = opts.shell !== undefined ? 'bash' : process.execPath;
    const argv = opts.shell !== undefined ? ['-o', 'pipefail', '-c', `${opts.shell} | "${process.execPath}" "${VOLREG_BIN}" ${args.map((a) => `'${a}'`).join(' ')}`] : [VOLREG_BIN, ...args];
    const child = execFile(cmd, argv, { env, cwd: work, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli' });
  work = await mkdtemp(join(tmpdir(), 'volreg-cli-'));
  tree = join(work, 'tree');
  await mkdir(tree);
  await makeSampleTree(tree);
  // the root's own mode and mtime travel too (the archive's "./" entry)
  await chmod(tree, 0o750);
  await utimes(tree, new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'));
});

async function sameRoot(t: ExecutionContext, out: string): Promise<void> {
  const [a, b] = await Promise.all([lstat(out), lstat(tree)]);
  t.is(a.mode & 0o7777, 0o750, 'root mode');
  t.is(Math.floor(a.mtimeMs / 1000), Math.floor(b.mtimeMs / 1000), 'root mtime');
}

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

for (const compression of ['gzip', 'zstd', 'none'] as const) {
  test(`push a directory (${compression}) and pull it back: same tree; quiet on a non-terminal`, async (t) => {
    const push = await volreg(['push', tree, `cli/rt-${compression}:v1`, '--compression', compression, '--label', 'team=ops', '--host', 'node-7']);
    t.is(push.code, 0, push.stderr);
    t.is(push.stderr, '', 'no progress bar when stderr is not a terminal');
    t.regex(push.stdout, /^pushed cli\/rt-/);
    const out = join(work, `out-${compression}`);
    const pull = await volreg(['pull', `cli/rt-${compression}:v1`, out, '--json']);
    t.is(pull.code, 0, pull.stderr);
    const result = JSON.parse(pull.stdout) as { digest: string; entries: number };
    t.true(result.entries > 5);
    t.deepEqual(await describeTree(out), await describeTree(tree));
    await sameRoot(t, out);
    t.deepEqual((await readdir(out)).filter((n) => n.startsWith('.volreg')), [], 'no staging left');
    const meta = (await (await fetch(`${server.url}/api/v1/volumes/cli/rt-${compression}/tags/v1`)).json()) as { host: string; labels: Record<string, string>; compression: string };
    t.is(meta.host, 'node-7');
    t.deepEqual(meta.labels, { team: 'ops' });
    t.is(meta.compression, compression);
  });
}

test('push - reads an archive from stdin; pull by manifest digest', async (t) => {
  const push = await volreg(['push', '-', 'cli/stdin:v1', '--json'], { shell: `tar -C '${tree}' -czf - .` });
  t.is(push.code, 0, push.stderr);
  const pushed = JSON.parse(push.stdout) as { manifestDigest: string; compression: string };
  t.is(pushed.compression, 'gzip');
  const out = join(work, 'by-digest');
  const pull = await volreg(['pull', `cli/stdin@${pushed.manifestDigest}`, out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await describeTree(out), await describeTree(tree));
});

test('a snapshot pushed through /v2 with a sha512 layer digest pulls, checked against that sha512', async (t) => {
  const name = 'cli/sha512';
  const layer = execFileSync('tar', ['-C', tree, '-czf', '-', '.'], { maxBuffer: 64 * 1024 * 1024 });
  const config = Buffer.from('{}');
  const digestOf = (alg: string, b: Buffer): string => `${alg}:${createHash(alg).update(b).digest('hex')}`;
  for (const [bytes, digest] of [
    [config, digestOf('sha256', config)],
    [layer, digestOf('sha512', layer)],
  ] as const) {
    const r = await fetch(`${server.url}/v2/${name}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: new Uint8Array(bytes) });
    t.is(r.status, 201);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.volreg.volume.v1',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf('sha256', config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf('sha512', layer), size: layer.length }],
  });
  const m = await fetch(`${server.url}/v2/${name}/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  t.is(m.status, 201);
  const out = join(work, 'sha512-out');
  const pull = await volreg(['pull', `${name}:v1`, out, '--json']);
  t.is(pull.code, 0, pull.stderr);
  t.is((JSON.parse(pull.stdout) as { digest: string }).digest, digestOf('sha512', layer));
  t.deepEqual(await describeTree(out), await describeTree(tree));
});

// ---- modes, mtimes and owners a ustar header can not hold ----------------------------------------

interface Attributes {
  mode: number;
  uid: number;
  gid: number;
  /** whole seconds, or milliseconds when compared with { ms: true } */
  mtime: number;
}

/** Every entry's (and the root's, as '') mode, owner and mtime, as lstat sees them. */
async function attributesOf(root: string, opts: { ms?: boolean } = {}): Promise<Record<string, Attributes>> {
  const out: Record<string, Attributes> = {};
  for (const rel of ['', ...(await readdir(root, { recursive: true })).map(String).sort()]) {
    const st = await lstat(join(root, rel));
    out[rel] = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: opts.ms ? st.mtimeMs : Math.floor(st.mtimeMs / 1000) };
  }
  return out;
}

/** What GNU tar itself extracts from `archive` (as root: owners and modes kept). */
function gnuTarExtract(archive: Buffer, into: string): void {
  execFileSync('tar', ['--numeric-owner', '-xpf', '-', '-C', into], { input: archive, stdio: ['pipe', 'ignore', 'ignore'] });
}

const at = (iso: string): Date => new Date(iso);

test('push keeps modes 000, mtimes before 1970 and after 2038, owners above 262143: pull and GNU tar restore them', async (t) => {
  assertRoot(t);
  const src = join(work, 'attrs-src');
  await mkdir(join(src, 'zero-dir'), { recursive: true });
  await mkdir(join(src, 'dir-2040'));
  await writeFile(join(src, 'zero-dir/f'), 'in a 000 directory');
  await writeFile(join(src, 'dir-2040/f'), 'f');
  for (const n of ['zero', 'y1901', 'y1960', 'y2039', 'y2106', 'big-owner', 'edge-owner']) await writeFile(join(src, n), n);
  await symlink('zero', join(src, 'link-1901'));
  await chmod(join(src, 'zero'), 0o000);
  await chmod(join(src, 'zero-dir'), 0o000);
  await utimes(join(src, 'y1901'), at('1901-12-14T00:00:00Z'), at('1901-12-14T00:00:00Z'));
  await utimes(join(src, 'y1960'), at('1960-01-01T00:00:00.5Z'), at('1960-01-01T00:00:00.5Z'));
  await utimes(join(src, 'y2039'), at('2039-06-01T00:00:00Z'), at('2039-06-01T00:00:00Z'));
  await utimes(join(src, 'y2106'), at('2106-03-01T00:00:00Z'), at('2106-03-01T00:00:00Z'));
  await chown(join(src, 'big-owner'), 3000000, 4000000);
  await chown(join(src, 'edge-owner'), 262144, 262143);
  await chown(join(src, 'dir-2040'), 3000000, 0);
  await utimes(join(src, 'dir-2040'), at('2040-01-01T00:00:00Z'), at('2040-01-01T00:00:00Z'));
  await lchown(join(src, 'link-1901'), 3000000, 3000000);
  await lutimes(join(src, 'link-1901'), at('1901-12-14T00:00:00Z'), at('1901-12-14T00:00:00Z'));
  // the root's own entry (./) too
  await chown(src, 3000001, 3000002);
  await chmod(src, 0o750);
  await utimes(src, at('1950-05-05T05:05:05Z'), at('1950-05-05T05:05:05Z'));

  const push = await volreg(['push', src, 'cli/attrs:v1', '--compression', 'none']);
  t.is(push.code, 0, push.stderr);
  const expected = await attributesOf(src);
  const out = join(work, 'attrs-out');
  const pull = await volreg(['pull', 'cli/attrs:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await attributesOf(out), expected);

  const archive = Buffer.from(await (await fetch(`${server.url}/api/v1/volumes/cli/attrs/tags/v1/content`)).arrayBuffer());
  const listing = execFileSync('tar', ['--numeric-owner', '--full-time', '-tvf', '-'], { input: archive, encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'] });
  t.regex(listing, /^-rw-r--r-- 3000000\/4000000 .* big-owner$/m);
  t.regex(listing, /^-rw-r--r-- 0\/0 .* 2106-03-01 00:00:00 y2106$/m);
  const gnu = join(work, 'attrs-gnu');
  await mkdir(gnu);
  gnuTarExtract(archive, gnu);
  t.deepEqual(await attributesOf(gnu), expected);
});

test('pax mtime, uid and gid records (GNU tar --format=posix) are restored as GNU tar restores them', async (t) => {
  assertRoot(t);
  const src = join(work, 'pax-src');
  await mkdir(join(src, 'old-dir'), { recursive: true });
  await writeFile(join(src, 'big-owner'), 'b');
  await writeFile(join(src, 'old-dir/f'), 'f');
  await writeFile(join(src, 'future'), 'x');
  await symlink('big-owner', join(src, 'link'));
  // every mtime set (GNU tar keeps nanoseconds, a restore through Node microseconds)
  await utimes(join(src, 'old-dir/f'), at('2001-02-03T04:05:06Z'), at('2001-02-03T04:05:06Z'));
  await chown(join(src, 'big-owner'), 3000000, 3000001);
  await utimes(join(src, 'big-owner'), at('1960-01-01T00:00:00.5Z'), at('1960-01-01T00:00:00.5Z'));
  await utimes(join(src, 'future'), at('2106-03-01T00:00:00Z'), at('2106-03-01T00:00:00Z'));
  await lchown(join(src, 'link'), 3000004, 0);
  await lutimes(join(src, 'link'), at('1955-01-01T00:00:00.25Z'), at('1955-01-01T00:00:00.25Z'));
  await chown(join(src, 'old-dir'), 3000002, 3000002);
  await utimes(join(src, 'old-dir'), at('1901-12-14T00:00:00Z'), at('1901-12-14T00:00:00Z'));
  await chown(src, 3000003, 0);
  await utimes(src, at('2050-01-01T00:00:00Z'), at('2050-01-01T00:00:00Z'));
  const archive = execFileSync('tar', ['-C', src, '--format=posix', '-cf', '-', '.']);

  const push = await volreg(['push', '-', 'cli/pax:v1'], { input: archive });
  t.is(push.code, 0, push.stderr);
  const out = join(work, 'pax-out');
  const pull = await volreg(['pull', 'cli/pax:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  const gnu = join(work, 'pax-gnu');
  await mkdir(gnu);
  gnuTarExtract(archive, gnu);
  const restored = await attributesOf(out, { ms: true });
  t.deepEqual(restored, await attributesOf(gnu, { ms: true }));
  t.deepEqual(restored, await attributesOf(src, { ms: true }));
});

test('pull refuses a non-empty target without --force and replaces it with --force', async (t) => {
  t.is((await volreg(['push', tree, 'cli/force:v1'])).code, 0);
  const out = join(work, 'occupied');
  await mkdir(out);
  await writeFile(join(out, 'old.txt'), 'old');
  const refused = await volreg(['pull', 'cli/force:v1', out]);
  t.is(refused.code, 6);
  t.regex(refused.stderr, /not empty/);
  t.deepEqual(await readdir(out), ['old.txt']);
  const forced = await volreg(['pull', 'cli/force:v1', out, '--force']);
  t.is(forced.code, 0, forced.stderr);
  t.deepEqual(await describeTree(out), await describeTree(tree));
  await sameRoot(t, out);
});

test('exit codes: missing snapshot or volume 3, bad usage (names and tags the registry could never take included) 2', async (t) => {
  t.is((await volreg(['pull', 'cli/none:v1', join(work, 'none')])).code, 3);
  t.is((await volreg(['verify', 'cli/none:v1'])).code, 3);
  const lsNone = await volreg(['ls', 'cli/none']);
  t.is(lsNone.code, 3);
  t.regex(lsNone.stderr, /cli\/none holds no snapshots/);
  t.is((await volreg(['ls', 'cli/none', '--host', 'elsewhere'])).code, 0, 'a filter matching nothing is only an empty answer');
  t.is((await volreg(['pull', 'no-tag-here', join(work, 'none')])).code, 2);
  t.is((await volreg(['push', tree])).code, 2);
  for (const args of [
    ['push', tree, 'cli/x:-bad'],
    ['push', tree, 'Upper/Case:v1'],
    ['pull', 'BAD:ref', join(work, 'none')],
    ['pull', 'cli/x@sha256:abc', join(work, 'none')],
    ['verify', 'Not_A..Name'],
    ['ls', 'Not A Name'],
    ['rm', 'cli/x:tag with space'],
    ['backup', '--tag', 't1', '--volumes-root', work, '--prefix', 'Bad Prefix/', 'tree'],
    ['push', tree, 'cli/x:v1', '--level', '12'],
    ['push', tree, 'cli/x:v1', '--compression', 'zstd', '--level', '0'],
    ['backup', '--tag', 't1', '--volumes-root', work, '--level', 'fast', 'tree'],
    // names /api/v1 could not address, and a volume named as the tags file beside it
    ['push', tree, 'cli/tags:v1'],
    ['ls', 'cli/tags'],
    ['backup', '--tag', 't1', '--volumes-root', work, 'tree,tags'],
    // flags the registry would refuse are refused before anything is sent
    ['ls', 'cli/x', '--since', 'March 7'],
    ['ls', 'cli/x', '--until', '2024-02-30'],
    ['ls', '--limit', '0'],
    ['ls', 'cli/x', '--host', 'bad host'],
    ['push', tree, 'cli/x:v1', '--label', 'bad key=1'],
    ['push', tree, 'cli/x:v1', '--host', 'bad host'],
    ['backup', '--tag', 't1', '--volumes-root', work, '--label', '_x=1', 'tree'],
    ['backup', '--tag', 't1', '--volumes-root', work, '--prefix', 'cli/', 'tags'],
  ]) {
    const r = await volreg(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, /invalid (repository name|tag|(sha256 )?digest|host name|label key)|expected <name>|--level for (gzip|zstd) is|component named "tags"|the tags file|wants ISO 8601|wants a whole number/, args.join(' '));
  }
  t.is(await readFile(join(work, 'tags'), 'utf8').catch(() => null), null, 'the refused backup recorded nothing');
});

test('a download that does not match its digest is never extracted (exit 4)', async (t) => {
  // its own content: blobs are shared by digest, and this test corrupts the stored bytes
  const own = join(work, 'tampered-src');
  await mkdir(own);
  await writeFile(join(own, 'only-here.txt'), 'content no other test pushes\n'.repeat(500));
  const push = JSON.parse((await volreg(['push', own, 'cli/tampered:v1', '--json'])).stdout) as { layer: { digest: Digest; size: number } };
  const file = blobPath(server.dataDir, push.layer.digest);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1] ^= 0xff;
  await writeFile(file, bytes);
  const out = join(work, 'tampered');
  const pull = await volreg(['pull', 'cli/tampered:v1', out]);
  t.is(pull.code, 4);
  t.regex(pull.stderr, /hashes to/);
  t.deepEqual(await readdir(out), [], 'nothing extracted, no download left');
  const verify = await volreg(['verify', 'cli/tampered:v1']);
  t.is(verify.code, 4);
  t.regex(verify.stderr, /FAILED/);
});

test('a snapshot damaged at rest: verify sets the bytes aside, pushing the same directory again mends the old snapshot', async (t) => {
  const own = join(work, 'mend-src');
  await mkdir(own);
  await writeFile(join(own, 'precious.txt'), 'content only the mend test pushes\n'.repeat(2000));
  await writeFile(join(own, 'more.bin'), randomBytes(300_000));
  const first = await volreg(['push', own, 'cli/mend:monday', '--json']);
  t.is(first.code, 0, first.stderr);
  const layer = (JSON.parse(first.stdout) as { layer: { digest: Digest } }).layer.digest;
  const file = blobPath(server.dataDir, layer);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1] ^= 0x04;
  await writeFile(file, bytes);

  const pull = await volreg(['pull', 'cli/mend:monday', join(work, 'mend-out-1')]);
  t.is(pull.code, 4);
  t.regex(pull.stderr, /volreg verify cli\/mend:monday/, 'the refusal says what to do');
  const verify = await volreg(['verify', 'cli/mend:monday']);
  t.is(verify.code, 4);
  const place = /moved to (quarantine\/sha256\/[0-9a-f]{64}\.[0-9TZ-]+) in the data directory/.exec(verify.stderr + verify.stdout)?.[1];
  t.truthy(place, verify.stderr);
  sameBytes(t, await readFile(join(server.dataDir, place!)), bytes, 'the damaged bytes are kept for the operator, as they were');
  t.is((await fetch(`${server.url}/v2/cli/mend/blobs/${layer}`, { method: 'HEAD' })).status, 404, 'absent: a client uploads it again');
  const missing = await volreg(['pull', 'cli/mend:monday', join(work, 'mend-out-2')]);
  t.is(missing.code, 4, 'a snapshot without its bytes is an integrity fault, not "not found"');
  t.regex(missing.stderr, /layer is missing/);

  // the host still has the data: a new backup of it uploads the layer, which mends monday's snapshot
  const again = await volreg(['push', own, 'cli/mend:tuesday', '--json']);
  t.is(again.code, 0, again.stderr);
  t.is((JSON.parse(again.stdout) as { layer: { digest: Digest } }).layer.digest, layer, 'same directory, same layer');
  const reverify = await volreg(['verify', 'cli/mend:monday']);
  t.is(reverify.code, 0, reverify.stderr);
  const out = join(work, 'mend-out-3');
  const restored = await volreg(['pull', 'cli/mend:monday', out]);
  t.is(restored.code, 0, restored.stderr);
  t.deepEqual(await describeTree(out), await describeTree(own));
});

test('a hostile snapshot is refused on pull and writes nothing outside (or inside) the target', async (t) => {
  const parent = join(work, 'hostile');
  const out = join(parent, 'target');
  await mkdir(join(parent, 'outside'), { recursive: true });
  for (const [i, entries] of [
    [{ name: 'fine.txt', body: 'ok' }, { name: '../outside/pwned', body: 'x' }],
    [{ name: 'esc', type: 'symlink' as const, linkname: '../outside' }, { name: 'esc/pwned', body: 'x' }],
    [{ name: 'hl', type: 'link' as const, linkname: '../outside/pwned' }],
    [{ name: `${parent}/outside/pwned`, body: 'abs' }],
  ].entries()) {
    const body = await buildTar(entries);
    const res = await fetch(`${server.url}/api/v1/volumes/cli/hostile/tags/h${i}`, { method: 'PUT', body: new Uint8Array(body) });
    t.is(res.status, 201);
    const meta = (await res.json()) as { unsafeEntries: number };
    t.true(meta.unsafeEntries >= 1);
    const pull = await volreg(['pull', `cli/hostile:h${i}`, out]);
    t.is(pull.code, 4, `h${i}: ${pull.stderr}`);
    t.regex(pull.stderr, /refusing archive entry/);
    t.deepEqual(await readdir(join(parent, 'outside')), []);
    t.deepEqual(await readdir(out), [], 'target left as it was');
  }
});

test('verify every snapshot of a volume, or of all volumes: each named, a corrupted one fails (exit 4), the rest still checked', async (t) => {
  t.is((await volreg(['verify'])).code, 2, 'a snapshot, a volume or --all');
  t.is((await volreg(['verify', 'cli/vall', '--all'])).code, 2);
  t.is((await volreg(['verify', 'cli/no-such-volume'])).code, 3);

  const layers: Record<string, Digest> = {};
  for (const tag of ['a', 'b', 'c']) {
    // each its own content: this test corrupts one layer's stored bytes
    const src = join(work, `vall-${tag}`);
    await mkdir(src);
    await writeFile(join(src, 'data.txt'), `only in cli/vall:${tag}\n`.repeat(300));
    const push = await volreg(['push', src, `cli/vall:${tag}`, '--json']);
    t.is(push.code, 0, push.stderr);
    layers[tag] = (JSON.parse(push.stdout) as { layer: { digest: Digest } }).layer.digest;
  }
  const clean = await volreg(['verify', 'cli/vall']);
  t.is(clean.code, 0, clean.stderr);
  for (const tag of ['a', 'b', 'c']) t.regex(clean.stdout, new RegExp(`^cli/vall:${tag}: ok \\(${layers[tag]}`, 'm'));
  t.regex(clean.stderr, /verified 3 snapshots: 3 ok, 0 failed/);

  const file = blobPath(server.dataDir, layers.b!);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1] ^= 0xff;
  await writeFile(file, bytes);

  const broken = await volreg(['verify', 'cli/vall']);
  t.is(broken.code, 4);
  t.regex(broken.stderr, /cli\/vall:b: FAILED/);
  t.regex(broken.stdout, /^cli\/vall:a: ok/m);
  t.regex(broken.stdout, /^cli\/vall:c: ok/m, 'the snapshots after the failed one are still verified');
  t.regex(broken.stderr, /verified 3 snapshots: 2 ok, 1 failed/);
  const json = JSON.parse((await volreg(['verify', 'cli/vall', '--json'])).stdout) as { verified: number; failed: number; snapshots: Array<{ snapshot: string; ok: boolean; problems: string[] }> };
  t.is(json.verified, 3);
  t.is(json.failed, 1);
  t.deepEqual(json.snapshots.filter((s) => !s.ok).map((s) => s.snapshot), ['cli/vall:b']);
  t.true(json.snapshots.find((s) => s.snapshot === 'cli/vall:b')!.problems.length > 0);
  // the registry recorded the result on the snapshot
  const meta = JSON.parse((await volreg(['ls', 'cli/vall', '--json'])).stdout) as { snapshots: Array<{ tag: string; lastVerify: { ok: boolean } | null }> };
  t.false(meta.snapshots.find((s) => s.tag === 'b')!.lastVerify!.ok);

  const all = await volreg(['verify', '--all']);
  t.is(all.code, 4);
  t.regex(all.stderr, /cli\/vall:b: FAILED/);
  t.regex(all.stdout, /^cli\/vall:a: ok/m);
  t.regex(all.stderr, /verified \d+ snapshots: \d+ ok, [1-9]\d* failed/);
});

test('ls, verify and rm', async (t) => {
  t.is((await volreg(['push', tree, 'cli/lsv:a'])).code, 0);
  t.is((await volreg(['push', tree, 'cli/lsv:b'])).code, 0);
  const ls = await volreg(['ls', 'cli/lsv']);
  t.is(ls.code, 0);
  t.regex(ls.stdout, /^TAG\s+DIGEST/);
  t.regex(ls.stdout, /\nb\s+sha256:/);
  const lsJson = JSON.parse((await volreg(['ls', 'cli/lsv', '--json'])).stdout) as { snapshots: Array<{ tag: string }> };
  t.deepEqual(lsJson.snapshots.map((s) => s.tag), ['b', 'a']);
  const all = JSON.parse((await volreg(['ls', '--json', '--limit', '1000'])).stdout) as { volumes: Array<{ volume: string; totalSize: number; storedSize: number }> };
  const lsv = all.volumes.find((v) => v.volume === 'cli/lsv');
  // the same tree pushed twice is one layer: counted twice in the total, stored once
  t.is(lsv?.totalSize, 2 * lsv!.storedSize);
  const volumes = await volreg(['ls', '--limit', '1000']);
  t.regex(volumes.stdout, /^VOLUME\s+SNAPSHOTS\s+TOTAL\s+STORED\s+LATEST\s+CREATED\n/);
  t.regex(volumes.stdout, /\ncli\/lsv\s+2\s+\S+ \S+\s+\S+ \S+\s+b\s/);
  const verify = await volreg(['verify', 'cli/lsv:a']);
  t.is(verify.code, 0);
  t.regex(verify.stdout, /ok/);
  const rmA = await volreg(['rm', 'cli/lsv:a']);
  t.is(rmA.code, 0);
  t.is((await volreg(['rm', 'cli/lsv:a'])).code, 3);
  const pullB = await volreg(['pull', 'cli/lsv:b', join(work, 'lsv-b')]);
  t.is(pullB.code, 0, 'the other tag, sharing the layer, still pulls');
});

test('backup several volumes under one tag, then restore them from a lock file by the rules', async (t) => {
  const root = join(work, 'volumes');
  for (const v of ['app', 'db', 'cache']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, `${v}.dat`), `${v} data\n`);
  }
  await mkdir(join(root, 'app', 'nested', 'deep'), { recursive: true });
  await writeFile(join(root, 'app', 'nested', 'deep', 'x'), 'x');
  const backup = await volreg(['backup', '--tag', 'release-1', '--volumes-root', root, '--prefix', 'site/', 'app,db', 'cache']);
  t.is(backup.code, 0, backup.stderr);
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'app release-1\ndb release-1\ncache release-1\n');
  const partial = await volreg(['backup', '--tag', 'release-2', '--volumes-root', root, '--prefix', 'site/', 'app,missing-vol']);
  t.is(partial.code, 5);
  t.regex(partial.stderr, /missing-vol/);
  t.regex(await readFile(join(root, 'tags'), 'utf8'), /^app release-2\n/);

  // a fresh host: restore
  const host = join(work, 'restore-host');
  await mkdir(join(host, 'db'), { recursive: true });
  await writeFile(join(host, 'db', 'local-change'), 'keep me');
  const lock = join(work, 'volumes.dvm.lock');
  await writeFile(
    lock,
    ['downstream:', '  app: tag:release-1', '  db: tag:release-1', '  cache:', '  ghost: tag:release-1', 'upstream:', '  uploads: {}', ''].join('\n'),
  );
  const first = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/', '--json']);
  t.is(first.code, 5, 'db (not empty) and ghost (no snapshot) failed');
  const report = JSON.parse(first.stdout) as { ok: boolean; volumes: Array<{ volume: string; status: string; message: string }> };
  const byVolume = Object.fromEntries(report.volumes.map((v) => [v.volume, v]));
  t.is(byVolume.app!.status, 'restored');
  t.is(byVolume.db!.status, 'failed');
  t.regex(byVolume.db!.message, /not empty/);
  t.is(byVolume.cache!.status, 'skipped');
  t.regex(first.stderr, /cache: skipped/);
  t.is(byVolume.ghost!.status, 'failed');
  t.regex(byVolume.ghost!.message, /SNAPSHOT_UNKNOWN/);
  t.deepEqual(await describeTree(join(host, 'app')), await describeTree(join(root, 'app')));
  t.is(await readFile(join(host, 'db', 'local-change'), 'utf8'), 'keep me');
  t.is(await readFile(join(host, 'tags'), 'utf8'), 'app release-1\n');
  await t.throwsAsync(lstat(join(host, 'cache', 'cache.dat')));

  // a non-empty volume whose snapshot does not exist: the missing snapshot is what is said
  await mkdir(join(host, 'orphan'), { recursive: true });
  await writeFile(join(host, 'orphan', 'file'), 'local');
  await writeFile(lock, ['downstream:', '  orphan: tag:release-1', ''].join('\n'));
  const orphan = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/']);
  t.is(orphan.code, 5);
  t.regex(orphan.stderr, /orphan: snapshot site\/orphan:release-1 does not exist/);

  // a lock value that is not tag:<tag> makes the file malformed: nothing is restored
  await writeFile(lock, ['downstream:', '  db: tag:release-1', '  app: release-1', ''].join('\n'));
  const malformed = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/', '--force']);
  t.is(malformed.code, 2);
  t.regex(malformed.stderr, /app: unknown lock option "release-1"/);
  t.is(await readFile(join(host, 'db', 'local-change'), 'utf8'), 'keep me', 'db was not restored');

  // --force replaces db; app already holds release-1 and is left alone
  await writeFile(lock, ['downstream:', '  app: tag:release-1', '  db: tag:release-1', ''].join('\n'));
  await writeFile(join(host, 'app', 'written-since'), 'by the application');
  const forced = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/', '--force', '--json']);
  t.is(forced.code, 0, forced.stderr);
  t.deepEqual(
    (JSON.parse(forced.stdout) as { volumes: Array<{ volume: string; status: string }> }).volumes.map((v) => `${v.volume} ${v.status}`),
    ['app up-to-date', 'db restored'],
  );
  t.is(await readFile(join(host, 'app', 'written-since'), 'utf8'), 'by the application');
  await rm(join(host, 'app', 'written-since'));
  t.deepEqual(await readdir(join(host, 'db')), ['db.dat']);
  t.is(await readFile(join(host, 'tags'), 'utf8'), 'app release-1\ndb release-1\n');
  const again = await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/', '--json']);
  t.is(again.code, 0);
  t.deepEqual(
    (JSON.parse(again.stdout) as { volumes: Array<{ status: string }> }).volumes.map((v) => v.status),
    ['up-to-date', 'up-to-date'],
  );

  // moving the lock to another tag needs --force for a non-empty volume
  await writeFile(lock, 'app downstream tag:release-2\n');
  t.is((await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/'])).code, 5);
  t.is((await volreg(['restore', '--lock', lock, '--volumes-root', host, '--prefix', 'site/', '--force'])).code, 0);
  t.regex(await readFile(join(host, 'tags'), 'utf8'), /^app release-2$/m);

  await writeFile(lock, 'downstream: [oops]\n');
  t.is((await volreg(['restore', '--lock', lock, '--volumes-root', host])).code, 2);
});

test('credentials come from VOLREG_USER / VOLREG_PASSWORD (or flags) as Basic auth', async (t) => {
  const { hashSync } = await import('bcryptjs');
  const file = join(work, 'htpasswd');
  await writeFile(file, `ops:${hashSync('s3cret pass', 5)}\n`);
  const secured = await startTestServer({ label: 'e2e-cli-auth', env: { VOLREG_AUTH_FILE: file } });
  try {
    const env = { VOLREG_URL: secured.url };
    const anonymous = await volreg(['push', tree, 'cli/auth:v1'], { env });
    t.is(anonymous.code, 1);
    t.regex(anonymous.stderr, /UNAUTHORIZED/);
    // volumes big enough that the refusal comes while a file is still being packed: a failure
    // of that volume, not a crash that leaves a backup's other volumes undone
    const bigRoot = join(work, 'auth-volumes');
    for (const v of ['big1', 'big2']) {
      await mkdir(join(bigRoot, v), { recursive: true });
      await writeFile(join(bigRoot, v, 'data.bin'), randomBytes(24 * 1024 * 1024));
    }
    for (const compression of ['gzip', 'zstd', 'none']) {
      const refused = await volreg(['push', join(bigRoot, 'big1'), 'cli/auth-big:v1', '--compression', compression], { env });
      t.is(refused.code, 1, `${compression}: ${refused.stderr}`);
      t.regex(refused.stderr, /UNAUTHORIZED/);
      t.notRegex(refused.stderr, /Premature close|\n\s+at /, `${compression}: no stack trace`);
    }
    const backup = await volreg(['backup', '--tag', 't1', '--volumes-root', bigRoot, 'big1,big2'], { env });
    t.is(backup.code, 5, backup.stderr);
    t.regex(backup.stderr, /big1: .*UNAUTHORIZED/);
    t.regex(backup.stderr, /big2: .*UNAUTHORIZED/);
    t.notRegex(backup.stderr, /Premature close/);
    const withEnv = await volreg(['push', tree, 'cli/auth:v1'], { env: { ...env, VOLREG_USER: 'ops', VOLREG_PASSWORD: 's3cret pass' } });
    t.is(withEnv.code, 0, withEnv.stderr);
    const withFlags = await volreg(['pull', '--user', 'ops', '--password', 's3cret pass', 'cli/auth:v1', join(work, 'auth-out')], { env });
    t.is(withFlags.code, 0, withFlags.stderr);
    t.deepEqual(await describeTree(join(work, 'auth-out')), await describeTree(tree));
  } finally {
    await secured.close();
  }
});

test('push --no-overwrite refuses a tag that holds a snapshot (exit 7, the snapshot kept), also when pushes race; backup --no-overwrite pushes only the new volumes', async (t) => {
  const first = await volreg(['push', '--json', tree, 'e2e/keep:nightly']);
  t.is(first.code, 0, first.stderr);
  const kept = (JSON.parse(first.stdout) as { manifestDigest: string }).manifestDigest;
  const other = join(work, 'keep-other');
  await mkdir(other, { recursive: true });
  await writeFile(join(other, 'different'), 'other contents\n');
  const again = await volreg(['push', '--no-overwrite', other, 'e2e/keep:nightly']);
  t.is(again.code, 7);
  t.regex(again.stderr, /e2e\/keep:nightly already holds a snapshot/);
  const ls = await volreg(['ls', '--json', 'e2e/keep']);
  t.true(ls.stdout.includes(kept), 'the first snapshot is still the tag');

  // two hosts pushing a new tag at once: the registry lets one in
  const racing = await Promise.all([tree, other].map((dir) => volreg(['push', '--no-overwrite', '--json', dir, 'e2e/keep:race'])));
  t.deepEqual(racing.map((r) => r.code).sort(), [0, 7], racing.map((r) => r.stderr).join(' | '));
  const winner = (JSON.parse(racing.find((r) => r.code === 0)!.stdout) as { manifestDigest: string }).manifestDigest;
  t.true((await volreg(['ls', '--json', 'e2e/keep'])).stdout.includes(winner));

  const root = join(work, 'no-overwrite-volumes');
  for (const v of ['old', 'new']) {
    await mkdir(join(root, v), { recursive: true });
    await writeFile(join(root, v, 'f'), `${v}\n`);
  }
  t.is((await volreg(['backup', '--tag', 'r1', '--volumes-root', root, '--prefix', 'nov/', 'old'])).code, 0);
  const backup = await volreg(['backup', '--no-overwrite', '--tag', 'r1', '--volumes-root', root, '--prefix', 'nov/', 'old,new']);
  t.is(backup.code, 5, 'one volume refused');
  t.regex(backup.stderr, /old: .*already holds a snapshot/);
  t.is(await readFile(join(root, 'tags'), 'utf8'), 'old r1\nnew r1\n');
});

test('rm --if-digest deletes a tag only while it holds that snapshot (exit 7 and kept otherwise); a bad digest is usage (exit 2)', async (t) => {
  const old = JSON.parse((await volreg(['push', '--json', tree, 'e2e/retain:weekly'])).stdout) as { manifestDigest: string };
  const other = join(work, 'retain-other');
  await mkdir(other, { recursive: true });
  await writeFile(join(other, 'newer'), 'a newer backup under the same tag\n');
  const fresh = JSON.parse((await volreg(['push', '--json', other, 'e2e/retain:weekly'])).stdout) as { manifestDigest: string };

  const stale = await volreg(['rm', '--if-digest', old.manifestDigest, 'e2e/retain:weekly']);
  t.is(stale.code, 7, stale.stderr);
  t.regex(stale.stderr, new RegExp(`e2e/retain:weekly no longer holds the snapshot ${old.manifestDigest}; nothing was deleted`));
  t.true((await volreg(['ls', '--json', 'e2e/retain'])).stdout.includes(fresh.manifestDigest), 'the newer backup is kept');

  t.is((await volreg(['rm', '--if-digest', 'sha256:short', 'e2e/retain:weekly'])).code, 2);
  const removed = await volreg(['rm', '--if-digest', fresh.manifestDigest, 'e2e/retain:weekly']);
  t.is(removed.code, 0, removed.stderr);
  t.regex(removed.stdout, new RegExp(`deleted e2e/retain:weekly \\(${fresh.manifestDigest}\\)`));
  t.is((await volreg(['ls', 'e2e/retain'])).code, 3, 'the volume holds no snapshot now');
});

test("an unreachable registry and a missing directory are said in the operator's words, naming the registry or the path", async (t) => {
  // a port nothing listens on (taken, then given back)
  const closed = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
  const ls = await volreg(['ls'], { env: { VOLREG_URL: `http://127.0.0.1:${closed}` } });
  t.is(ls.code, 1);
  t.regex(ls.stderr, new RegExp(`^volreg ls: nothing accepts connections at http://127\\.0\\.0\\.1:${closed}/ \\(GET /api/v1/volumes: connect ECONNREFUSED`));
  const unknown = await volreg(['ls'], { env: { VOLREG_URL: 'http://no-such-host.invalid:5000' } });
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /^volreg ls: cannot reach the registry at http:\/\/no-such-host\.invalid:5000\/ \(GET \/api\/v1\/volumes: getaddrinfo (ENOTFOUND|EAI_AGAIN) /);

  // a source that is not there is the command line's mistake: bad usage
  const push = await volreg(['push', join(work, 'no-such-dir'), 'cli/missing:v1']);
  t.is(push.code, 2);
  t.is(push.stderr, `volreg push: ${join(work, 'no-such-dir')} does not exist\n`);
});

test('output into a pipe whose reader quits early (head -1, grep -q, true) ends quietly with the command\'s own exit status, for every command', async (t) => {
  // a listing larger than a pipe's buffer (64 KiB): snapshots carrying 32 long labels each
  const source = join(work, 'pipe-source');
  await mkdir(source);
  await writeFile(join(source, 'f'), 'x');
  const body = execFileSync('tar', ['-cf', '-', '-C', source, '.']);
  const labels = Array.from({ length: 32 }, (_, i) => `label=${encodeURIComponent(`k${i}${'x'.repeat(120)}=${'v'.repeat(256)}`)}`).join('&');
  for (let i = 0; i < 6; i++) {
    const res = await fetch(`${server.url}/api/v1/volumes/cli/pipe-big/tags/t${i}?${labels}`, { method: 'PUT', body });
    t.is(res.status, 201, await res.text());
  }
  const data = join(work, 'pipe-data');
  // each case: name, command line, reader; the command's stderr is kept apart from the reader's
  const cases: Array<[string, string, string, number]> = [
    ['ls-json', 'ls --json cli/pipe-big', 'head -1', 0],
    ['ls-table', 'ls cli/pipe-big', 'grep -q TAG', 0],
    ['ls-volumes', 'ls', 'true', 0],
    ['ls-missing', 'ls cli/pipe-none', 'true', 3],
    ['migrate-status', 'migrate status', 'head -1', 0],
    ['gc-dry-run', 'gc --dry-run', 'true', 0],
    ['gc-json', 'gc --dry-run --json', 'true', 0],
    ['help', '--help', 'true', 0],
  ];
  const script = [
    'set -u',
    `v() { "${process.execPath}" "${VOLREG_BIN}" "$@"; }`,
    `v ls --json cli/pipe-big | wc -c > ${join(work, 'pipe.size')}`,
    `VOLREG_DATA_DIR=${data} v migrate > /dev/null || exit 99`,
    ...cases.map(([name, command, reader]) => `VOLREG_DATA_DIR=${data} v ${command} 2> ${join(work, `pipe.${name}.err`)} | ${reader} > /dev/null; echo "${name} \${PIPESTATUS[0]}"`),
  ].join('\n');
  // not execFileSync: the server answering these commands runs in this process
  const out = await new Promise<string>((resolve, reject) => {
    execFile('bash', ['-c', script], { env: { ...process.env, VOLREG_URL: server.url }, cwd: work, encoding: 'utf8' }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  t.true(Number(await readFile(join(work, 'pipe.size'), 'utf8')) > 64 * 1024, 'the listing is larger than the pipe');
  const codes = Object.fromEntries(out.trim().split('\n').map((l) => l.split(' ') as [string, string]));
  for (const [name, , , code] of cases) {
    const stderr = await readFile(join(work, `pipe.${name}.err`), 'utf8');
    t.is(codes[name], String(code), `${name}: ${stderr}`);
    t.is(stderr, name === 'ls-missing' ? 'volreg ls: volume cli/pipe-none holds no snapshots\n' : '', name);
  }
});
