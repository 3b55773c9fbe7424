import test from 'ava';
import { parseAccessRules, repositoryPattern } from '../../src/domain/access-rules.ts';

/** Repository patterns and rule matching (src/domain/access-rules.ts); the HTTP behaviour is in test/http/access-control.test.ts. */

const matches = test.macro((t, pattern: string, name: string, expected: boolean) => {
  const re = repositoryPattern(pattern);
  t.truthy(re, pattern);
  t.is(re!.test(name), expected);
});

for (const [pattern, name, expected] of [
  ['**', 'a', true],
  ['**', 'hosts/web1/app', true],
  ['hosts/web1/**', 'hosts/web1/app', true],
  ['hosts/web1/**', 'hosts/web1/a/b', true],
  ['hosts/web1/**', 'hosts/web1', false],
  ['hosts/web1/**', 'hosts/web10/app', false],
  ['team/*', 'team/app', true],
  ['team/*', 'team/app/db', false],
  ['team/*', 'team', false],
  ['*/db', 'site/db', true],
  ['*/db', 'site/x/db', false],
  ['site.a/app', 'siteXa/app', false],
  ['site-*/app', 'site-1/app', true],
] as const) {
  test(`${pattern} ${expected ? 'matches' : 'does not match'} ${name}`, matches, pattern, name, expected);
}

for (const bad of ['', 'Team/*', 'team/', '/team', 'a//b', 'a/***', 'a b', 'a/[x]']) {
  test(`${JSON.stringify(bad)} is not a repository pattern`, (t) => t.is(repositoryPattern(bad), null));
}

test('rules grant by user, group and *; nothing else once there is one; without any, everything', (t) => {
  const rule = (text: string, line: number) => ({ line, text });
  const { policy, problems } = parseAccessRules([
    rule('#volreg group ops ann bo', 1),
    rule('#volreg allow @ops,cy hosts/** pull,delete', 2),
    rule('#volreg allow * shared/* pull', 3),
    rule('#volreg allow dee ** all', 4),
  ]);
  t.deepEqual(problems, []);
  t.true(policy.allows('ann', 'delete', 'hosts/x'));
  t.true(policy.allows('cy', 'pull', 'hosts/x'));
  t.false(policy.allows('cy', 'push', 'hosts/x'));
  t.true(policy.allows('zed', 'pull', 'shared/x'));
  t.false(policy.allows('zed', 'pull', 'hosts/x'));
  t.true(policy.allows('dee', 'overwrite', 'anything/at/all'));
  t.true(parseAccessRules([]).policy.allows('zed', 'delete', 'hosts/x'));
});

test('every problem names its line, in line order', (t) => {
  const { problems } = parseAccessRules([
    { line: 3, text: '#volreg allow @nope ** pull' },
    { line: 5, text: '#volreg group g a' },
    { line: 7, text: '#volreg group g b' },
    { line: 9, text: '#volreg' },
  ]);
  t.deepEqual(
    problems.map((p) => p.split(':')[0]),
    ['line 3', 'line 7', 'line 9'],
  );
});
