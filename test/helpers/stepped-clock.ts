import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A wall clock that a test steps while the processes using it run, as NTP or an operator
 * steps a host's: libfaketime (Debian `libfaketime`, which `.ci/run` installs) preloaded into a
 * child process, reading its offset from a file at every reading. Only the wall clock moves:
 * the monotonic clock (performance.now, timers) and file times stay the kernel's (Node's stat
 * does not go through the C library): files written before a step keep their times, as on a
 * stepped host, but files written after it carry the kernel's time too, unlike on one.
 */
export interface SteppedClock {
  /** the environment that puts a child process on this clock */
  env: Record<string, string>;
  /** sets the offset from the real clock, in libfaketime's words: `+2h`, `-40d`, `+0` */
  step(offset: string): Promise<void>;
  close(): Promise<void>;
}

const LIBRARIES = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1'];

export async function steppedClock(): Promise<SteppedClock> {
  const library = LIBRARIES.find((p) => existsSync(p));
  if (!library) throw new Error('libfaketime is not installed (apt-get install faketime)');
  const dir = await mkdtemp(join(tmpdir(), 'volreg-clock-'));
  const file = join(dir, 'offset');
  await writeFile(file, '+0\n');
  return {
    env: {
      LD_PRELOAD: library,
      FAKETIME_TIMESTAMP_FILE: file,
      FAKETIME_NO_CACHE: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
      NO_FAKE_STAT: '1',
    },
    // whole or not at all: a reading between a truncate and a write would see no offset
    step: async (offset) => {
      await writeFile(`${file}.next`, `${offset}\n`);
      await rename(`${file}.next`, file);
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}
