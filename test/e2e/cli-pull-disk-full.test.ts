import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startTestServer, VOLREG_BIN, type TestServer } from '../helpers/server.ts';

/**
 * `volreg pull` into a target on a disk that fills up while it extracts: the pull must fail and
 * leave the target as it was, or succeed with every byte; never succeed with a file cut short.
 * The target is a small tmpfs in a private user and mount namespace (`unshare -rm`), sized around
 * what the download and the file need together, so the disk runs out at different points of the
 * file's last bytes (where a write(2) that takes only part of its buffer reports no error).
 */
let server: TestServer;
let work = '';

/** 4 MiB less the two tar headers before the file's data: its last piece is a whole decoder chunk */
const FILE_BYTES = 4 * 1024 * 1024 - 1024;

test.before(async () => {
  server = await startTestServer({ label: 'e2e-cli-pull-disk-full' });
  work = await mkdtemp(join(tmpdir(), 'volreg-pull-full-'));
  const source = join(work, 'source');
  await mkdir(source);
  await writeFile(join(source, 'zeros.bin'), Buffer.alloc(FILE_BYTES));
  // gzip: the download takes a page or two, the extraction the rest of the small disk
  const body = execFileSync('tar', ['-C', source, '-czf', '-', '.']);
  const res = await fetch(`${server.url}/api/v1/volumes/full/tags/v1`, { method: 'PUT', body });
  if (res.status !== 201) throw new Error(`push: ${res.status} ${await res.text()}`);
});

test.after.always(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

interface PullOnSmallDisk {
  code: number;
  stderr: string;
  /** sha256 and size of the restored file, or null when the target holds none */
  file: { sha256: string; size: number } | null;
}

/** `volreg pull` into a tmpfs of `kib` KiB, which only exists for the command's namespace: what the target holds is read there too. */
function pullOnSmallDisk(kib: number, flags = ''): Promise<PullOnSmallDisk> {
  const target = join(work, `mnt-${kib}${flags}`);
  const script = [
    `mkdir -p "$1" && mount -t tmpfs -o size=${kib}k tmpfs "$1" || exit 99`,
    `"$2" "$3" pull -q ${flags} full:v1 "$1/t" 2>"$1.err"; code=$?`,
    'echo "code=$code"',
    'if [ -f "$1/t/zeros.bin" ]; then echo "size=$(stat -c %s "$1/t/zeros.bin")"; echo "sha256=$(sha256sum < "$1/t/zeros.bin" | cut -d" " -f1)"; fi',
  ].join('\n');
  return new Promise((resolve, reject) => {
    execFile('unshare', ['-rm', 'sh', '-c', script, 'sh', target, process.execPath, VOLREG_BIN], { env: { ...process.env, VOLREG_URL: server.url } }, (err, stdout) => {
      const field = (k: string): string | undefined => new RegExp(`^${k}=(.*)$`, 'm').exec(stdout)?.[1];
      const code = field('code');
      if (code === undefined) {
        reject(new Error(`could not run the pull on a small disk: ${String(err)} ${stdout}`));
        return;
      }
      const size = field('size');
      execFile('cat', [`${target}.err`], (_e, stderr) =>
        resolve({ code: Number(code), stderr, file: size === undefined ? null : { size: Number(size), sha256: field('sha256') ?? '' } }),
      );
    });
  });
}

test('a pull whose target disk fills up during extraction fails, and never leaves a file cut short', async (t) => {
  const whole = createHash('sha256').update(Buffer.alloc(FILE_BYTES)).digest('hex');
  let failed = 0;
  // from too small for the file by a few pages to just large enough for download and file together
  for (let kib = 4084; kib <= 4112; kib += 4) {
    const r = await pullOnSmallDisk(kib);
    if (r.code === 0) {
      t.deepEqual(r.file, { size: FILE_BYTES, sha256: whole }, `${kib} KiB: the pull succeeded, so the file must be whole`);
    } else {
      failed++;
      t.is(r.code, 1, `${kib} KiB: ${r.stderr}`);
      t.regex(r.stderr, /no space left/i, `${kib} KiB`);
      t.regex(r.stderr, /--sparse leaves their holes unwritten/, `${kib} KiB: the failure names the flag that may make it fit`);
      t.is(r.file, null, `${kib} KiB: a failed pull leaves the target as it was`);
    }
  }
  // the disk was too small at least once, or this proved nothing
  t.true(failed > 0);
});

test('a file of zeros that does not fit the disk is restored with --sparse, whole, as holes', async (t) => {
  const whole = createHash('sha256').update(Buffer.alloc(FILE_BYTES)).digest('hex');
  const r = await pullOnSmallDisk(2048, '--sparse'); // half the file's size
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.file, { size: FILE_BYTES, sha256: whole });
});
