import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, chmod, link, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { startTestServer, VOLREG_BIN, type TestServer } from '../helpers/server.ts';
import { runVolreg, type CliRun } from '../helpers/cli-run.ts';
import { assertRoot } from '../helpers/root.ts';
import { describeTree } from '../helpers/tree.ts';

/**
 * The host agent's backups restoring exactly, through the real binary against a real server and
 * real GNU tar: a file changing while `push` reads it fails the push (never a torn file stored);
 * hard links to symlinks and mtimes before 1970 (from GNU tar's default format) and a hair before
 * a whole second (from `push`) come back as they were.
 */
let server: TestServer;
let work = '';

/** The CLI against this file's server, from its work directory. */
function volreg(args: string[], opts: { input?: Buffer } = {}): Promise<CliRun> {
  return runVolreg(args, { url: server.url, cwd: work, ...opts });
}

/**
 * Pushes `source` (a directory, or an archive given as a Buffer, sent as `push -`) as
 * `fidelity/<name>:v1`, pulls it into a new directory and returns that directory; both exit 0.
 */
async function roundTrip(t: ExecutionContext, source: string | Buffer, name: string): Promise<string> {
  const ref = `fidelity/${name}:v1`;
  const push = typeof source === 'string' ? await volreg(['push', source, ref]) : await volreg(['push', '-', ref], { input: source });
  t.is(push.code, 0, push.stderr);
  const out = join(work, `${name}-out`);
  const pull = await volreg(['pull', ref, out]);
  t.is(pull.code, 0, pull.stderr);
  return out;
}

async function exists(name: string, tag: string): Promise<boolean> {
  const res = await fetch(`${server.url}/api/v1/volumes/${name}/tags/${tag}`);
  await res.arrayBuffer();
  if (res.status !== 200 && res.status !== 404) throw new Error(`GET ${name}:${tag}: ${res.status}`);
  return res.status === 200;
}

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-fidelity' });
  work = await mkdtemp(join(tmpdir(), 'volreg-cli-fidelity-'));
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

// ---- a file changing while push reads it ---------------------------------------------------------

const BIG = 64 * 1024 * 1024;

/** The descriptor number under which process `pid` has `path` open, or null. */
async function openDescriptor(pid: number, path: string): Promise<string | null> {
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === path) return fd;
  }
  return null;
}

/**
 * Runs `volreg push dir ref`; once it has `file` open, stops it (SIGSTOP), notes how far it has
 * read, calls `change`, and lets it go on: the change lands while the file is being read,
 * however loaded the machine is.
 */
async function pushWhileChanging(dir: string, file: string, ref: string, change: () => Promise<void>): Promise<CliRun & { readSoFar: number }> {
  const child = spawn(process.execPath, [VOLREG_BIN, 'push', dir, ref], { env: { ...process.env, VOLREG_URL: server.url }, cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  const exit = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 128)));
  void exit.then(() => (exited = true));
  const pid = child.pid!;
  let fd: string | null = null;
  while (fd === null) {
    if (exited) throw new Error(`push ended before it opened ${file}: ${stderr}`);
    fd = await openDescriptor(pid, file);
    if (fd === null) await sleep(2);
  }
  process.kill(pid, 'SIGSTOP');
  let readSoFar: number;
  try {
    readSoFar = Number(/^pos:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1]);
    await change();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  return { code: await exit, stdout, stderr, readSoFar };
}

const changes: Array<[string, (file: string) => Promise<void>, RegExp]> = [
  ['grows', (file) => appendFile(file, randomBytes(1024 * 1024)), /it grew from 67108864 to 68157440 bytes/],
  ['shrinks', (file) => truncate(file, 1024 * 1024), /it shrank below 67108864 bytes/],
  [
    'is rewritten in place (same size)',
    async (file) => {
      const handle = await open(file, 'r+');
      await handle.write(Buffer.alloc(BIG / 2), 0, BIG / 2, BIG / 4);
      await handle.close();
    },
    /it was modified/,
  ],
];

