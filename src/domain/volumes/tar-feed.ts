import { extract, type Extract, type Header } from 'tar-stream';

/**
 * The tar parser the server and the extractor both use. Headers without the ustar magic are v7
 * (`tar --format=v7`), which GNU tar and bsdtar read: they are taken too (every header's checksum
 * is still checked, and a body that is not a tar fails it).
 */
export function tarParser(): Extract {
  // an option of tar-stream's parser its bundled types leave out
  const options = { allowUnknownFormat: true } as Parameters<typeof extract>[0];
  const parser = extract(options);
  // tar-stream skips no data after a directory (as GNU tar and tar-framing.ts read it), yet its
  // body stream of a directory ends only when the size field (or a pax `size`) says 0: with any
  // other size it never ends, and a reader waiting for it (to take the next entry) waits for
  // ever. The stream reads the header's size when first read, after this listener, which runs first.
  parser.prependListener('entry', (header: Header) => {
    if (header.type === 'directory') header.size = 0;
  });
  return parser;
}

/** tar-stream is a streamx Writable, not a Node one: feed it by hand, honouring backpressure. */
export async function feedParser(src: AsyncIterable<Buffer>, parser: Extract): Promise<void> {
  let failure: Error | null = null;
  let done = false;
  const failed = new Promise<never>((_, reject) => {
    parser.on('error', (err: Error) => {
      failure = err;
      reject(err);
    });
    // destroyed by its consumer (e.g. an extractor that refused an entry) without an error
    parser.on('close', () => {
      if (!done) reject(failure ?? new Error('tar parser closed early'));
    });
  });
  failed.catch(() => undefined);
  const finished = new Promise<void>((resolve) => parser.on('finish', () => resolve()));
  try {
    for await (const chunk of src) {
      if (failure) throw failure;
      if (!parser.write(chunk)) {
        await Promise.race([new Promise<void>((resolve) => parser.once('drain', () => resolve())), failed]);
      }
    }
    parser.end(null);
    await Promise.race([finished, failed]);
  } catch (err) {
    // with the reason: tar-stream's entry iterator, asked for the next entry after its parser was
    // destroyed without one, waits for ever (a decoder failing past the last entry hung a pull)
    parser.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  } finally {
    done = true;
  }
}


