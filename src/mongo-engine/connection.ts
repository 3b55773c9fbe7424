import type { Socket } from 'node:net';
import { toBson } from './bson-values.ts';
import { dispatchCommand } from './command-dispatch.ts';
import type { EngineState } from './engine-state.ts';
import { engineError } from './errors.ts';
import { encodeOpMsg, encodeOpReply, FrameReader, MAX_COMMAND_DOCUMENT_SIZE, parseMessage, type WireRequest } from './wire-protocol.ts';

/**
 * One client connection: reassembles frames, runs requests strictly in arrival order
 * (a driver never pipelines on one connection, but moreToCome writes may queue up),
 * and writes replies. Protocol violations close the socket, as mongod does.
 */

let nextRequestId = 1;

export class ClientConnection {
  readonly id: number;
  private readonly socket: Socket;
  private readonly state: EngineState;
  private readonly reader = new FrameReader();
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(id: number, socket: Socket, state: EngineState) {
    this.id = id;
    this.socket = socket;
    this.state = state;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.onClose());
  }

  destroy(): void {
    if (!this.socket.destroyed) this.socket.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.state.stats.connectionsCurrent--;
    this.state.cursors.closeForConnection(this.id);
  }

  private onData(chunk: Buffer): void {
    this.reader.push(chunk);
    try {
      for (let frame = this.reader.next(); frame; frame = this.reader.next()) {
        const request = parseMessage(frame);
        this.queue = this.queue
          .then(() => this.handle(request))
          .catch((err: unknown) => {
            // dispatchCommand never throws; anything here is a bug in framing or I/O: drop the client.
            this.state.log('connection failed while handling a request', { connectionId: this.id, error: String(err) });
            this.destroy();
          });
      }
    } catch (err) {
      this.state.log('closing connection after protocol error', { connectionId: this.id, error: err instanceof Error ? err.message : String(err) });
      this.destroy();
    }
  }

  /**
   * Resolves once the socket takes more bytes. A client that sends requests without reading
   * the replies would otherwise have every reply held here (a 60-byte find can cost megabytes);
   * mongod's send blocks instead. Reading stops meanwhile, so TCP holds the client back too.
   */
  private drained(): Promise<void> {
    // a socket already closed emits neither 'drain' nor 'close' again: waiting would never end
    if (!this.socket.writableNeedDrain || this.socket.destroyed || this.socket.writableEnded) return Promise.resolve();
    this.socket.pause();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        if (!this.socket.destroyed) this.socket.resume();
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  private async handle(req: WireRequest): Promise<void> {
    await this.drained();
    if (this.closed) return;
    switch (req.kind) {
      case 'compressed': {
        // Compression is never advertised; a client that compresses anyway gets an error and is cut off.
        const err = engineError('BadValue', 'OP_COMPRESSED is not supported: this server does not negotiate compression');
        this.write(encodeOpMsg(nextRequestId++, req.header.requestId, toBson(err.toReply())));
        this.socket.end();
        return;
      }
      case 'query': {
        const name = Object.keys(req.query)[0] ?? '';
        const isHandshake = ['ismaster', 'isMaster', 'hello'].includes(name);
        const db = req.collection.endsWith('.$cmd') ? req.collection.slice(0, -5) : '';
        let body: Buffer;
        if (!isHandshake || db === '') {
          body = toBson(engineError('BadValue', `OP_QUERY is no longer supported except for the hello handshake (got '${name}' on ${req.collection})`).toReply());
        } else {
          const cmd = name === 'hello' ? req.query : { ...req.query };
          body = await dispatchCommand(cmd, db, this.state, this.id);
        }
        this.write(encodeOpReply(nextRequestId++, req.header.requestId, body));
        return;
      }
      case 'msg': {
        const db = req.command['$db'];
        let body: Buffer;
        if (req.oversized) {
          // mongod's words, so what matches its error matches this one
          const { size, firstField } = req.oversized;
          const message = `BSONObj size: ${size} (0x${size.toString(16).toUpperCase()}) is invalid. Size must be between 0 and ${MAX_COMMAND_DOCUMENT_SIZE}(16MB) First element: ${firstField}`;
          body = toBson(engineError('BSONObjectTooLarge', message).toReply());
        } else if (typeof db !== 'string' || db.length === 0) {
          body = toBson(engineError('Location40414', "BSON field '$db' is missing but a required field").toReply());
        } else {
          body = await dispatchCommand(req.command, db, this.state, this.id);
        }
        // moreToCome from the client means an unacknowledged write: never reply.
        if (!req.moreToCome) this.write(encodeOpMsg(nextRequestId++, req.header.requestId, body));
        return;
      }
    }
  }

  private write(buf: Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    this.socket.write(buf);
  }
}
