import { execFile as execFileCb, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, link, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { packDirectory } from '../../src/cli/archive/pack.ts';
import { seededBytes } from './seeded-bytes.ts';
import { buildTar } from './tree.ts';

/**
 * Generated archives for the property tests of snapshot archives (test/unit/fuzz-*.test.ts,
 * test/e2e/fuzz-archives.test.ts): small trees made on disk, archived by GNU tar, bsdtar,
 * busybox tar or volreg's own packer, damaged in the tar (bytes anywhere, header fields with or
 * without a repaired checksum, pax records, truncation at block boundaries, insertion,
 * duplicated entries, a second archive spliced in, trailing bytes), compressed, and damaged in
 * the compressed stream.
 *
 * Every run is reproducible from fast-check's seed: file contents come from a seeded xorshift,
 * never from Math.random.
 */
const execFile = promisify(execFileCb);

// ----------------------------------------------------------------------------------- trees

export type SpecEntry =
  | { kind: 'dir'; parent: number; name: string; mode: number; mtime: number }
  | { kind: 'file'; parent: number; name: string; mode: number; mtime: number; size: number; seed: number }
  | { kind: 'symlink'; parent: number; name: string; mtime: number; target: string }
  | { kind: 'hardlink'; parent: number; name: string; of: number }
  | { kind: 'fifo'; parent: number; name: string; mode: number; mtime: number };

const ODD_NAMES = ['a', 'b', 'dir', 'f.txt', 'ünïcødé', '☃ snow', 'файл', '-lead', '..foo', '...', 'sp ace', 'new\nline', 'tab\t', 'back\\slash', 'q"uote', '\x01ctl', '*?[', '💾', 'e\u0301'];
const component = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...ODD_NAMES) },
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9_-][a-z0-9._-]{0,11}$/) },
  // past ustar's 100-byte name field, up to NAME_MAX
  { weight: 1, arbitrary: fc.integer({ min: 90, max: 255 }).map((n) => 'L'.repeat(n)) },
);
const mtime = fc.oneof(
  fc.constantFrom(0, 1, -1, 2 ** 31 - 1, 2 ** 31, 8 ** 11 - 1, -315_619_200, 1_700_000_000),
  fc.integer({ min: -315_619_200, max: 10_413_792_000 }),
);
const fileMode = fc.constantFrom(0o644, 0o755, 0o600, 0o444, 0o000, 0o4755, 0o2750, 0o1644, 0o777);
const dirMode = fc.constantFrom(0o755, 0o700, 0o1777, 0o2775, 0o555, 0o000);
const fileSize = fc.oneof(fc.constantFrom(0, 1, 511, 512, 513, 1023, 1024, 1025, 10240), fc.integer({ min: 0, max: 70_000 }));
const symlinkTarget = fc.oneof(
  fc.constantFrom('a', 'nope', '.', '..', '../canary', '../canary/secret', '../../etc', '/etc/passwd', 'dir/../a', `${'t'.repeat(120)}/x`),
  component,
);

const specEntry: fc.Arbitrary<SpecEntry> = fc.oneof(
  fc.record({ kind: fc.constant('dir' as const), parent: fc.nat(), name: component, mode: dirMode, mtime }),
  fc.record({ kind: fc.constant('dir' as const), parent: fc.nat(), name: component, mode: dirMode, mtime }),
  fc.record({ kind: fc.constant('file' as const), parent: fc.nat(), name: component, mode: fileMode, mtime, size: fileSize, seed: fc.integer() }),
  fc.record({ kind: fc.constant('file' as const), parent: fc.nat(), name: component, mode: fileMode, mtime, size: fileSize, seed: fc.integer() }),
  fc.record({ kind: fc.constant('symlink' as const), parent: fc.nat(), name: component, mtime, target: symlinkTarget }),
  fc.record({ kind: fc.constant('hardlink' as const), parent: fc.nat(), name: component, of: fc.nat() }),
  fc.record({ kind: fc.constant('fifo' as const), parent: fc.nat(), name: component, mode: fileMode, mtime }),
);

