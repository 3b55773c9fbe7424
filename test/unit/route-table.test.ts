import test from 'ava';
import { matchRoute } from '../../src/http/router.ts';
import { paths } from '../../src/http/route-table.ts';

const D = `sha256:${'a'.repeat(64)}`;

const routes = test.macro({
  exec(t, path: string, id: string, groups: Record<string, string>) {
  const m = matchRoute(path);
  t.truthy(m, `no route for ${path}`);
  t.is(asText(m?.id), id);
  for (const [k, v] of Object.entries(groups)) t.is(m?.groups[k], v, k);
  },
  title(_: string | undefined, path: string, id: string) {
    return `${path} -> ${id}`;
  },
});

test(routes, '/v2/', 'v2Base', {});
test(routes, '/v2/_catalog', 'catalog', {});
test(routes, paths.blob('a/b/c', D), 'blob', { name: 'a/b/c', digest: D });
test(routes, paths.uploadStart('a/b'), 'uploadStart', { name: 'a/b' });
test(routes, '/v2/a/b/blobs/uploads', 'uploadStart', { name: 'a/b' });
test(routes, paths.upload('x', 'u-1'), 'upload', { name: 'x', uuid: 'u-1' });
test(routes, paths.manifest('team/pg', 'v1'), 'manifest', { name: 'team/pg', reference: 'v1' });
test(routes, paths.manifest('a/manifests/b', 'latest'), 'manifest', { name: 'a/manifests/b', reference: 'latest' });
test(routes, paths.tagsList('a/tags'), 'tagsList', { name: 'a/tags' });
test(routes, paths.referrers('r', D), 'referrers', { name: 'r', digest: D });
test(routes, paths.volumes(), 'volumes', {});
test(routes, paths.volumeTags('host/pg'), 'volumeTags', { name: 'host/pg' });
test(routes, paths.volumeTag('host/pg', 'daily'), 'volumeTag', { name: 'host/pg', tag: 'daily' });
test(routes, paths.volumeContent('pg', 't'), 'volumeContent', { name: 'pg', tag: 't' });
test(routes, paths.volumeContentSha256('pg', 't'), 'volumeContentSha256', { name: 'pg', tag: 't' });
test(routes, paths.volumeVerify('pg', 't'), 'volumeVerify', { name: 'pg', tag: 't' });

test('paths no route owns are unmatched', (t) => {
  for (const p of ['/v2/x', '/v2/x/unknown/y', '/api/v1/other', '/v3/', '/api/v1/volumes/x/tags/t/other']) t.is(matchRoute(p), null, p);
});

/** Branded values compare as the strings they are. */
function asText(value: string | undefined): string | undefined {
  return value;
}
