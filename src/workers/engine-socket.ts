import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** sun_path holds 108 bytes with its NUL; leave room for a path the kernel counts a little longer */
const MAX_SOCKET_PATH_BYTES = 100;

export interface EngineSocket {
  socketPath: string;
  /** removes the private directory made for a socket that did not fit in the data directory */
  remove(): Promise<void>;
}

/**
 * Where `serve` has its embedded engine listen: a unix socket, so that only users who may
 * reach it through the file system can speak to the metadata (the engine asks for no
 * password). `DATA_DIR/db/engine.sock` when that path fits in sun_path; for a deeper data
 * directory, a directory of its own under the temporary directory that only this user may
 * enter (mkdtemp makes it 0700 whatever the umask). Never loopback TCP: every local user may
 * connect to a port.
 */
export async function engineSocket(dbPath: string): Promise<EngineSocket> {
  const inDataDir = resolve(dbPath, 'engine.sock');
  if (fits(inDataDir)) return { socketPath: inDataDir, remove: async () => {} };
  const dir = await mkdtemp(join(tmpdir(), 'volreg-engine-'));
  const socketPath = join(dir, 'engine.sock');
  if (!fits(socketPath)) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(
      `the embedded engine's socket path is too long both in the data directory (${inDataDir}) and in the temporary directory (${socketPath}): ` +
        'use a shorter VOLREG_DATA_DIR or TMPDIR',
    );
  }
  return { socketPath, remove: () => rm(dir, { recursive: true, force: true }) };
}

function fits(path: string): boolean {
  return Buffer.byteLength(path) < MAX_SOCKET_PATH_BYTES;
}