export const treeSpec: fc.Arbitrary<SpecEntry[]> = fc.array(specEntry, { minLength: 0, maxLength: 10 });

/**
 * Makes the tree on disk under `root` (an empty directory). Each entry's parent is a directory
 * made before it (its index modulo the directories so far, the root being the first); a name
 * already taken in that directory, or a path past PATH_MAX, is left out.
 */
export async function materializeTree(root: string, spec: SpecEntry[]): Promise<void> {
  const dirs: string[] = [''];
  const files: string[] = [];
  const taken = new Set<string>();
  const modes: Array<[string, number, number]> = [];
  for (const e of spec) {
    const parent = dirs[e.parent % dirs.length]!;
    const rel = parent === '' ? e.name : `${parent}/${e.name}`;
    if (taken.has(rel) || Buffer.byteLength(rel) > 3000) continue;
    const abs = join(root, rel);
    switch (e.kind) {
      case 'dir':
        await mkdir(abs);
        dirs.push(rel);
        modes.push([abs, e.mode, e.mtime]);
        break;
      case 'file':
        await writeFile(abs, seededBytes(e.seed, e.size));
        files.push(rel);
        await chmod(abs, e.mode);
        await utimes(abs, e.mtime, e.mtime);
        break;
      case 'fifo':
        await execFile('mkfifo', ['-m', (e.mode & 0o777).toString(8), abs]);
        await utimes(abs, e.mtime, e.mtime);
        files.push(rel);
        break;
      case 'symlink':
        await symlink(e.target, abs);
        await lutimes(abs, e.mtime, e.mtime);
        break;
      case 'hardlink': {
        if (files.length === 0) continue;
        await link(join(root, files[e.of % files.length]!), abs);
        break;
      }
    }
    taken.add(rel);
  }
  // directories last, deepest first: their mtimes change as entries are made in them
  for (const [abs, mode, time] of modes.reverse()) {
    await chmod(abs, mode);
    await utimes(abs, time, time);
  }
}

// -------------------------------------------------------------------------------- archivers

export const ARCHIVERS = ['gnu', 'pax', 'ustar', 'oldgnu', 'bsdtar', 'busybox', 'volreg'] as const;
export type Archiver = (typeof ARCHIVERS)[number];

