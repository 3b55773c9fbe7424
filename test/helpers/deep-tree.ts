import { createHash } from 'node:crypto';
import { closeSync, constants, type BigIntStats, chmodSync, chownSync, fstatSync, linkSync, lchownSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/**
 * Trees whose paths are longer than PATH_MAX (4095 bytes), built and read by directory
 * descriptor (`/proc/self/fd/<fd>/<name>`, as openat(2) would): no call is given a path longer
 * than one component past a descriptor, so `mkdir -p` of the whole path is never needed.
 */
const DIR = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

const at = (fd: number, name?: string): string => (name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`);

/** A component of `bytes` bytes (at most 255), telling the level it is at. */
function component(level: number, bytes: number): string {
  const head = `level-${String(level).padStart(4, '0')}-`;
  return head + 'x'.repeat(bytes - head.length);
}

export interface DeepTree {
  /** the bytes of the longest path, the root's own path included */
  longestPath: number;
  levels: number;
}

/**
 * Builds under `root` (a new directory) a chain of directories with components of 200 bytes, as
 * deep as it takes for a path of `pathBytes` bytes (with root's own), holding at the bottom:
 * a file of another owner (as root), a sparse file, a symlink, a fifo, a read-only directory
 * with a file, a second name of the file beside it, a hard link at the top to that bottom file
 * (its target a path past PATH_MAX) and one at the bottom to a file near the top; every few
 * levels a file. Modes, mtimes (directories' too) all set to values a restore must bring back.
 */
export function makeDeepTree(root: string, pathBytes: number): DeepTree {
  mkdirSync(root, { recursive: true });
  const fds: number[] = [openSync(root, constants.O_RDONLY | constants.O_DIRECTORY)];
  try {
    let length = Buffer.byteLength(root);
    let level = 0;
    while (length < pathBytes) {
      const name = component(level, 200);
      const parent = fds[fds.length - 1]!;
      mkdirSync(at(parent, name), { mode: 0o750 });
      fds.push(openSync(at(parent, name), DIR));
      const dir = fds[fds.length - 1]!;
      if (level % 10 === 0) {
        writeFileSync(at(dir, 'note.txt'), `level ${level}\n`, { mode: 0o640 });
        utimesSync(at(dir, 'note.txt'), 1_000_000_000 + level, 1_000_000_000 + level);
      }
      length += 1 + name.length;
      level++;
    }
    const bottom = fds[fds.length - 1]!;
    const data = Buffer.alloc(70_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 0xff;
    writeFileSync(at(bottom, 'leaf.bin'), data, { mode: 0o604 });
    if (process.getuid?.() === 0) chownSync(at(bottom, 'leaf.bin'), 1234, 4321);
    chmodSync(at(bottom, 'leaf.bin'), 0o4755); // setuid kept too
    // 1 MiB of hole and a byte: `--sparse` must leave the hole
    const sparse = openSync(at(bottom, 'sparse.img'), constants.O_WRONLY | constants.O_CREAT, 0o644);
    writeSync(sparse, 'x', 1024 * 1024);
    closeSync(sparse);
    symlinkSync('leaf.bin', at(bottom, 'to-leaf'));
    if (process.getuid?.() === 0) lchownSync(at(bottom, 'to-leaf'), 2345, 5432);
    lutimesSync(at(bottom, 'to-leaf'), 1_400_000_000, 1_400_000_000);
    execFileSync('mkfifo', ['-m', '620', `/proc/${process.pid}/fd/${bottom}/pipe`]);
    utimesSync(at(bottom, 'pipe'), 1_300_000_000, 1_300_000_000);
    linkSync(at(bottom, 'leaf.bin'), at(bottom, 'leaf-again'));
    linkSync(at(bottom, 'leaf.bin'), at(fds[0]!, 'z-top-link'));
    linkSync(at(fds[1]!, 'note.txt'), at(bottom, 'note-from-the-top'));
    utimesSync(at(bottom, 'leaf.bin'), 1_500_000_000, 1_500_000_000);
    mkdirSync(at(bottom, 'read-only'));
    writeFileSync(at(bottom, 'read-only/kept'), 'kept\n');
    chmodSync(at(bottom, 'read-only'), 0o555);
    utimesSync(at(bottom, 'read-only'), 1_100_000_000, 1_100_000_000);
    // bottom up: each directory's mtime set once nothing more changes in it
    for (let i = fds.length - 1; i >= 1; i--) utimesSync(at(fds[i]!), 1_200_000_000 + i, 1_200_000_000 + i);
    chmodSync(root, 0o751);
    utimesSync(root, 1_250_000_000, 1_250_000_000);
    return { longestPath: length, levels: level };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

export interface DeepEntry {
  type: 'dir' | 'file' | 'symlink' | 'fifo' | 'other';
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  /** for an inode with several names: the first of them in this walk (sorted) */
  sameAs?: string;
}

/**
 * Everything a restore must bring back of the tree at `root`, its root included (as ''), walked by
 * descriptor: type, mode, mtime (whole seconds), owner, size, sha256, symlink target, and which
 * names are one inode. Paths are the keys, relative to the root.
 */
export function describeDeepTree(root: string): Record<string, DeepEntry> {
  const out: Record<string, DeepEntry> = {};
  const firstName = new Map<bigint, string>();
  const describe = (st: BigIntStats): DeepEntry => ({
    type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : 'other',
    mode: Number(st.mode & 0o7777n),
    mtime: Number(st.mtimeMs / 1000n),
    uid: Number(st.uid),
    gid: Number(st.gid),
  });
  const visit = (fd: number, rel: string): void => {
    for (const name of readdirSync(at(fd)).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`;
      const st = lstatSync(at(fd, name), { bigint: true });
      const e = describe(st);
      if (st.isDirectory()) {
        out[r] = e;
        const child = openSync(at(fd, name), DIR);
        try {
          visit(child, r);
        } finally {
          closeSync(child);
        }
        continue;
      }
      if (e.type === 'symlink') e.mode = 0; // a symlink's mode is not its own to keep
      if (e.type === 'symlink') e.target = readlinkSync(at(fd, name));
      if (e.type === 'file') {
        e.size = Number(st.size);
        e.sha256 = createHash('sha256').update(readFileSync(at(fd, name))).digest('hex');
      }
      if (st.nlink > 1n) {
        e.sameAs = firstName.get(st.ino) ?? r;
        firstName.set(st.ino, e.sameAs);
      }
      out[r] = e;
    }
  };
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    out[''] = describe(fstatSync(rootFd, { bigint: true }));
    visit(rootFd, '');
  } finally {
    closeSync(rootFd);
  }
  return out;
}

/** The bytes `name` takes on disk, `rel` being its directory (a path past PATH_MAX), reached by descriptor. */
export function diskBytesAt(root: string, rel: string, name: string): number {
  const fds = [openSync(root, constants.O_RDONLY | constants.O_DIRECTORY)];
  try {
    for (const part of rel.split('/')) fds.push(openSync(at(fds[fds.length - 1]!, part), DIR));
    return lstatSync(at(fds[fds.length - 1]!, name)).blocks * 512;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
