import { request as httpRequest } from 'node:http';

export interface RawReply {
  status: number;
  body: Buffer;
}

/**
 * Sends `path` to the server at `base` as it is (no URL normalisation of `%2e%2e` and the like),
 * with a Content-Length or chunked; fails after `ms` without an answer (a hang is a finding).
 */
export function rawRequest(base: string, method: string, path: string, headers: Record<string, string>, body: Buffer, opts: { chunked?: boolean; ms?: number } = {}): Promise<RawReply> {
  const { hostname, port } = new URL(base);
  const ms = opts.ms ?? 10_000;
  const framing = opts.chunked ? { 'Transfer-Encoding': 'chunked' } : { 'Content-Length': String(body.length) };
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, method, path, headers: { ...headers, ...framing }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer to ${method} ${path} within ${ms} ms`)), ms);
    req.on('close', () => clearTimeout(timer));
    req.on('error', reject);
    req.end(body);
  });
}

/** Whether a reply body is the error JSON every refusal carries: `{ errors: [{ code, message, ... }] }`. */
export function isErrorEnvelope(body: Buffer): boolean {
  try {
    const errors = (JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> }).errors;
    return Array.isArray(errors) && errors.length > 0 && typeof errors[0]!.code === 'string' && typeof errors[0]!.message === 'string';
  } catch {
    return false;
  }
}