/** The plain tar an archiver makes of `root` (whatever it managed: ustar leaves out what it can not hold). */
export async function archiveTree(root: string, archiver: Archiver): Promise<Buffer> {
  if (archiver === 'volreg') {
    const chunks: Buffer[] = [];
    for await (const c of packDirectory(root, { onWarning: () => undefined })) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
  const [cmd, ...args] =
    archiver === 'bsdtar' ? ['bsdtar', '-C', root, '-cf', '-', '.'] : archiver === 'busybox' ? ['busybox', 'tar', '-C', root, '-cf', '-', '.'] : ['tar', '-C', root, `--format=${archiver}`, '-cf', '-', '.'];
  return runForOutput(cmd!, args);
}

function runForOutput(cmd: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', reject);
    child.on('close', () => resolve(Buffer.concat(chunks)));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

// ------------------------------------------------------------------------------ compression

export const COMPRESSIONS = ['none', 'gzip', 'gzip-members', 'pigz', 'zstd', 'zstd-frames'] as const;
export type FuzzCompression = (typeof COMPRESSIONS)[number];

export async function compress(tar: Buffer, how: FuzzCompression): Promise<Buffer> {
  const half = Math.floor(tar.length / 2);
  switch (how) {
    case 'none':
      return tar;
    case 'gzip':
      return gzipSync(tar);
    case 'gzip-members':
      return Buffer.concat([gzipSync(tar.subarray(0, half)), gzipSync(tar.subarray(half))]);
    case 'pigz':
      return runForOutput('pigz', ['-c', '-b', '32'], tar);
    case 'zstd':
      return runForOutput('zstd', ['-q', '-c', '--no-progress'], tar);
    case 'zstd-frames':
      return Buffer.concat([await runForOutput('zstd', ['-q', '-c'], tar.subarray(0, half)), await runForOutput('zstd', ['-q', '-c', '--no-check'], tar.subarray(half))]);
  }
}

// ----------------------------------------------------------------------------------- damage

const FIELDS = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const;
type Field = keyof typeof FIELDS;

/** Values a damaged field takes: plausible ones (other numbers, types, names) as well as noise. */
const fieldValue = fc.oneof(
  fc.constantFrom('0', '7', '777', '77777777777', '0000000', '1', '5', '2', 'x', 'g', 'L', 'K', 'S', 'V', 'M', 'D', '3', '6', '7', '../x', '/etc/passwd', 'a', '', 'ustar\0', 'ustar ', '00', ' \0'),
  fc.integer({ min: 0, max: 0o77777777777 }).map((n) => n.toString(8)),
  fc.uint8Array({ minLength: 1, maxLength: 12 }).map((b) => Buffer.from(b).toString('latin1')),
);

const paxValue = fc.oneof(
  fc.constantFrom('0', '1', '511', '512', '513', '-1', '1e3', '0x10', '99999999999999999999', '', ' ', 'a', '../canary/x', '/etc/x', 'dir/', '\uFFFD', '1.5', '-1.5', '9'.repeat(17)),
  fc.nat().map(String),
  fc.string({ maxLength: 20 }),
);

export type Damage =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'overwrite'; at: number; bytes: Uint8Array }
  | { op: 'field'; header: number; field: Field; value: string; fixChecksum: boolean }
  | { op: 'pax'; header: number; key: string; value: string }
  | { op: 'truncate'; boundary: 'header' | 'in-header' | 'in-data' | 'end-marker' | 'anywhere'; at: number }
  | { op: 'insert'; at: number; what: 'bytes' | 'zero-block' | 'header-copy'; bytes: Uint8Array }
  | { op: 'duplicate'; header: number }
  | { op: 'splice'; other: number; keepEnd: boolean }
  | { op: 'trailing'; zeros: number; garbage: Uint8Array };

/** `at` fields are fractions of the length scaled to 2^32, so a shrunk case stays valid for any length. */
const fraction = fc.nat({ max: 0xffffffff });

export const tarDamage: fc.Arbitrary<Damage> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fraction, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('overwrite' as const), at: fraction, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ op: fc.constant('field' as const), header: fc.nat(), field: fc.constantFrom(...(Object.keys(FIELDS) as Field[])), value: fieldValue, fixChecksum: fc.boolean() }),
  fc.record({ op: fc.constant('field' as const), header: fc.nat(), field: fc.constantFrom(...(Object.keys(FIELDS) as Field[])), value: fieldValue, fixChecksum: fc.constant(true) }),
  fc.record({ op: fc.constant('pax' as const), header: fc.nat(), key: fc.constantFrom('size', 'path', 'linkpath', 'mtime', 'uid', 'gid', 'atime', 'GNU.sparse.size', 'SCHILY.xattr.user.a', 'comment'), value: paxValue }),
  fc.record({ op: fc.constant('truncate' as const), boundary: fc.constantFrom('header' as const, 'in-header' as const, 'in-data' as const, 'end-marker' as const, 'anywhere' as const), at: fraction }),
  fc.record({ op: fc.constant('insert' as const), at: fraction, what: fc.constantFrom('bytes' as const, 'zero-block' as const, 'header-copy' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 600 }) }),
  fc.record({ op: fc.constant('duplicate' as const), header: fc.nat() }),
  fc.record({ op: fc.constant('splice' as const), other: fc.nat(), keepEnd: fc.boolean() }),
  fc.record({ op: fc.constant('trailing' as const), zeros: fc.constantFrom(0, 1, 511, 512, 1024, 10240), garbage: fc.uint8Array({ maxLength: 8 }) }),
);

