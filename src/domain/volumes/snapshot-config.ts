import { isDigest, type Digest } from '../digest.ts';
import { VolregError } from '../errors.ts';
import { COMPRESSIONS, type Compression } from './media-types.ts';

/**
 * The config blob of a snapshot (`application/vnd.volreg.volume.config.v1+json`). It travels
 * with the artifact, so a snapshot copied to another registry still says what it is.
 */
export interface VolumeSnapshotConfig {
  volume: string;
  /** ISO 8601 UTC */
  created: string;
  host: string | null;
  labels: Record<string, string>;
  uncompressedDigest: Digest;
  uncompressedSize: number;
  entries: number;
  compression: Compression;
}

const HOST = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/;
const MAX_LABELS = 32;
const MAX_LABEL_VALUE = 256;

export function parseHost(input: string): string {
  if (!HOST.test(input)) throw new VolregError('BAD_REQUEST', 'invalid host name', { host: input.slice(0, 300) });
  return input;
}

/** Parses `key=value` labels (from `?label=` or `X-Volreg-Label`), later ones winning. */
export function parseLabels(pairs: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    if (!LABEL_KEY.test(key)) throw new VolregError('BAD_REQUEST', 'invalid label key', { label: pair.slice(0, 200) });
    if (value.length > MAX_LABEL_VALUE || /[\u0000-\u001f\u007f]/.test(value)) {
      throw new VolregError('BAD_REQUEST', 'invalid label value', { label: key });
    }
    labels[key] = value;
  }
  if (Object.keys(labels).length > MAX_LABELS) throw new VolregError('BAD_REQUEST', `at most ${MAX_LABELS} labels`);
  return labels;
}

/** The exact bytes of a config blob: stable key order, so equal snapshots hash equal. */
export function encodeSnapshotConfig(config: VolumeSnapshotConfig): Buffer {
  const ordered: VolumeSnapshotConfig = {
    volume: config.volume,
    created: config.created,
    host: config.host,
    labels: Object.fromEntries(Object.entries(config.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    uncompressedDigest: config.uncompressedDigest,
    uncompressedSize: config.uncompressedSize,
    entries: config.entries,
    compression: config.compression,
  };
  return Buffer.from(JSON.stringify(ordered), 'utf8');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Reads a config blob written by volreg or by another client. Returns null when the bytes are
 * not a valid volume config (an artifact pushed through /v2 may carry anything); callers then
 * fall back to what the manifest alone says.
 */
export function decodeSnapshotConfig(bytes: Buffer): VolumeSnapshotConfig | null {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
  if (!isObject(raw)) return null;
  const { volume, created, host, labels, uncompressedDigest, uncompressedSize, entries, compression } = raw;
  if (typeof volume !== 'string' || typeof created !== 'string' || Number.isNaN(Date.parse(created))) return null;
  if (host !== null && host !== undefined && (typeof host !== 'string' || !HOST.test(host))) return null;
  if (labels !== undefined && (!isObject(labels) || !Object.values(labels).every((v) => typeof v === 'string'))) return null;
  if (typeof uncompressedDigest !== 'string' || !isDigest(uncompressedDigest)) return null;
  if (!isCount(uncompressedSize) || !isCount(entries)) return null;
  if (typeof compression !== 'string' || !(COMPRESSIONS as readonly string[]).includes(compression)) return null;
  return {
    volume,
    created: new Date(created).toISOString(),
    host: (host as string | null | undefined) ?? null,
    labels: (labels as Record<string, string> | undefined) ?? {},
    uncompressedDigest: uncompressedDigest as Digest,
    uncompressedSize,
    entries,
    compression: compression as Compression,
  };
}
