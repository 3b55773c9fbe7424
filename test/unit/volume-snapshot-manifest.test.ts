import test from 'ava';
import { digestOf, type Digest } from '../../src/domain/digest.ts';
import { VolregError } from '../../src/domain/errors.ts';
import { normalizeEntryName, symlinkStaysInside } from '../../src/domain/volumes/entry-safety.ts';
import { snapshotFileName } from '../../src/domain/volumes/media-types.ts';
import { decodeSnapshotConfig, encodeSnapshotConfig, parseHost, parseLabels } from '../../src/domain/volumes/snapshot-config.ts';
import { buildSnapshotManifest, readSnapshotManifest } from '../../src/domain/volumes/snapshot-manifest.ts';

const d = (s: string): Digest => digestOf(s);
const config = { digest: d('config'), size: 10 };
const layer = { digest: d('layer'), size: 20 };

test('the built manifest is a volume artifact and reads back', (t) => {
  const body = buildSnapshotManifest({ config, layer: { ...layer, compression: 'zstd', title: 'v-1.tar.zst' }, created: '2024-05-01T00:00:00.000Z' });
  const raw = JSON.parse(body.toString()) as Record<string, unknown>;
  t.is(raw.artifactType, 'application/vnd.volreg.volume.v1');
  t.deepEqual(readSnapshotManifest(body), {
    configDigest: config.digest,
    configSize: 10,
    configMediaType: 'application/vnd.volreg.volume.config.v1+json',
    layer: { digest: layer.digest, size: 20, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', compression: 'zstd', title: 'v-1.tar.zst' },
    created: '2024-05-01T00:00:00.000Z',
  });
});

const manifest = (over: Record<string, unknown>): Buffer =>
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.volreg.volume.v1',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: config.digest, size: 2 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: 20 }],
      ...over,
    }),
  );

test('an artifact without artifactType is a volume when its config type says so', (t) => {
  const body = manifest({ artifactType: undefined, config: { mediaType: 'application/vnd.volreg.volume.config.v1+json', digest: config.digest, size: 2 } });
  t.is(readSnapshotManifest(body)?.layer.compression, 'none');
});

const notVolumes: Array<[string, Buffer]> = [
  ['another artifact type', manifest({ artifactType: 'application/vnd.example+type' })],
  ['an image', manifest({ artifactType: undefined })],
  ['two layers', manifest({ layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: 1 }, { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: 1 }] })],
  ['no layer', manifest({ layers: [] })],
  ['a layer that is not a tar', manifest({ layers: [{ mediaType: 'application/octet-stream', digest: layer.digest, size: 1 }] })],
  ['a bad layer digest', manifest({ layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: 'sha256:nothex', size: 1 }] })],
  ['a negative size', manifest({ layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: -1 }] })],
  ['an index', manifest({ mediaType: 'application/vnd.oci.image.index.v1+json' })],
  ['schema 1', manifest({ schemaVersion: 1 })],
  ['not JSON', Buffer.from('{nope')],
  ['an array', Buffer.from('[]')],
];
for (const [what, body] of notVolumes) {
  test(`not a volume snapshot: ${what}`, (t) => {
    t.is(readSnapshotManifest(body), null);
  });
}

test('config blobs round trip with stable key order; foreign or broken configs read as null', (t) => {
  const c = {
    volume: 'team/db',
    created: '2024-05-01T00:00:00.000Z',
    host: 'web-01',
    labels: { z: '1', a: '2' },
    uncompressedDigest: d('tar'),
    uncompressedSize: 10240,
    entries: 3,
    compression: 'gzip' as const,
  };
  const bytes = encodeSnapshotConfig(c);
  t.deepEqual(decodeSnapshotConfig(bytes), c);
  t.deepEqual(Object.keys((JSON.parse(bytes.toString()) as { labels: object }).labels), ['a', 'z']);
  t.deepEqual(encodeSnapshotConfig({ ...c, labels: { a: '2', z: '1' } }), bytes);
  for (const bad of [
    '{}',
    '[]',
    'nope',
    JSON.stringify({ ...c, entries: -1 }),
    JSON.stringify({ ...c, compression: 'xz' }),
    JSON.stringify({ ...c, uncompressedDigest: 'md5:x' }),
    JSON.stringify({ ...c, host: 'bad host' }),
    JSON.stringify({ ...c, labels: { a: 1 } }),
    JSON.stringify({ ...c, created: 'yesterday' }),
  ]) {
    t.is(decodeSnapshotConfig(Buffer.from(bad)), null, bad);
  }
});

test('labels and hosts: grammar, limits, later labels win', (t) => {
  t.deepEqual(parseLabels(['a=1', 'b=x=y', 'a=2', 'empty=']), { a: '2', b: 'x=y', empty: '' });
  for (const bad of [['=v'], [' a=1'], ['a=\u0001'], ['a='.padEnd(300, 'x')], Array.from({ length: 33 }, (_, i) => `k${i}=v`)]) {
    t.throws(() => parseLabels(bad), { instanceOf: VolregError });
  }
  t.is(parseHost('web-01.example.com'), 'web-01.example.com');
  t.throws(() => parseHost('bad host'), { instanceOf: VolregError });
  t.throws(() => parseHost(''), { instanceOf: VolregError });
});

test('download file names', (t) => {
  t.is(snapshotFileName('team/app-data', 'v1.2', 'gzip'), 'team-app-data-v1.2.tar.gz');
  t.is(snapshotFileName('db', 'x', 'zstd'), 'db-x.tar.zst');
  t.is(snapshotFileName('db', 'x', 'none'), 'db-x.tar');
});

test('entry names and symlink targets', (t) => {
  t.is(normalizeEntryName('./a//b/./c/'), 'a/b/c');
  t.is(normalizeEntryName('./'), '');
  for (const bad of ['/etc/passwd', '../x', 'a/../../x', 'a/..', 'nul\0byte']) t.is(normalizeEntryName(bad), null, bad);
  // a backslash is an ordinary character of a Linux file name, not a separator
  t.is(normalizeEntryName('a\\b'), 'a\\b');
  t.is(normalizeEntryName('C:\\x'), 'C:\\x');
  t.true(symlinkStaysInside('a/b/link', '../c'));
  t.true(symlinkStaysInside('a/link', '..'));
  t.false(symlinkStaysInside('a/link', '../..'));
  t.false(symlinkStaysInside('link', '../x'));
  t.false(symlinkStaysInside('a/link', '/etc'));
  t.false(symlinkStaysInside('a/link', ''));
  t.true(symlinkStaysInside('a/link', 'x/../../b'));
});
