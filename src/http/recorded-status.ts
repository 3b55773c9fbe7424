import type { IncomingMessage, ServerResponse } from 'node:http';

/** nginx's "client closed request": no status was ever sent. */
export const NO_REPLY_STATUS = 499;

/**
 * The status a request's log line and metrics record. A request whose connection went before any
 * reply was sent (a client killed mid-upload, an idle connection closed) got no status at all:
 * recording the error status it would have had counted such requests as refusals of bad input.
 */
export function recordedStatus(req: IncomingMessage, res: ServerResponse, status: number): number {
  return !res.headersSent && req.socket.destroyed ? NO_REPLY_STATUS : status;
}
