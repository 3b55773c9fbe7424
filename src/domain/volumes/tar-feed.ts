import { extract, type Extract } from 'tar-stream';

/**
 * The tar parser the server and the extractor both use. Headers without the ustar magic are v7
 * (`tar --format=v7`), which GNU tar and bsdtar read: they are taken too (every header's checksum
 * is still checked, and a body that is not a tar fails it).
 */
export function tarParser(): Extract {
  // an option of tar-stream's parser its bundled types leave out
  const options = { allowUnknownFormat: true } as Parameters<typeof extract>[0];
  return extract(options);
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
    parser.destroy();
    throw err;
  } finally {
    done = true;
  }
}


