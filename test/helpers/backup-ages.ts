import { createHash } from 'node:crypto';
import { request } from './oci-client.ts';

/**
 * For the tests of "has every volume been backed up recently": snapshots created at a time the
 * test chooses (days ago, without waiting days), and /metrics read as Prometheus reads it.
 */

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Pushes `tar` as the volume snapshot `volume:tag` through /v2, as an OCI client copies one, its
 * manifest saying it was created at `created` (a snapshot's `created` through /v2 is what the
 * pushing client says: README "When the clock is stepped").
 */
export async function pushSnapshotCreatedAt(url: string, volume: string, tag: string, created: Date, tar: Buffer, headers: Record<string, string> = {}): Promise<void> {
  const blob = async (bytes: Buffer): Promise<{ digest: string; size: number }> => {
    const r = await request(url, `/v2/${volume}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes, headers });
    if (r.status !== 201) throw new Error(`blob push: ${r.status} ${r.body.toString('utf8')}`);
    return { digest: sha256(bytes), size: bytes.length };
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.volreg.volume.v1',
      config: { mediaType: 'application/vnd.volreg.volume.config.v1+json', ...(await blob(Buffer.from('{}'))) },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...(await blob(tar)) }],
      annotations: { 'org.opencontainers.image.created': created.toISOString() },
    }),
  );
  const r = await request(url, `/v2/${volume}/manifests/${tag}`, { method: 'PUT', headers: { ...headers, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest });
  if (r.status !== 201) throw new Error(`manifest push: ${r.status} ${r.body.toString('utf8')}`);
}

/** One sample of the Prometheus text format: its name, labels and value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (no escapes beyond \\ \" \n in label values). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1]!, labels, value: m[3] === 'NaN' ? Number.NaN : Number(m[3]) });
  }
  return out;
}

/** GET /metrics, parsed. */
export async function scrape(url: string): Promise<{ text: string; samples: Sample[] }> {
  const r = await request(url, '/metrics');
  if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
  const text = r.body.toString('utf8');
  return { text, samples: parseMetrics(text) };
}

/** The value of the unlabelled sample `name`; undefined when absent. */
export function valueOf(samples: readonly Sample[], name: string): number | undefined {
  return samples.find((s) => s.name === name && Object.keys(s.labels).length === 0)?.value;
}

/** volreg_volume_latest_snapshot_timestamp_seconds by volume. */
export function latestByVolume(samples: readonly Sample[]): Map<string, number> {
  return new Map(samples.filter((s) => s.name === 'volreg_volume_latest_snapshot_timestamp_seconds').map((s) => [s.labels.volume!, s.value]));
}
