import { Readable } from 'node:stream';
import { parentPort, workerData } from 'node:worker_threads';
import { isVolregError } from '../domain/errors.ts';
import { inspectArchive, type InspectOptions } from '../domain/volumes/archive-inspector.ts';
import type { InspectionReply, InspectionRequest, InspectionWorkerData } from './archive-inspection-protocol.ts';

/**
 * The worker side of off-thread-inspector.ts: runs `inspectArchive` on streams whose bytes
 * arrive through the shared slot ring. Several inspections can run at once, told apart by id.
 * A slot is acked once its bytes were copied out, unless the inspection's stream holds bytes
 * not read yet: then the ack waits for the stream to be read, which holds the sender back
 * (backpressure).
 */
const port = parentPort!;
const { ring, slotBytes } = workerData as InspectionWorkerData;

interface Feed {
  stream: Readable;
  held: number[];
}
const feeds = new Map<number, Feed>();

function post(reply: InspectionReply): void {
  port.postMessage(reply);
}

function ack(slot: number): void {
  post({ op: 'ack', slot });
}

function start(id: number, opts: InspectOptions): void {
  const held: number[] = [];
  const stream = new Readable({
    // One slot's copy waits here at a time; the next slot is held (not acked) until it is read.
    // A buffer of its own (1 MiB) kept more copies alive per inspection: a 1 GiB tar.gz pushed
    // through /api/v1 peaked at 282-292 MB rather than 236, at the same CPU per MiB. (Copying a
    // slot out only as the inspection read it, in smaller pieces, was tried: it peaked higher.)
    highWaterMark: 0,
    read() {
      for (const slot of held.splice(0)) ack(slot);
    },
  });
  feeds.set(id, { stream, held });
  inspectArchive(stream, opts)
    .then(
      (result) => post({ op: 'done', id, result }),
      (err: unknown) =>
        post({
          op: 'fail',
          id,
          error: isVolregError(err)
            ? { code: err.code, message: err.message, detail: err.detail }
            : { message: err instanceof Error ? err.message : String(err) },
        }),
    )
    .finally(() => {
      // The inspection stopped reading (done, or refused the archive): bytes still coming are
      // not needed, and held slots go back.
      feeds.delete(id);
      for (const slot of held.splice(0)) ack(slot);
      stream.destroy();
    });
}

function data(id: number, slot: number, len: number): void {
  const feed = feeds.get(id);
  if (!feed) {
    ack(slot);
    return;
  }
  // A copy: the slot is reused as soon as it is acked, while the decoder may keep its input.
  const chunk = Buffer.from(new Uint8Array(ring, slot * slotBytes, len));
  if (feed.stream.push(chunk)) ack(slot);
  else feed.held.push(slot);
}

port.on('message', (m: InspectionRequest) => {
  switch (m.op) {
    case 'start':
      start(m.id, m.opts);
      break;
    case 'data':
      data(m.id, m.slot, m.len);
      break;
    case 'end':
      feeds.get(m.id)?.stream.push(null);
      break;
    case 'abort':
      feeds.get(m.id)?.stream.destroy(new Error('the upload ended'));
      break;
  }
});
