/**
 * Test data for the large-transfer scenarios, generated once and cached on disk (never held
 * whole in memory): two random blobs (the monolithic and the chunked upload must not share a
 * digest, or the second would only exercise dedup) and two tar.gz files of random member files.
 *
 * The three tar.gz files hold the same compressed stream and differ only in the gzip header's
 * MTIME field, which no checksum covers: volreg's /v2 upload, its /api/v1 PUT and the /v2
 * upload of the bound row then store different digests of practically the same bytes, so none
 * is a no-op re-push.
 *
 * The tar.gz is deflated at level 1 with the Huffman-only strategy: on incompressible data
 * both that and plain `gzip -1` end up emitting stored blocks, and Huffman-only gets there
 * about three times faster, which keeps generation from dominating a run.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';

export interface DataFile {
  path: string;
  size: number;
  /** sha256:<hex> */
  digest: string;
}

export interface BenchData {
  blobMono: DataFile;
  blobChunked: DataFile;
  /** pushed through /v2 (monolithic, with curl) */
  tarV2: DataFile;
  /** pushed through PUT /api/v1/volumes/... (with curl) */
  tarApi: DataFile;
  /** pushed through /v2 while another process inspects tarApi (the /api/v1 row's bound) */
  tarBound: DataFile;
  /** uncompressed tar size and entry count, for the report */
  tarEntries: number;
  tarUncompressed: number;
  generatedNow: boolean;
  generateMs: number;
}

const FORMAT = 2;
const WRITE_BLOCK = 4 * 1024 * 1024;

async function writeRandomFile(file: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const fh = await fs.open(file, 'w');
  try {
    const buf = Buffer.allocUnsafe(WRITE_BLOCK);
    for (let done = 0; done < size; ) {
      const n = Math.min(WRITE_BLOCK, size - done);
      const part = buf.subarray(0, n);
      randomFillSync(part);
      hash.update(part);
      await fh.write(part, 0, n);
      done += n;
    }
  } finally {
    await fh.close();
  }
  return `sha256:${hash.digest('hex')}`;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), hash);
  return `sha256:${hash.digest('hex')}`;
}

/** Writes a tar of random member files, gzipped, to `file`; returns entry count and tar size. */
async function writeTarGz(file: string, approxSize: number): Promise<{ entries: number; tarSize: number }> {
  const memberSize = Math.max(1024 * 1024, Math.min(16 * 1024 * 1024, Math.floor(approxSize / 64)));
  const members = Math.max(1, Math.round(approxSize / memberSize));
  const pack = tar.pack();
  let tarSize = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      tarSize += chunk.length;
      cb(null, chunk);
    },
  });
  const gzip = zlib.createGzip({ level: 1, strategy: zlib.constants.Z_HUFFMAN_ONLY, chunkSize: 1024 * 1024 });
  const written = pipeline(pack, counter, gzip, createWriteStream(file));

  const produce = async (): Promise<number> => {
    const mtime = new Date('2024-01-01T00:00:00Z');
    let entries = 0;
    const addText = (name: string, text: string): Promise<void> =>
      new Promise((resolve, reject) => pack.entry({ name, mtime, mode: 0o644 }, text, (err) => (err ? reject(err) : resolve())));
    pack.entry({ name: 'data/', type: 'directory', mtime, mode: 0o755 });
    entries++;
    await addText('README.txt', 'volreg benchmark volume: random, incompressible member files\n');
    entries++;
    for (let i = 0; i < members; i++) {
      const name = `data/blob-${String(i).padStart(4, '0')}.bin`;
      await new Promise<void>((resolve, reject) => {
        const entry = pack.entry({ name, size: memberSize, mtime, mode: 0o644 }, (err) => (err ? reject(err) : resolve()));
        let left = memberSize;
        const pump = (): void => {
          while (left > 0) {
            const n = Math.min(1024 * 1024, left);
            left -= n;
            // a fresh buffer per write: the stream may still hold the previous one
            if (!entry.write(randomFillSync(Buffer.allocUnsafe(n)))) {
              entry.once('drain', pump);
              return;
            }
          }
          entry.end(() => undefined);
        };
        pump();
      });
      entries++;
    }
    pack.finalize();
    return entries;
  };
  const [entries] = await Promise.all([produce(), written]);
  return { entries, tarSize };
}