export const compressedDamage = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fraction, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('overwrite' as const), at: fraction, bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('truncate' as const), boundary: fc.constant('anywhere' as const), at: fraction }),
  fc.record({ op: fc.constant('trailing' as const), zeros: fc.constantFrom(0, 1, 512), garbage: fc.uint8Array({ maxLength: 8 }) }),
);
export type CompressedDamage = Extract<Damage, { op: 'flip' | 'overwrite' | 'truncate' | 'trailing' }>;

const BLOCK = 512;

interface HeaderAt {
  offset: number;
  typeflag: string;
  /** bytes of data (padded to blocks) after the header */
  span: number;
}

/** The headers of a tar as far as they can be followed (leniently: the damage may have broken the rest). */
export function headersOf(tar: Buffer): { headers: HeaderAt[]; end: number } {
  const headers: HeaderAt[] = [];
  let at = 0;
  let paxSize: number | null = null;
  while (at + BLOCK <= tar.length) {
    const block = tar.subarray(at, at + BLOCK);
    if (block.every((b) => b === 0)) return { headers, end: at };
    const typeflag = String.fromCharCode(block[156]! || 0x30);
    let size = numeric(block.subarray(124, 136));
    if (typeflag === 'x') paxSize = sizeRecord(tar.subarray(at + BLOCK, at + BLOCK + size));
    else if (!'gLK'.includes(typeflag)) {
      if (paxSize !== null) size = paxSize;
      paxSize = null;
    }
    if (typeflag === '5' || !Number.isSafeInteger(size) || size < 0) size = 0;
    const span = Math.ceil(size / BLOCK) * BLOCK;
    headers.push({ offset: at, typeflag, span });
    at += BLOCK + span;
  }
  return { headers, end: Math.min(at, tar.length) };
}

function numeric(field: Buffer): number {
  if (field[0]! & 0x80) return field.subarray(1).reduce((n, b) => n * 256 + b, field[0]! & 0x7f);
  const text = field.toString('latin1').replace(/[\0 ].*$/s, '').trim();
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : 0;
}

function sizeRecord(data: Buffer): number | null {
  const m = /(?:^|\n)\d+ size=(\d+)\n/.exec(data.toString('latin1'));
  return m ? Number(m[1]) : null;
}

function setChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

/** A pax header (typeflag x) with these records, and its data. */
function paxHeader(records: Record<string, string>): Buffer {
  let body = '';
  for (const [k, v] of Object.entries(records)) {
    const rest = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(rest) + 1;
    while (String(len).length + Buffer.byteLength(rest) !== len) len = String(len).length + Buffer.byteLength(rest);
    body += `${len}${rest}`;
  }
  const data = Buffer.from(body);
  const header = Buffer.alloc(BLOCK);
  header.write('PaxHeaders/x', 0, 'latin1');
  header.write('0000644\0', 100, 'latin1');
  header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  header.write('00000000000\0', 136, 'latin1');
  header.write('x', 156, 'latin1');
  header.write('ustar\x0000', 257, 'latin1');
  setChecksum(header);
  const padded = Buffer.alloc(Math.ceil(data.length / BLOCK) * BLOCK);
  data.copy(padded);
  return Buffer.concat([header, padded]);
}

const scaled = (at: number, length: number): number => Math.floor((at / 0x100000000) * length);

