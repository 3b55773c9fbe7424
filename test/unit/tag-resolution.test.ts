import test from 'ava';
import type { Digest } from '../../src/domain/digest.ts';
import { AcceptSet, MEDIA_TYPES } from '../../src/domain/media-types.ts';
import type { ManifestEntry } from '../../src/domain/manifests/parsed-manifest.ts';
import { planTagResolution, type TagCandidate } from '../../src/services/tag-service.ts';

const d = (c: string): Digest => `sha256:${c.repeat(64)}` as Digest;

const OCI = MEDIA_TYPES.ociManifest;
const INDEX = MEDIA_TYPES.ociIndex;
const V2 = MEDIA_TYPES.dockerManifest;
const LIST = MEDIA_TYPES.dockerManifestList;
const S1 = MEDIA_TYPES.dockerSchema1;
const S1S = MEDIA_TYPES.dockerSchema1Signed;

const amd64V2: ManifestEntry = { digest: d('a'), mediaType: V2, size: 1, platform: { os: 'linux', architecture: 'amd64' } };
const arm64V2: ManifestEntry = { digest: d('b'), mediaType: V2, size: 1, platform: { os: 'linux', architecture: 'arm64' } };
const amd64Oci: ManifestEntry = { digest: d('c'), mediaType: OCI, size: 1, platform: { os: 'linux', architecture: 'amd64' } };
const windowsAmd64: ManifestEntry = { digest: d('e'), mediaType: V2, size: 1, platform: { os: 'windows', architecture: 'amd64' } };

const image = (mediaType: string, c: string): TagCandidate => ({ digest: d(c), mediaType, kind: 'image', manifests: [] });
const listOf = (mediaType: string, c: string, manifests: ManifestEntry[]): TagCandidate => ({ digest: d(c), mediaType, kind: 'list', manifests });

const schema1 = image(S1S, '1');
const v2 = image(V2, '2');
const oci = image(OCI, '3');
const dockerList = listOf(LIST, '4', [windowsAmd64, arm64V2, amd64V2]);
const ociIndexNoAmd64 = listOf(INDEX, '5', [arm64V2]);
const ociIndex = listOf(INDEX, '6', [amd64Oci, arm64V2]);

const ALL_SKOPEO = [OCI, V2, S1S, S1, LIST, INDEX].join(', ');

const plans = test.macro({
  exec(
    t,
    _label: string,
    candidates: { schema1: TagCandidate | null; schema2: TagCandidate | null },
    accept: string | undefined,
    expected: Array<[string, Digest]>,
  ) {
    const steps = planTagResolution(candidates, AcceptSet.from(accept));
    t.deepEqual(
      steps.map((s) => [s.reason, s.digest]),
      expected,
    );
  },
  title: (_t, label: string) => label,
});

// 1. a list the client accepts
test(plans, 'a list the client accepts comes first', { schema1, schema2: dockerList }, ALL_SKOPEO, [
  ['list', dockerList.digest],
  ['schema1', schema1.digest],
]);
test(plans, 'an OCI index the client accepts', { schema1: null, schema2: ociIndex }, `${INDEX}, ${OCI}`, [['list', ociIndex.digest]]);
test(plans, 'a list accepted only through a wildcard', { schema1: null, schema2: dockerList }, 'application/*', [['list', dockerList.digest]]);

