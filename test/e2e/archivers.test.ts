import { execFile as execFileCb } from 'node:child_process';
import { chmod, chown, link, lstat, mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assertRoot } from '../helpers/root.ts';
import test, { type ExecutionContext } from 'ava';
import { runVolreg } from '../helpers/cli-run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { describeTree, makeSampleTree, type TreeEntry } from '../helpers/tree.ts';

/**
 * Archives as hosts make them, with the archivers Debian ships (GNU tar in every --format,
 * bsdtar, busybox tar, Python's tarfile; gzip, pigz, zstd), pushed with curl and restored with
 * `volreg pull`, with `curl | tar -x` and with GNU tar: each restore must give the tree back
 * (contents, modes, mtimes, link targets, hard-link groups, owners when root).
 */
const execFile = promisify(execFileCb);
const isRoot = process.getuid?.() === 0;
let server: TestServer;
let work = '';
/** a tree every format holds: names under 100 bytes, mtimes from 1970 to 2242, small owners */
let plain = '';
/** and one only the formats with extensions hold: long names and link targets, mtimes before 1970 and after 2242, hard-linked fifos */
let full = '';
let counter = 0;

async function sh(script: string, cwd = work): Promise<string> {
  const { stdout } = await execFile('bash', ['-o', 'pipefail', '-c', script], { cwd, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

const api = (p: string): string => `${server.url}/api/v1/volumes/${p}`;
const at = (iso: string): Date => new Date(iso);

async function makePlainTree(root: string): Promise<void> {
  // a file over several tar records and compressed blocks; bigger only makes the 42 archives slower
  await makeSampleTree(root, 256 * 1024 + 5);
  await rm(join(root, `${'n'.repeat(120)}.long-name`)); // past v7's 99 bytes: the full tree has longer ones
  await mkdir(join(root, 'sticky'));
  await chmod(join(root, 'sticky'), 0o1777);
  await writeFile(join(root, 'setuid'), 's');
  await chmod(join(root, 'setuid'), 0o4755);
  await writeFile(join(root, 'setgid'), 'g');
  await chmod(join(root, 'setgid'), 0o2750);
  await writeFile(join(root, 'none'), 'n');
  await chmod(join(root, 'none'), 0o000);
  await writeFile(join(root, 'zero'), '');
  await utimes(join(root, 'zero'), at('2100-06-07T08:09:10Z'), at('2100-06-07T08:09:10Z'));
  await utimes(join(root, 'empty'), at('1980-01-01T00:00:00Z'), at('1980-01-01T00:00:00Z'));
  if (isRoot) await chown(join(root, 'run.sh'), 1234, 5678);
}

async function makeFullTree(root: string): Promise<void> {
  await makePlainTree(root);
  const component = 'd'.repeat(90);
  const deep = `${component}/${component}/${component}`;
  await mkdir(join(root, deep), { recursive: true });
  await writeFile(join(root, deep, 'past-255-bytes.txt'), 'long path\n');
  await writeFile(join(root, 'M'.repeat(255)), 'a 255-byte name\n');
  await symlink(`${deep}/past-255-bytes.txt`, join(root, 'long-target'));
  await link(join(root, 'run.sh'), join(root, `${'h'.repeat(150)}.hard`));
  await writeFile(join(root, 'old'), 'before 1970\n');
  await utimes(join(root, 'old'), at('1960-02-03T04:05:06Z'), at('1960-02-03T04:05:06Z'));
  await writeFile(join(root, 'far'), 'after 2242\n');
  await utimes(join(root, 'far'), at('2299-01-01T00:00:00Z'), at('2299-01-01T00:00:00Z'));
  await execFile('mkfifo', [join(root, 'fifo')]);
  await link(join(root, 'fifo'), join(root, 'fifo-again'));
  if (isRoot) await chown(join(root, 'far'), 3_000_000, 3_000_001);
}

type Described = Record<string, TreeEntry & { group?: string; uid?: number; gid?: number }>;

/** describeTree, with hard-link groups (named by their first name) and owners when root. */
async function describe(root: string): Promise<Described> {
  const out: Described = await describeTree(root);
  const byInode = new Map<bigint, string[]>();
  for (const r of Object.keys(out)) {
    const st = await lstat(join(root, r), { bigint: true });
    if (isRoot) Object.assign(out[r]!, { uid: Number(st.uid), gid: Number(st.gid) });
    if (!st.isDirectory()) byInode.set(st.ino, [...(byInode.get(st.ino) ?? []), r]);
  }
  for (const names of byInode.values()) if (names.length > 1) for (const n of names) out[n]!.group = names.sort()[0];
  return out;
}

function assertSameTree(t: ExecutionContext, have: Described, want: Described, what: string): void {
  const differing = [...new Set([...Object.keys(have), ...Object.keys(want)])].filter((k) => JSON.stringify(have[k]) !== JSON.stringify(want[k]));
  t.deepEqual(
    differing.map((k) => [k.slice(0, 60), have[k], want[k]]),
    [],
    `${what}: entries that differ (name, restored, source)`,
  );
}

interface Pushed {
  entries: number;
  tag: string;
}

/** PUT with curl; the reply's entry count must be what tar -t lists. */
async function push(t: ExecutionContext, archive: string): Promise<Pushed> {
  const tag = `t${++counter}`;
  const reply = JSON.parse(await sh(`curl -sS -T '${archive}' '${api(`e2e/archivers/tags/${tag}`)}'`)) as { entries?: number; errors?: unknown };
  t.is(typeof reply.entries, 'number', `${archive}: ${JSON.stringify(reply).slice(0, 400)}`);
  const listed = Number((await sh(`tar -tf '${archive}' | wc -l`)).trim());
  t.is(reply.entries, listed, `${archive}: entries`);
  return { entries: reply.entries!, tag };
}

/** The tree `volreg pull` restores. */
async function pull(t: ExecutionContext, tag: string): Promise<Described> {
  const target = join(work, `pull-${tag}`);
  await mkdir(target);
  const run = await runVolreg(['pull', '-q', `e2e/archivers:${tag}`, target], { url: server.url, cwd: work });
  t.is(run.code, 0, run.stderr);
  return describe(target);
}

/**
 * The tree tar -x extracts from a file, or from the content URL through curl (`how`: -z, --zstd,
 * or nothing). GNU tar's own archives are extracted with GNU tar; bsdtar's and Python's with bsdtar:
 * GNU tar gives some of their directories the time of the extraction as mtime (it applies a
 * directory's attributes when it thinks it has left it, and their order of entries misleads it).
 */
async function tarExtract(extractor: Extractor, source: { file: string } | { tag: string; how: string }): Promise<Described> {
  const target = join(work, `x-${++counter}`);
  await mkdir(target);
  const tar = `${extractor} -C '${target}' --numeric-owner`;
  if ('file' in source) await sh(`${tar} -xf '${source.file}'`);
  else await sh(`curl -fsS '${api(`e2e/archivers/tags/${source.tag}/content`)}' | ${tar} ${source.how} -xf -`);
  return describe(target);
}

type Extractor = 'tar' | 'bsdtar';

/**
 * The tree as the archiver kept it: GNU tar and Python archive a fifo's second name as a fifo of
 * its own (bsdtar and busybox as a hard link to the first), so the two are one inode again only
 * where the archive links them.
 */
async function keptByArchiver(archive: string, want: Described): Promise<Described> {
  if (!('fifo' in want)) return want;
  const listing = await sh(`tar -tvf '${archive}'`);
  if (/fifo-again link to (\.\/)?fifo$|fifo link to (\.\/)?fifo-again$/m.test(listing)) return want;
  const { group: _a, ...fifo } = want.fifo!;
  const { group: _b, ...again } = want['fifo-again']!;
  return { ...want, fifo, 'fifo-again': again };
}

let plainWant: Described;
let fullWant: Described;

test.before(async (t) => {
  assertRoot(t, 'its trees hold files of mode 000 that it reads back, and owners it sets');
  server = await startTestServer({ label: 'e2e-archivers' });
  work = await mkdtemp(join(tmpdir(), 'volreg-archivers-'));
  plain = join(work, 'plain');
  full = join(work, 'full');
  await mkdir(plain);
  await mkdir(full);
  await makePlainTree(plain);
  await makeFullTree(full);
  plainWant = await describe(plain);
  fullWant = await describe(full);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

// How each archiver writes a tree: `$T` the tree, `$O` the archive. Every one also without the
// leading `./`, and in an order that lists directories after their contents where it can.
// `lost`: what the archiver can not hold (busybox writes an mtime before 1970 as 0, bsdtar's
// gnutar format clamps one before 1970 or after 2242): the tar -x of the same archive says what then.
const ARCHIVERS: Array<{ name: string; make: string; tree: 'plain' | 'full'; extractor?: Extractor; lost?: string[] }> = [
  ...['gnu', 'oldgnu', 'posix'].flatMap((f) => [
    { name: `GNU tar --format=${f}`, make: `tar -C "$T" --format=${f} -cf "$O" .`, tree: 'full' as const },
    { name: `GNU tar --format=${f}, no ./`, make: `cd "$T" && ls -A | tar --format=${f} -T - -cf "$O"`, tree: 'full' as const },
    { name: `GNU tar --format=${f}, directories after their files`, make: `cd "$T" && find . -depth | tar --format=${f} --no-recursion -T - -cf "$O"`, tree: 'full' as const },
  ]),
  ...['ustar', 'v7'].flatMap((f) => [
    { name: `GNU tar --format=${f}`, make: `tar -C "$T" --format=${f} -cf "$O" .`, tree: 'plain' as const },
    { name: `GNU tar --format=${f}, directories after their files`, make: `cd "$T" && find . -depth | tar --format=${f} --no-recursion -T - -cf "$O"`, tree: 'plain' as const },
  ]),
  { name: 'GNU tar --numeric-owner', make: 'tar -C "$T" --numeric-owner -cf "$O" .', tree: 'full' },
  { name: 'GNU tar --format=posix with a pax global header', make: 'tar -C "$T" --format=posix --pax-option=comment=nightly -cf "$O" .', tree: 'full' },
  ...['', '--format pax', '--format gnutar'].flatMap((f) => [
    { name: `bsdtar ${f || '(default)'}`, make: `bsdtar -C "$T" ${f} -cf "$O" .`, tree: 'full' as const, extractor: 'bsdtar' as const, lost: f === '--format gnutar' ? ['old', 'far'] : [] },
    { name: `bsdtar ${f || '(default)'}, no ./`, make: `cd "$T" && ls -A | bsdtar ${f} -T - -cf "$O"`, tree: 'full' as const, extractor: 'bsdtar' as const, lost: f === '--format gnutar' ? ['old', 'far'] : [] },
  ]),
  { name: 'bsdtar --format ustar', make: 'bsdtar -C "$T" --format ustar -cf "$O" .', tree: 'plain', extractor: 'bsdtar' },
  { name: 'busybox tar', make: 'busybox tar -C "$T" -cf "$O" .', tree: 'full', lost: ['old'] },
  { name: 'busybox tar, no ./', make: 'cd "$T" && ls -A | xargs -d "\\n" busybox tar -cf "$O"', tree: 'full', lost: ['old'] },
  ...['GNU', 'PAX'].map((f) => ({ name: `python tarfile ${f}_FORMAT`, make: `python3 -c 'import sys, tarfile; t = tarfile.open(sys.argv[1], "w", format=tarfile.${f}_FORMAT); t.add(sys.argv[2], arcname="."); t.close()' "$O" "$T"`, tree: 'full' as const, extractor: 'bsdtar' as const })),
  { name: 'python tarfile USTAR_FORMAT', make: `python3 -c 'import sys, tarfile; t = tarfile.open(sys.argv[1], "w", format=tarfile.USTAR_FORMAT); t.add(sys.argv[2], arcname="."); t.close()' "$O" "$T"`, tree: 'plain', extractor: 'bsdtar' },
  { name: 'python tarfile PAX_FORMAT with a global header', make: `python3 -c 'import sys, tarfile; t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "nightly"}); t.add(sys.argv[2], arcname="."); t.close()' "$O" "$T"`, tree: 'full', extractor: 'bsdtar' },
];

for (const a of ARCHIVERS) {
  test(`${a.name}: pushed with curl, pull gives the tree back as tar -x does`, async (t) => {
    const tree = a.tree === 'full' ? full : plain;
    const want = a.tree === 'full' ? fullWant : plainWant;
    const archive = join(work, `archive-${++counter}.tar`);
    await sh(`T='${tree}' O='${archive}'; ${a.make}`);
    const { tag } = await push(t, archive);
    const extractor = a.extractor ?? 'tar';
    const extracted = await tarExtract(extractor, { file: archive });
    const expected = { ...(await keptByArchiver(archive, want)) };
    for (const name of a.lost ?? []) expected[name] = extracted[name]!;
    assertSameTree(t, await pull(t, tag), expected, 'volreg pull');
    assertSameTree(t, extracted, expected, `${extractor} -x`);
  });
}

// As hosts compress: each over the same GNU tar --format=posix archive of the full tree, made from the archive file `$A` into `$O`.
const COMPRESSIONS: Array<{ name: string; make: string; how: string; extractor?: Extractor }> = [
  { name: 'gzip', make: 'gzip -c "$A" > "$O"', how: '-z' },
  { name: 'gzip --rsyncable', make: 'gzip --rsyncable -c "$A" > "$O"', how: '-z' },
  { name: 'pigz (from a pipe)', make: 'cat "$A" | pigz -p 2 -b 128 > "$O"', how: '-z' },
  { name: 'pigz -i (independent blocks)', make: 'pigz -i -b 32 -c "$A" > "$O"', how: '-z' },
  { name: 'two gzip members concatenated', make: 'head -c 1000000 "$A" | gzip > "$O"; tail -c +1000001 "$A" | pigz >> "$O"', how: '-z' },
  { name: 'zstd -T0 (from a pipe)', make: 'cat "$A" | zstd -q -T0 > "$O"', how: '--zstd' },
  { name: 'zstd --long of a file (its window fits the file)', make: 'zstd -q --long -c "$A" > "$O"', how: '--zstd' },
  { name: 'zstd --no-check --no-content-size', make: 'cat "$A" | zstd -q --no-check --no-content-size > "$O"', how: '--zstd' },
  { name: 'zstd frames concatenated', make: 'head -c 1000000 "$A" | zstd -q > "$O"; tail -c +1000001 "$A" | zstd -q -T0 >> "$O"', how: '--zstd' },
  { name: 'zstd --rsyncable', make: 'cat "$A" | zstd -q -T0 --rsyncable > "$O"', how: '--zstd' },
  { name: 'tar --zstd', make: 'tar -C "$T" --format=posix --zstd -cf "$O" .', how: '--zstd' },
  { name: 'bsdtar -z', make: 'bsdtar -C "$T" -czf "$O" .', how: '-z', extractor: 'bsdtar' },
];

let posixArchive: Promise<string> | null = null;
function fullPosixArchive(): Promise<string> {
  posixArchive ??= (async () => {
    const archive = join(work, 'full-posix.tar');
    await sh(`tar -C '${full}' --format=posix -cf '${archive}' .`);
    return archive;
  })();
  return posixArchive;
}

for (const c of COMPRESSIONS) {
  test(`${c.name}: pushed with curl, pull and curl | tar -x give the tree back`, async (t) => {
    const archive = join(work, `compressed-${++counter}`);
    await sh(`A='${await fullPosixArchive()}' T='${full}' O='${archive}'; ${c.make}`);
    const { tag } = await push(t, archive);
    const expected = await keptByArchiver(archive, fullWant);
    assertSameTree(t, await pull(t, tag), expected, 'volreg pull');
    assertSameTree(t, await tarExtract(c.extractor ?? 'tar', { tag, how: c.how }), expected, 'curl | tar -x');
  });
}

test('zstd --long from a pipe (a 128 MiB window) is refused, saying how to compress instead', async (t) => {
  const reply = JSON.parse(await sh(`cat '${await fullPosixArchive()}' | zstd -q --long | curl -sS -T - '${api('e2e/archivers/tags/long')}'`)) as { errors: Array<{ code: string; message: string }> };
  t.is(reply.errors[0]!.code, 'ARCHIVE_INVALID');
  t.regex(reply.errors[0]!.message, /window of 134217728 bytes.*without --long/);
});

test('valid but unusual archives from real tools: the later of a name wins, a dangling hard link and a file entry with data named like a directory are refused, an escape through a replaced name is refused on pull', async (t) => {
  const dir = join(work, 'unusual');
  await mkdir(join(dir, 'd'), { recursive: true });
  const put = async (file: string, tag: string): Promise<{ entries?: number; errors?: Array<{ code: string; message: string }> }> =>
    JSON.parse(await sh(`curl -sS -T '${file}' '${api(`e2e/archivers/tags/${tag}`)}'`, dir)) as { entries?: number; errors?: Array<{ code: string; message: string }> };

  // tar -r appends a newer copy of a file and of a directory (another mode): tar -x and pull keep the later
  await sh('echo first > d/f && tar -cf appended.tar --no-recursion d d/f && echo second > d/f && chmod 700 d && tar -rf appended.tar --no-recursion d d/f', dir);
  t.is((await put('appended.tar', 'appended')).entries, 4);
  const appended = await pull(t, 'appended');
  t.is(appended['d/f']!.sha256, (await describe(dir))['d/f']!.sha256);
  t.is(appended.d!.mode, 0o700);

  // tar --delete of a file leaves its hard links naming nothing: refused on push, as no tar -x can create them
  await sh('echo x > d/x && ln d/x d/y && tar -cf deleted.tar d/x d/y && tar --delete -f deleted.tar d/x', dir);
  const dangling = await put('deleted.tar', 'dangling');
  t.is(dangling.errors?.[0]?.code, 'ARCHIVE_INVALID');
  t.regex(dangling.errors![0]!.message, /entry "d\/y": it is a hard link to "d\/x", which no earlier entry/);

  const python = (entries: string): Promise<string> =>
    sh(`python3 -c 'import io, sys, tarfile
t = tarfile.open(sys.argv[1], "w")
for name, kind, link, data in [${entries}]:
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = link; i.size = len(data); t.addfile(i, io.BytesIO(data))
t.close()' odd.tar`, dir);
  await python(`("f/", tarfile.REGTYPE, "", b"data"), ("g", tarfile.REGTYPE, "", b"g")`);
  t.regex((await put('odd.tar', 'slash-data')).errors![0]!.message, /entry "f\/": a file entry whose name ends in "\/" is a directory to tar/);
  await python(`("f/", tarfile.AREGTYPE, "", b""), ("f/inner", tarfile.REGTYPE, "", b"in")`);
  t.is((await put('odd.tar', 'slash-dir')).entries, 2);
  t.is((await pull(t, 'slash-dir')).f!.type, 'dir');

  // a file, then a symlink of that name leaving the target, then a file through it
  await python(`("e", tarfile.REGTYPE, "", b"plain"), ("e", tarfile.SYMTYPE, "${join(work, 'outside')}", b""), ("e/pwned", tarfile.REGTYPE, "", b"x")`);
  await mkdir(join(work, 'outside'));
  t.is((await put('odd.tar', 'escape')).entries, 3);
  for (const flags of [[], ['--keep-outside-symlinks']]) {
    const target = join(work, `escape-${++counter}`);
    await mkdir(target);
    const run = await runVolreg(['pull', '-q', ...flags, 'e2e/archivers:escape', target], { url: server.url, cwd: work });
    t.is(run.code, 4, run.stderr);
    t.deepEqual(await readdir(target), []);
  }
  t.deepEqual(await readdir(join(work, 'outside')), []);
});
