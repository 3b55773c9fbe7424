import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rename, rm, rmdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import cliProgress from 'cli-progress';
import { decompressedTar } from '../../domain/volumes/decompress.ts';
import type { Compression } from '../../domain/volumes/media-types.ts';
import { blobPath, byteCounter, contentPath, parseSnapshotRef, type SnapshotJson, type VolregClient } from '../client.ts';
import { compressor } from './compress.ts';
import { packDirectory } from './pack.ts';
import { extractTar, type ExtractOptions } from './safe-extract.ts';

/**
 * Push and pull as the host agent does them, shared by push/pull and backup/restore:
 *
 * push: directory -> tar (pack.ts) -> gzip|zstd -> PUT (chunked), the server's layer digest
 *       checked against the one computed here;
 * pull: GET content -> temp file inside the target, hashed -> digest compared with the
 *       snapshot's -> only then extracted (safe-extract.ts) into a staging directory inside
 *       the target -> the target's old contents replaced by the staged ones.
 *
 * Staging inside the target (not beside it) keeps a Docker volume's mount point in place:
 * a mount point cannot be renamed, its contents can.
 */
export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

export class TargetNotEmptyError extends Error {
  override name = 'TargetNotEmptyError';
}

export interface Progress {
  start(total: number | null, label: string): void;
  add(n: number): void;
  stop(): void;
}

/** A progress bar on stderr when it is a terminal, nothing otherwise. */
export function progressFor(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { start() {}, add() {}, stop() {} };
  let bar: cliProgress.SingleBar | null = null;
  let value = 0;
  return {
    start(total, label) {
      value = 0;
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: total
            ? `${label} [{bar}] {percentage}% {done}/{size}`
            : `${label} {done}`,
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total ?? 1, 0, { done: human(0), size: human(total ?? 0) });
    },
    add(n) {
      value += n;
      bar?.update(Math.min(value, bar.getTotal()), { done: human(value) });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

export function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export interface PushOptions {
  compression: Compression;
  level?: number;
  host?: string;
  labels?: Record<string, string>;
  progress: Progress;
  onWarning?: (message: string) => void;
}

/** Pushes a directory (or an already made archive stream) as `<name>:<tag>`. */
export async function pushSource(client: VolregClient, source: string | Readable, name: string, tag: string, opts: PushOptions): Promise<SnapshotJson> {
  let body: Readable;
  if (typeof source === 'string') {
    const st = await stat(source);
    if (!st.isDirectory()) throw new Error(`${source} is not a directory`);
    opts.progress.start(null, `pushing ${name}:${tag}`);
    body = packDirectory(source, { onWarning: opts.onWarning }).pipe(compressor(opts.compression, opts.level));
  } else {
    opts.progress.start(null, `pushing ${name}:${tag}`);
    body = source;
  }
  const hash = createHash('sha256');
  const counted = body.pipe(
    byteCounter((chunk) => {
      hash.update(chunk);
      opts.progress.add(chunk.length);
    }),
  );
  body.on('error', (err) => counted.destroy(err));
  try {
    const result = await client.put(name, tag, counted, { host: opts.host, labels: opts.labels });
    const sent = `sha256:${hash.digest('hex')}`;
    if (result.layer.digest !== sent) {
      throw new IntegrityError(`the registry stored ${result.layer.digest} but ${sent} was sent`);
    }
    return result;
  } finally {
    opts.progress.stop();
  }
}

export interface PullOptions extends ExtractOptions {
  force: boolean;
  progress: Progress;
}

async function removeEntries(dir: string, keep: (name: string) => boolean): Promise<void> {
  for (const n of await readdir(dir)) if (!keep(n)) await rm(join(dir, n), { recursive: true, force: true });
}

/**
 * Pulls `<name>:<tag>` or `<name>@<manifest digest>` into `dir`. Nothing in `dir` changes unless
 * the download matched its digest and extracted cleanly.
 */
export async function pullInto(client: VolregClient, ref: string, dir: string, opts: PullOptions): Promise<{ digest: string; size: number; entries: number; snapshot: SnapshotJson | null }> {
  const parsed = parseSnapshotRef(ref);
  let expected: { digest: string; size: number };
  let path: string;
  let snapshot: SnapshotJson | null = null;
  if ('tag' in parsed) {
    snapshot = await client.get(parsed.name, parsed.tag);
    expected = { digest: snapshot.layer.digest, size: snapshot.layer.size };
    path = contentPath(parsed.name, parsed.tag);
  } else {
    const layer = await client.layerByManifestDigest(parsed.name, parsed.digest);
    expected = { digest: layer.digest, size: layer.size };
    path = blobPath(parsed.name, layer.digest);
  }
  if (!expected.digest.startsWith('sha256:')) throw new IntegrityError(`cannot verify ${expected.digest}: only sha256 is supported`);

  await mkdir(dir, { recursive: true });
  const existing = (await readdir(dir)).filter((n) => !n.startsWith('.volreg-'));
  if (existing.length > 0 && !opts.force) throw new TargetNotEmptyError(`${dir} is not empty (use --force to replace its contents)`);

  const work = await mkdtemp(join(dir, '.volreg-'));
  try {
    const file = join(work, 'download');
    opts.progress.start(expected.size, `pulling ${ref}`);
    let got: { digest: string; size: number; announced: string | null };
    try {
      got = await client.download(path, file, (n) => opts.progress.add(n));
    } finally {
      opts.progress.stop();
    }
    if (got.digest !== expected.digest || got.size !== expected.size || (got.announced !== null && got.announced !== expected.digest)) {
      throw new IntegrityError(`download of ${ref} hashes to ${got.digest} (${got.size} bytes), expected ${expected.digest} (${expected.size} bytes)`);
    }
    const staging = join(work, 'root');
    await mkdir(staging);
    const { tar } = await decompressedTar(createReadStream(file, { highWaterMark: 256 * 1024 }));
    const result = await extractTar(tar, staging, opts);
    await rm(file, { force: true });

    // The one switch-over: old contents out, staged contents in, root mode and mtime applied.
    await removeEntries(dir, (n) => join(dir, n) === work);
    for (const n of await readdir(staging)) await rename(join(staging, n), join(dir, n));
    const rootStat = await lstat(staging);
    await rmdir(staging);
    await rm(work, { recursive: true, force: true });
    if (opts.preserveOwner ?? process.getuid?.() === 0) await chown(dir, rootStat.uid, rootStat.gid);
    await chmod(dir, rootStat.mode & 0o7777);
    await utimes(dir, rootStat.atime, rootStat.mtime);
    return { digest: got.digest, size: got.size, entries: result.entries, snapshot };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
