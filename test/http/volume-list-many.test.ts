import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import test from 'ava';
import { bodyWhen, request } from '../helpers/oci-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The volume list over more volumes than one read of their tags and documents covers (500): a
 * volume past the first read that was pushed only through /v2, or lost its last snapshot, is
 * listed (or left out) as one in the first read is, and paging walks them all in order.
 */
let server: TestServer;
let tarBytes = Buffer.alloc(0);
test.before(async () => {
  server = await startTestServer({ label: 'http_volume_list_many' });
  tarBytes = execFileSync('tar', ['-C', new URL('.', import.meta.url).pathname, '-cf', '-', 'volume-list-many.test.ts']);
});
test.after.always(async () => {
  await server?.close();
});

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A snapshot pushed as an OCI artifact through /v2 only: the volume has no snapshot document until it is read. */
async function pushThroughV2(volume: string): Promise<void> {
  const blob = async (bytes: Buffer): Promise<{ digest: string; size: number }> => {
    await bodyWhen('blob', request(server.url, `/v2/${volume}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes }), 201);
    return { digest: sha256(bytes), size: bytes.length };
  };
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.volreg.volume.v1',
    config: { mediaType: 'application/vnd.volreg.volume.config.v1+json', ...(await blob(Buffer.from('{}'))) },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...(await blob(tarBytes)) }],
  };
  const headers = { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' };
  await bodyWhen('manifest', request(server.url, `/v2/${volume}/manifests/t`, { method: 'PUT', headers, body: Buffer.from(JSON.stringify(manifest)) }), 201);
}

test('a list of 530 volumes: each listed once in name order, those pushed through /v2 included, one without a snapshot left out', async (t) => {
  const names = Array.from({ length: 530 }, (_, i) => `many/v${String(i).padStart(3, '0')}`);
  const throughV2 = new Set([names[3]!, names[512]!]);
  const emptied = names[520]!;
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < names.length) {
        const volume = names[next++]!;
        if (throughV2.has(volume)) await pushThroughV2(volume);
        else await bodyWhen('push', request(server.url, `/api/v1/volumes/${volume}/tags/t`, { method: 'PUT', body: tarBytes }), 201);
      }
    }),
  );
  await bodyWhen('delete', request(server.url, `/api/v1/volumes/${emptied}/tags/t`, { method: 'DELETE' }), 200);

  const listed: string[] = [];
  let path: string | null = '/api/v1/volumes?limit=100';
  let total = -1;
  while (path !== null) {
    const page = JSON.parse((await bodyWhen('list', request(server.url, path), 200)).toString('utf8')) as {
      volumes: Array<{ volume: string; snapshots: number; latest: { tag: string } }>;
      total: number;
      next?: string | null;
    };
    total = page.total;
    for (const v of page.volumes) {
      t.is(v.snapshots, 1, v.volume);
      t.is(v.latest.tag, 't', v.volume);
      listed.push(v.volume);
    }
    path = page.next ? `/api/v1/volumes?limit=100&after=${encodeURIComponent(page.next)}` : null;
  }
  const expected = names.filter((n) => n !== emptied);
  t.is(total, expected.length);
  t.deepEqual(listed, expected);
});