/** Applies one damage to a plain tar; `others` are archives a splice may take. */
export function damageTar(tar: Buffer, d: Damage, others: Buffer[]): Buffer {
  const { headers, end } = headersOf(tar);
  const pick = (n: number): HeaderAt | undefined => (headers.length === 0 ? undefined : headers[n % headers.length]);
  switch (d.op) {
    case 'flip': {
      if (tar.length === 0) return tar;
      const out = Buffer.from(tar);
      out[scaled(d.at, tar.length)]! ^= 1 << d.bit;
      return out;
    }
    case 'overwrite': {
      if (tar.length === 0) return tar;
      const out = Buffer.from(tar);
      Buffer.from(d.bytes).copy(out, scaled(d.at, tar.length));
      return out;
    }
    case 'field': {
      const h = pick(d.header);
      if (!h) return tar;
      const out = Buffer.from(tar);
      const [offset, length] = FIELDS[d.field];
      const block = out.subarray(h.offset, h.offset + BLOCK);
      block.fill(0, offset, offset + length);
      block.write(d.value.slice(0, length), offset, 'latin1');
      if (d.fixChecksum && d.field !== 'chksum') setChecksum(block);
      return out;
    }
    case 'pax': {
      const h = pick(d.header);
      if (!h) return tar;
      return Buffer.concat([tar.subarray(0, h.offset), paxHeader({ [d.key]: d.value }), tar.subarray(h.offset)]);
    }
    case 'truncate': {
      const h = pick(d.at);
      const at =
        d.boundary === 'anywhere' || !h
          ? scaled(d.at, tar.length)
          : d.boundary === 'header'
            ? h.offset
            : d.boundary === 'in-header'
              ? h.offset + 1 + (d.at % (BLOCK - 1))
              : d.boundary === 'in-data'
                ? h.offset + BLOCK + (h.span === 0 ? 0 : d.at % h.span)
                : end + BLOCK * (d.at % 2);
      return tar.subarray(0, at);
    }
    case 'insert': {
      const at = d.what === 'bytes' ? scaled(d.at, tar.length) : (pick(d.at)?.offset ?? 0);
      const what = d.what === 'bytes' ? Buffer.from(d.bytes) : d.what === 'zero-block' ? Buffer.alloc(BLOCK) : tar.subarray(pick(d.at)?.offset ?? 0, (pick(d.at)?.offset ?? 0) + BLOCK);
      return Buffer.concat([tar.subarray(0, at), what, tar.subarray(at)]);
    }
    case 'duplicate': {
      const h = pick(d.header);
      if (!h) return tar;
      // the entry with its pax or long-name headers before it
      let from = headers.indexOf(h);
      while (from > 0 && 'xLK'.includes(headers[from - 1]!.typeflag)) from--;
      const start = headers[from]!.offset;
      const stop = Math.min(h.offset + BLOCK + h.span, tar.length);
      return Buffer.concat([tar.subarray(0, end), tar.subarray(start, stop), tar.subarray(end)]);
    }
    case 'splice': {
      if (others.length === 0) return tar;
      const other = others[d.other % others.length]!;
      return Buffer.concat([d.keepEnd ? tar : tar.subarray(0, end), other]);
    }
    case 'trailing':
      return Buffer.concat([tar, Buffer.alloc(d.zeros), Buffer.from(d.garbage)]);
  }
}

export function damageCompressed(body: Buffer, d: CompressedDamage): Buffer {
  return damageTar(body, d.op === 'truncate' ? { ...d, boundary: 'anywhere' } : d, []);
}

/** Small archives a splice adds: another tree, and entries that reach through a link out of the target. */
export function hostileArchives(): Promise<Buffer[]> {
  return Promise.all([
    buildTar([{ name: 'spliced.txt', body: 'from another archive' }, { name: 'sub/', type: 'directory' }]),
    buildTar([
      { name: 'evil', type: 'symlink', linkname: '../canary' },
      { name: 'evil/planted', body: 'written through a link' },
    ]),
    buildTar([
      { name: 'hl', type: 'link', linkname: '../canary/secret' },
      { name: 'abs', type: 'symlink', linkname: '/tmp' },
      { name: 'abs/planted', body: 'x' },
    ]),
    buildTar([
      { name: 'y', type: 'symlink', linkname: '.' },
      { name: 'l', type: 'symlink', linkname: 'y/y/../../canary' },
    ]),
  ]);
}

