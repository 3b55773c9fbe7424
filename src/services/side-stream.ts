import type { Writable } from 'node:stream';

/**
 * Hands `chunk` to a side reader's stream (a validator or an inspector reading the same bytes
 * as the main consumer), waiting while that stream is full. The side reader may stop at any
 * moment: its verdict came before the end, or it destroyed the stream (a `for await` left
 * early does). A destroyed or ended stream takes nothing, and the wait ends on 'close' as well
 * as on 'drain', so the main consumer is never left waiting for a reader that is gone.
 * `onWait` receives a function that ends the wait early (the caller's own reason to stop).
 */
export async function feedSide(side: Writable, chunk: Buffer, onWait?: (wake: () => void) => void): Promise<void> {
  if (side.destroyed || side.writableEnded || side.write(chunk)) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      side.off('drain', done);
      side.off('close', done);
      resolve();
    };
    side.on('drain', done);
    side.on('close', done);
    onWait?.(done);
  });
}