/** Sets the gzip header MTIME (bytes 4..7, little endian); covered by no checksum. */
async function setGzipMtime(file: string, mtime: number): Promise<void> {
  const fh = await fs.open(file, 'r+');
  try {
    const header = Buffer.alloc(10);
    await fh.read(header, 0, 10, 0);
    if (header[0] !== 0x1f || header[1] !== 0x8b) throw new Error(`${file} is not gzip`);
    const field = Buffer.alloc(4);
    field.writeUInt32LE(mtime);
    await fh.write(field, 0, 4, 4);
  } finally {
    await fh.close();
  }
}

interface Meta {
  format: number;
  size: number;
  data: Omit<BenchData, 'generatedNow' | 'generateMs'>;
}

async function cachedMeta(metaFile: string, size: number): Promise<Meta | undefined> {
  try {
    const meta = JSON.parse(await fs.readFile(metaFile, 'utf8')) as Meta;
    if (meta.format !== FORMAT || meta.size !== size) return undefined;
    for (const f of [meta.data.blobMono, meta.data.blobChunked, meta.data.tarV2, meta.data.tarApi, meta.data.tarBound]) {
      const st = await fs.stat(f.path);
      if (st.size !== f.size) return undefined;
    }
    return meta;
  } catch {
    return undefined;
  }
}

export async function prepareData(cacheDir: string, size: number, log: (msg: string) => void): Promise<BenchData> {
  const dir = path.join(cacheDir, `size-${size}`);
  const metaFile = path.join(dir, 'meta.json');
  const cached = await cachedMeta(metaFile, size);
  if (cached) return { ...cached.data, generatedNow: false, generateMs: 0 };

  const started = Date.now();
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  log(`generating test data in ${dir} ...`);
  const monoPath = path.join(dir, 'blob-mono.bin');
  const chunkedPath = path.join(dir, 'blob-chunked.bin');
  const v2Path = path.join(dir, 'volume-v2.tar.gz');
  const apiPath = path.join(dir, 'volume-api.tar.gz');
  const boundPath = path.join(dir, 'volume-bound.tar.gz');
  const monoDigest = await writeRandomFile(monoPath, size);
  const chunkedDigest = await writeRandomFile(chunkedPath, size);
  const { entries, tarSize } = await writeTarGz(v2Path, size);
  await fs.copyFile(v2Path, apiPath);
  await fs.copyFile(v2Path, boundPath);
  await setGzipMtime(v2Path, 1_700_000_001);
  await setGzipMtime(apiPath, 1_700_000_002);
  await setGzipMtime(boundPath, 1_700_000_003);
  const [v2Digest, apiDigest, boundDigest] = await Promise.all([sha256File(v2Path), sha256File(apiPath), sha256File(boundPath)]);
  const tarGzSize = (await fs.stat(v2Path)).size;
  const data: Meta['data'] = {
    blobMono: { path: monoPath, size, digest: monoDigest },
    blobChunked: { path: chunkedPath, size, digest: chunkedDigest },
    tarV2: { path: v2Path, size: tarGzSize, digest: v2Digest },
    tarApi: { path: apiPath, size: tarGzSize, digest: apiDigest },
    tarBound: { path: boundPath, size: tarGzSize, digest: boundDigest },
    tarEntries: entries,
    tarUncompressed: tarSize,
  };
  await fs.writeFile(metaFile, JSON.stringify({ format: FORMAT, size, data } satisfies Meta, null, 2));
  return { ...data, generatedNow: true, generateMs: Date.now() - started };
}
