import { spawn } from 'node:child_process';
import { Duplex, PassThrough } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { Compression } from '../../domain/volumes/media-types.ts';

/**
 * Compression for `volreg push`: gzip with zlib, zstd with the `zstd` binary (Node 20's zlib has
 * no zstd encoder and a JavaScript one would be slow). A missing binary is a clear error.
 */
export class CompressorUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CompressorUnavailable';
  }
}

export function compressor(compression: Compression, level?: number): Duplex {
  if (compression === 'none') return new PassThrough();
  if (compression === 'gzip') return createGzip({ level: level ?? 6 });
  const args = ['-q', '-c', '-T0', ...(level !== undefined ? [`-${level}`] : [])];
  const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout });
  child.on('error', (err: NodeJS.ErrnoException) => {
    duplex.destroy(
      err.code === 'ENOENT' ? new CompressorUnavailable('zstd compression needs the `zstd` program on PATH (or use --compression gzip)') : err,
    );
  });
  child.on('close', (code) => {
    if (code !== 0 && code !== null) duplex.destroy(new Error(`zstd exited with status ${code}: ${stderr.trim()}`));
  });
  return duplex;
}