for (const [title, change, how] of changes) {
  const tag = title.split(' ')[0]!;
  test.serial(`push of a file that ${title} while it is read fails (exit 1), naming it; nothing is stored`, async (t) => {
    const dir = join(work, `changing-${tag}`);
    await mkdir(dir);
    await writeFile(join(dir, 'a'), 'small');
    const file = join(dir, 'b-file');
    await writeFile(file, randomBytes(BIG));
    // an old mtime: a change made now differs from it whatever the clock's granularity
    await utimes(file, new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
    try {
      const push = await pushWhileChanging(dir, file, `fidelity/changing:${tag}`, () => change(file));
      t.true(push.readSoFar < BIG, `the change came before the whole file was read (${push.readSoFar} bytes)`);
      t.is(push.code, 1, push.stderr);
      t.regex(push.stderr, new RegExp(`^volreg push: ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} changed while it was being read \\(`));
      t.regex(push.stderr, how);
      t.regex(push.stderr, /; stop what writes to the volume, or back up a snapshot of it, and push again\n$/);
      t.false(await exists('fidelity/changing', tag), 'nothing stored');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test.serial('push of a live volume leaves out what is removed while it is read, with a warning (exit 0), and the rest restores exactly', async (t) => {
  const dir = join(work, 'removed-while-read');
  await mkdir(join(dir, 'c-gone/inner'), { recursive: true });
  const file = join(dir, 'a-file');
  await writeFile(file, randomBytes(BIG));
  await writeFile(join(dir, 'b-gone'), 'removed');
  await writeFile(join(dir, 'c-gone/inner/x'), 'removed too');
  await writeFile(join(dir, 'd-kept'), 'kept');
  const push = await pushWhileChanging(dir, file, 'fidelity/removed:v1', async () => {
    await rm(join(dir, 'b-gone'));
    await rm(join(dir, 'c-gone'), { recursive: true });
  });
  t.true(push.readSoFar < BIG, `the removal came while a-file was being read (${push.readSoFar} bytes)`);
  t.is(push.code, 0, push.stderr);
  t.regex(push.stderr, /warning: skipping b-gone: it was removed while the volume was being read\n/);
  t.regex(push.stderr, /warning: skipping c-gone: it was removed while the volume was being read\n/);
  const out = join(work, 'removed-while-read-out');
  const pull = await volreg(['pull', 'fidelity/removed:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await describeTree(out), await describeTree(dir));
});

test.serial('after those failures the registry holds no upload of theirs', async (t) => {
  const uploads = join(server.dataDir, 'uploads');
  let left: string[] = [];
  for (let i = 0; i < 100; i++) {
    left = await readdir(uploads);
    if (left.length === 0) break;
    await sleep(50);
  }
  t.deepEqual(left, []);
});

// ---- hard links to symlinks ------------------------------------------------------------------------

/** A directory holding `x`, the symlink `s -> x` and `h`, a second name (hard link) of that symlink. */
async function linkedSymlinkTree(name: string): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir);
  await writeFile(join(dir, 'x'), 'x');
  await symlink('x', join(dir, 's'));
  await link(join(dir, 's'), join(dir, 'h'));
  return dir;
}

async function assertOneSymlinkInode(t: import('ava').ExecutionContext, dir: string, what: string): Promise<void> {
  const [s, h] = await Promise.all([lstat(join(dir, 's')), lstat(join(dir, 'h'))]);
  t.true(s.isSymbolicLink() && h.isSymbolicLink(), what);
  t.is(h.ino, s.ino, `${what}: one inode`);
  t.is(await readlink(join(dir, 'h')), 'x', what);
}

test("a GNU tar archive holding a hard link to a symlink pulls as tar -x restores it: one inode", async (t) => {
  const src = await linkedSymlinkTree('gnu-linked-symlink');
  const archive = execFileSync('tar', ['-C', src, '-czf', '-', '.']);
  t.regex(execFileSync('tar', ['-tvzf', '-'], { input: archive }).toString(), / link to \.\/[sh]\n/, 'GNU tar wrote a link entry');
  const gnu = join(work, 'gnu-linked-symlink-tar-x');
  await mkdir(gnu);
  execFileSync('tar', ['-C', gnu, '-xzf', '-'], { input: archive });
  await assertOneSymlinkInode(t, gnu, 'tar -x');

  const out = await roundTrip(t, archive, 'gnu-linked-symlink');
  await assertOneSymlinkInode(t, out, 'volreg pull');
});

test('push of a directory holding two names of one symlink stores one symlink and a link to it', async (t) => {
  const src = await linkedSymlinkTree('push-linked-symlink');
  const out = await roundTrip(t, src, 'push-linked-symlink');
  await assertOneSymlinkInode(t, out, 'volreg pull');
});

// ---- mtimes ----------------------------------------------------------------------------------------

test("mtimes before 1970 in GNU tar's default format (base-256) are restored exactly, to the second", async (t) => {
  const src = join(work, 'old-mtimes');
  await mkdir(join(src, 'dir1950'), { recursive: true });
  const times: Array<[string, string]> = [
    ['f1960', '1960-01-01 00:00:00 UTC'],
    ['fminus1', '1969-12-31 23:59:59 UTC'],
    ['dir1950', '1950-06-01 00:00:00 UTC'],
  ];
  for (const [name, when] of times) {
    if (!name.startsWith('dir')) await writeFile(join(src, name), name);
    execFileSync('touch', ['-d', when, join(src, name)]);
  }
  const archive = execFileSync('tar', ['-C', src, '-czf', '-', '.']);
  const out = await roundTrip(t, archive, 'old-mtimes');
  for (const [name, when] of times) {
    t.is((await lstat(join(out, name))).mtimeMs, Date.parse(when.replace(' UTC', 'Z').replace(' ', 'T')), name);
  }
});

test('push keeps the whole second of an mtime a hair before the next one (whole seconds are rounded down)', async (t) => {
  const src = join(work, 'subsecond');
  await mkdir(src);
  await writeFile(join(src, 'subsec'), 's');
  execFileSync('touch', ['-d', '2020-01-01 00:00:00.999999999 UTC', join(src, 'subsec')]);
  const out = await roundTrip(t, src, 'subsecond');
  t.is((await lstat(join(out, 'subsec'))).mtimeMs, Date.parse('2020-01-01T00:00:00Z'));
});

// ---- what a push warns about -------------------------------------------------------------------------

test('push warns of what pull restores only with a flag, and of sparse files; pull names the flag, and with it the links come back as links', async (t) => {
  const src = join(work, 'warned');
  await mkdir(src);
  await symlink('/etc/passwd', join(src, 'absolute'));
  await symlink('../../elsewhere', join(src, 'escaping'));
  await symlink('not-there', join(src, 'dangling'));
  await writeFile(join(src, 'sparse'), '');
  await truncate(join(src, 'sparse'), 8 * 1024 * 1024);
  await appendFile(join(src, 'sparse'), 'end');
  const push = await volreg(['push', src, 'fidelity/warned:v1']);
  t.is(push.code, 0, push.stderr);
  t.regex(push.stderr, /warning: absolute -> \/etc\/passwd points outside the volume: archived as a symlink, which pull and restore create only with --keep-outside-symlinks\n/);
  t.regex(push.stderr, /warning: escaping -> \.\.\/\.\.\/elsewhere points outside the volume/);
  t.notRegex(push.stderr, /dangling/, 'a dangling link inside the volume is no concern');
  t.regex(push.stderr, /warning: sparse is sparse \(\d+ of 8388611 bytes on disk\): its holes are archived as zeros, and a restore writes all 8388611 bytes unless it runs with --sparse\n/);

  const refused = await volreg(['pull', 'fidelity/warned:v1', join(work, 'warned-refused')]);
  t.is(refused.code, 4, refused.stderr);
  t.regex(refused.stderr, /refusing archive entry "absolute": symlink target "\/etc\/passwd" leaves the target directory \(--keep-outside-symlinks creates it, never writing through it\)/);

  const out = join(work, 'warned-out');
  const pull = await volreg(['pull', '--keep-outside-symlinks', 'fidelity/warned:v1', out]);
  t.is(pull.code, 0, pull.stderr);
  t.deepEqual(await describeTree(out), await describeTree(src));
});

test('push of a volume holding a file the agent may not read fails (exit 1), naming it and what to do; nothing is stored', async (t) => {
  assertRoot(t, 'it runs the CLI as nobody against a file only root may read');
  const base = await mkdtemp(join(tmpdir(), 'volreg-cli-unreadable-'));
  try {
    await chmod(base, 0o755);
    const src = join(base, 'vol');
    await mkdir(src);
    await writeFile(join(src, 'readable'), 'r');
    await writeFile(join(src, 'secret'), 's');
    await chmod(join(src, 'secret'), 0o600);
    // from a directory nobody may enter (this file's work directory is root's alone)
    const push = await runVolreg(['push', src, 'fidelity/unreadable:v1'], { url: server.url, cwd: base, asNobody: true });
    t.is(push.code, 1, push.stderr);
    t.is(push.stderr, `volreg push: cannot read ${src}/secret: permission denied; push a volume as a user who may read all of it (root, or its owner)\n`);
    t.false(await exists('fidelity/unreadable', 'v1'), 'nothing stored');
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});
