/** What this needs of a writable: Node's streams and tar-stream's (streamx) both fit. */
export interface DrainingWritable {
  readonly destroyed: boolean;
  readonly writableEnded?: boolean;
  write(chunk: Buffer): boolean;
  on(event: 'drain' | 'close', listener: () => void): unknown;
  off(event: 'drain' | 'close', listener: () => void): unknown;
}

/**
 * Writes `chunk` to a stream whose reader may stop at any moment (a validator or an inspector
 * whose verdict came before the end, a packer whose upload was refused), waiting while it is
 * full. A destroyed or ended stream takes nothing, and the wait ends on 'close' as well as on
 * 'drain' (a `for await` left early destroys its stream, which then never drains), so the
 * writer is never left waiting for a reader that is gone. `onWait` receives a function that
 * ends the wait early (the caller's own reason to stop).
 */
export async function writeOrWait(side: DrainingWritable, chunk: Buffer, onWait?: (wake: () => void) => void): Promise<void> {
  if (side.destroyed || side.writableEnded === true || side.write(chunk)) return;
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