// 2. the linux/amd64 entry for a client that does not accept the list
test(plans, 'the linux/amd64 entry for a client that does not accept lists', { schema1: null, schema2: dockerList }, V2, [['platform', amd64V2.digest]]);
test(plans, 'linux/amd64, not windows/amd64 or arm64, whatever the entry order', { schema1: null, schema2: dockerList }, `${V2}, ${S1}`, [
  ['platform', amd64V2.digest],
]);
test(plans, 'the amd64 entry of an OCI index for a client accepting only OCI manifests', { schema1: null, schema2: ociIndex }, OCI, [['platform', amd64Oci.digest]]);
test(plans, 'the amd64 entry is skipped when its type is not accepted', { schema1, schema2: ociIndex }, `${V2}, ${S1S}`, [['schema1', schema1.digest]]);
test(plans, 'a list with no linux/amd64 entry falls through to schema 1', { schema1, schema2: ociIndexNoAmd64 }, `${V2}, ${S1S}`, [['schema1', schema1.digest]]);
test(plans, 'a list refused with q=0 is not served, its entry is', { schema1: null, schema2: dockerList }, `${LIST};q=0, ${V2}`, [['platform', amd64V2.digest]]);
test(plans, 'a list accepted with a low weight is still served first (Crane order, not weights)', { schema1, schema2: dockerList }, `${S1S}, ${V2}, ${LIST};q=0.1`, [
  ['list', dockerList.digest],
  ['schema1', schema1.digest],
]);

// 3. a schema 2 / OCI image manifest the client accepts
test(plans, 'a Docker v2s2 manifest the client accepts comes before schema 1', { schema1, schema2: v2 }, ALL_SKOPEO, [
  ['image', v2.digest],
  ['schema1', schema1.digest],
]);
test(plans, 'an OCI manifest the client accepts', { schema1: null, schema2: oci }, `${INDEX}, ${OCI}`, [['image', oci.digest]]);
test(plans, 'an OCI manifest for a client that accepts only Docker types is not offered', { schema1: null, schema2: oci }, `${V2}, ${LIST}`, []);

// 4. schema 1
test(plans, 'schema 1 for a client that asks only for it', { schema1, schema2: v2 }, S1S, [['schema1', schema1.digest]]);
test(plans, 'schema 1 for a client that asks for unsigned schema 1', { schema1, schema2: v2 }, S1, [['schema1', schema1.digest]]);
test(plans, 'schema 1 for a client accepting application/json', { schema1, schema2: oci }, 'application/json', [['schema1', schema1.digest]]);
test(plans, 'schema 1 when it is the only unit and the client reads it', { schema1, schema2: null }, ALL_SKOPEO, [['schema1', schema1.digest]]);
test(plans, 'no schema 1 for a client that does not read it', { schema1, schema2: null }, `${OCI}, ${V2}`, []);

// no Accept header at all: every type is acceptable (RFC 9110), so schema 2 comes first
test(plans, 'no Accept: the schema 2 manifest before schema 1 (DESIGN.md section 3)', { schema1, schema2: v2 }, undefined, [
  ['image', v2.digest],
  ['schema1', schema1.digest],
]);
test(plans, 'no Accept and a list: the list before schema 1', { schema1, schema2: dockerList }, undefined, [
  ['list', dockerList.digest],
  ['schema1', schema1.digest],
]);
test(plans, 'no Accept and no schema 2: schema 1', { schema1, schema2: null }, undefined, [['schema1', schema1.digest]]);
test(plans, 'no Accept and no schema 1: the schema 2 manifest', { schema1: null, schema2: oci }, undefined, [['image', oci.digest]]);
test(plans, 'no Accept and no schema 1: a list is served as is', { schema1: null, schema2: dockerList }, undefined, [['list', dockerList.digest]]);
test(plans, 'an empty Accept header counts as none', { schema1, schema2: v2 }, '', [
  ['image', v2.digest],
  ['schema1', schema1.digest],
]);

// nothing fitting
test(plans, 'nothing fits: a client accepting only text/html', { schema1, schema2: v2 }, 'text/html', []);
test(plans, 'nothing fits: every type refused with q=0', { schema1, schema2: v2 }, `*/*;q=0`, []);
test(plans, 'no units at all', { schema1: null, schema2: null }, ALL_SKOPEO, []);

test('the wildcard */* accepts everything in Crane order', (t) => {
  const steps = planTagResolution({ schema1, schema2: ociIndex }, AcceptSet.from('*/*'));
  t.deepEqual(
    steps.map((s) => s.reason),
    ['list', 'schema1'],
  );
  t.is(steps[0]!.mediaType, INDEX);
});