// ------------------------------------------------------------------------------- comparison

export interface Described {
  type: 'dir' | 'file' | 'symlink' | 'fifo' | 'other';
  mode: number;
  mtime: number;
  sha256?: string;
  target?: string;
  /** the first name (sorted) of its hard-link group */
  group?: string;
}

/** Types, file bytes, modes, symlink targets, hard-link groups and whole-second mtimes of a tree. */
export async function describeFull(root: string): Promise<Record<string, Described>> {
  const out: Record<string, Described> = {};
  const byInode = new Map<bigint, string[]>();
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(rel === '' ? root : join(root, rel))).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, r);
      const st = await lstat(abs, { bigint: true });
      const base = { mode: Number(st.mode & 0o7777n), mtime: Number(st.mtimeMs / 1000n) - (st.mtimeMs % 1000n < 0n ? 1 : 0) };
      if (st.isDirectory()) {
        out[r] = { type: 'dir', ...base };
        await visit(r);
        continue;
      }
      if (st.isSymbolicLink()) out[r] = { type: 'symlink', mode: 0, mtime: base.mtime, target: await readlink(abs) };
      else if (st.isFIFO()) out[r] = { type: 'fifo', ...base };
      else if (st.isFile()) out[r] = { type: 'file', ...base, sha256: createHash('sha256').update(await readFile(abs)).digest('hex') };
      else out[r] = { type: 'other', ...base };
      byInode.set(st.ino, [...(byInode.get(st.ino) ?? []), r]);
    }
  };
  await visit('');
  for (const names of byInode.values()) if (names.length > 1) for (const n of names) out[n]!.group = [...names].sort()[0];
  return out;
}

/** The entries on which two descriptions differ, for a message: [name, one, other]. */
export function treeDifferences(a: Record<string, Described>, b: Record<string, Described>): Array<[string, Described | undefined, Described | undefined]> {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k])).map((k) => [k.slice(0, 80), a[k], b[k]]);
}

/** GNU tar's extraction of a (possibly compressed) archive into `target`: whether it succeeded. */
export async function gnuTarExtract(body: Buffer, compression: FuzzCompression, target: string): Promise<{ ok: boolean; stderr: string }> {
  const decoder = compression === 'none' ? [] : compression.startsWith('zstd') ? ['--zstd'] : ['-z'];
  return new Promise((resolve) => {
    const child = spawn('tar', ['-C', target, '--numeric-owner', '--delay-directory-restore', ...decoder, '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(body);
  });
}

/** `work`, failed (not left pending) when it has not settled within `ms`: a hang is a failure of its own. */
export async function bounded<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not end within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** One generated upload: a tree, its archiver, the damage done to the tar, its compression and the damage done to that. */
export function fuzzSample(opts: { maxDamages: number; maxCompressedDamages: number }) {
  return fc.record({
    tree: treeSpec,
    archiver: fc.constantFrom(...ARCHIVERS),
    damages: fc.array(tarDamage, { maxLength: opts.maxDamages }),
    compression: fc.constantFrom(...COMPRESSIONS),
    compressedDamages: fc.array(compressedDamage, { maxLength: opts.maxCompressedDamages }),
  });
}
export type FuzzSample = ReturnType<typeof fuzzSample> extends fc.Arbitrary<infer T> ? T : never;

/** The body a sample stands for: its tree made under `work` (and removed), archived, damaged, compressed, damaged. */
export async function bodyOf(s: FuzzSample, work: string, spliceable: Buffer[]): Promise<Buffer> {
  const root = await mkdtemp(join(work, 'tree-'));
  await materializeTree(root, s.tree);
  let tar = await archiveTree(root, s.archiver);
  await rm(root, { recursive: true, force: true });
  const others = [...spliceable, tar];
  for (const d of s.damages) tar = damageTar(tar, d, others);
  let body = await compress(tar, s.compression);
  for (const d of s.compressedDamages) body = damageCompressed(body, d);
  return body;
}
