import { Readable } from 'node:stream';
import { parentPort, workerData } from 'node:worker_threads';
import { isVolregError } from '../domain/errors.ts';
import { inspectArchive, type InspectOptions } from '../domain/volumes/archive-inspector.ts';
import type { InspectionReply, InspectionRequest, InspectionWorkerData } from './archive-inspection-protocol.ts';

/**
 * The worker side of off-thread-inspector.ts: runs `inspectArchive` on streams whose bytes
 * arrive through the shared slot ring. Several inspections can run at once, told apart by id.
 *
 * A slot's bytes are copied out as the inspection reads them, and the slot is acked once its
 * last byte is out; a slot not yet read holds the sender back (backpressure). Why: a whole slot
 * copied on arrival (1 MiB) sat in each inspection's stream beside the one its decoder was
 * working through, about 3.3 MB per concurrent snapshot upload (60 at once: 200 MB of this
 * thread's buffers), while the ring itself is shared and fixed. The pieces shrink as more
 * inspections run: one alone still takes whole slots, as each write to its decoder has a cost.
 */
const port = parentPort!;
const { ring, slotBytes } = workerData as InspectionWorkerData;

/** the bytes of pieces handed out at a time, shared by the inspections running */
const PIECES_BUDGET = 8 * 1024 * 1024;
const SMALLEST_PIECE = 128 * 1024;

function pieceBytes(): number {
  return Math.min(slotBytes, Math.max(SMALLEST_PIECE, Math.floor(PIECES_BUDGET / Math.max(1, feeds.size))));
}

interface Pending {
  slot: number;
  at: number;
  end: number;
}

interface Feed {
  stream: Readable;
  /** slots posted for this inspection and not yet wholly copied out, in order */
  pending: Pending[];
  ended: boolean;
}
const feeds = new Map<number, Feed>();

function post(reply: InspectionReply): void {
  port.postMessage(reply);
}

function ack(slot: number): void {
  post({ op: 'ack', slot });
}

/** Copies pieces into the stream while it wants more; ends it after the last one if the upload ended. */
function pour(feed: Feed): void {
  for (;;) {
    const head = feed.pending[0];
    if (!head) break;
    const n = Math.min(pieceBytes(), head.end - head.at);
    // a copy: the slot is reused as soon as it is acked, while the decoder may keep its input
    const piece = Buffer.from(new Uint8Array(ring, slotBytes * head.slot + head.at, n));
    head.at += n;
    if (head.at === head.end) {
      feed.pending.shift();
      ack(head.slot);
    }
    if (!feed.stream.push(piece)) return;
  }
  if (feed.ended) feed.stream.push(null);
}

function start(id: number, opts: InspectOptions): void {
  const feed: Feed = {
    // it buffers only the piece it was handed last: the bytes still to come wait in their slots
    stream: new Readable({ highWaterMark: 0, read: () => pour(feed) }),
    pending: [],
    ended: false,
  };
  feeds.set(id, feed);
  inspectArchive(feed.stream, opts)
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
      // not needed, and slots not yet read go back.
      feeds.delete(id);
      for (const { slot } of feed.pending.splice(0)) ack(slot);
      feed.stream.destroy();
    });
}

function data(id: number, slot: number, len: number): void {
  const feed = feeds.get(id);
  if (!feed) {
    ack(slot);
    return;
  }
  feed.pending.push({ slot, at: 0, end: len });
  // only the first slot waiting starts a pour: later ones wait for the stream's next read
  if (feed.pending.length === 1) pour(feed);
}

function end(id: number): void {
  const feed = feeds.get(id);
  if (!feed) return;
  feed.ended = true;
  if (feed.pending.length === 0) feed.stream.push(null);
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
      end(m.id);
      break;
    case 'abort':
      feeds.get(m.id)?.stream.destroy(new Error('the upload ended'));
      break;
  }
});
