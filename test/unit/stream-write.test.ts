import { readdirSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { packDirectory } from '../../src/cli/archive/pack.ts';
import { writeOrWait } from '../../src/domain/stream-write.ts';

/** Settles within `ms`, or says it hung. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'hung'> {
  return Promise.race([p, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), ms))]);
}

test('a write waiting on a full stream ends when its reader destroys the stream', async (t) => {
  const side = new PassThrough({ highWaterMark: 16 });
  side.on('error', () => undefined);
  const waiting = writeOrWait(side, Buffer.alloc(1024));
  t.is(await within(waiting, 50), 'hung', 'a full stream makes the writer wait');
  // what a `for await` left early does to the stream it read
  side.destroy();
  t.is(await within(waiting, 1000), undefined);
  t.is(await within(writeOrWait(side, Buffer.alloc(1024)), 1000), undefined, 'a destroyed stream takes nothing, at once');
});

test('a write waits for drain, and the caller can end the wait for its own reason', async (t) => {
  const side = new PassThrough({ highWaterMark: 16 });
  const drained = writeOrWait(side, Buffer.alloc(1024));
  t.is(await within(drained, 50), 'hung');
  side.resume();
  t.is(await within(drained, 1000), undefined);

  const stuck = new PassThrough({ highWaterMark: 16 });
  let wake: (() => void) | null = null;
  const woken = writeOrWait(stuck, Buffer.alloc(1024), (w) => (wake = w));
  t.is(await within(woken, 50), 'hung');
  t.truthy(wake);
  wake!();
  t.is(await within(woken, 1000), undefined);
});

test('a packed archive whose reader goes away stops reading the file it was packing', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'volreg-pack-stop-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'tree'));
  await writeFile(join(dir, 'tree', 'big.bin'), Buffer.alloc(32 * 1024 * 1024, 1));
  const openOnBig = (): number =>
    readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === join(dir, 'tree', 'big.bin');
      } catch {
        return false;
      }
    }).length;
  const tar = packDirectory(join(dir, 'tree'));
  tar.on('error', () => undefined);
  await new Promise<void>((resolve) => tar.once('data', () => resolve()));
  tar.pause();
  await new Promise((r) => setTimeout(r, 100));
  t.is(openOnBig(), 1, 'packing is under way, held back by its reader');
  tar.destroy(); // an upload refused while the file is being packed
  for (let i = 0; i < 50 && openOnBig() > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(openOnBig(), 0, 'the file is closed');
});
