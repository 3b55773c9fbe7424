import test from 'ava';
import { loadConfig } from '../../src/config/load-config.ts';
import { parseIpRanges, rangeMatcher } from '../../src/domain/ip-ranges.ts';
import { clientAddress } from '../../src/http/client-address.ts';

const proxies = rangeMatcher(parseIpRanges('10.0.0.0/8, 192.0.2.1 ::1'));
const nobody = rangeMatcher([]);

const cases: Array<[string, string, string | undefined, (a: string) => boolean, string]> = [
  ['no proxy trusted: the header is never read', '10.0.0.5', '203.0.113.7', nobody, '10.0.0.5'],
  ['a peer that is not a trusted proxy: its header proves nothing', '198.51.100.9', '203.0.113.7', proxies, '198.51.100.9'],
  ['a trusted proxy: the address it appended', '10.0.0.5', '203.0.113.7', proxies, '203.0.113.7'],
  ['what the client wrote left of it is ignored', '10.0.0.5', '1.2.3.4, 203.0.113.7', proxies, '203.0.113.7'],
  ['a chain of trusted proxies is walked from the right', '10.0.0.5', '1.2.3.4, 203.0.113.7, 10.1.1.1, 192.0.2.1', proxies, '203.0.113.7'],
  ['all hops trusted: the leftmost', '10.0.0.5', '10.9.9.9, 10.1.1.1', proxies, '10.9.9.9'],
  ['garbage stops the walk at the last address placed', '10.0.0.5', '203.0.113.7, unknown, 10.1.1.1', proxies, '10.1.1.1'],
  ['an empty hop stops it too', '10.0.0.5', '203.0.113.7,', proxies, '10.0.0.5'],
  ['ports and brackets are dropped', '10.0.0.5', '[2001:db8::7]:4711', proxies, '2001:db8::7'],
  ['an IPv4 hop with a port', '::1', '203.0.113.7:4711', proxies, '203.0.113.7'],
  ['an IPv4 peer on a dual-stack socket', '::ffff:10.0.0.5', '203.0.113.7', proxies, '203.0.113.7'],
  ['no header: the peer, plain', '::ffff:10.0.0.5', undefined, proxies, '10.0.0.5'],
];
for (const [title, peer, header, trusted, expected] of cases) {
  test(`client address: ${title}`, (t) => {
    t.is(clientAddress(peer, header, trusted), expected);
  });
}

test('VOLREG_TRUSTED_PROXIES takes addresses and CIDR ranges, and is empty by default', (t) => {
  t.deepEqual(loadConfig({}).config.trustedProxies, []);
  const { config } = loadConfig({ VOLREG_TRUSTED_PROXIES: '127.0.0.1, 10.0.0.0/8 fd00::/8' });
  t.deepEqual(config.trustedProxies, [
    { address: '127.0.0.1', family: 'ipv4', prefix: 32 },
    { address: '10.0.0.0', family: 'ipv4', prefix: 8 },
    { address: 'fd00::', family: 'ipv6', prefix: 8 },
  ]);
});

test('VOLREG_TRUSTED_PROXIES refuses what is not an address or range, naming it', (t) => {
  for (const [value, message] of [
    ['nginx', /"nginx" is not an IP address or CIDR range/],
    ['10.0.0.0/33', /"10.0.0.0\/33": the prefix length must be 0 to 32/],
    ['10.0.0.0/8/8', /not an IP address or CIDR range/],
    ['::1/x', /the prefix length must be 0 to 128/],
  ] as const) {
    const err = t.throws(() => loadConfig({ VOLREG_TRUSTED_PROXIES: value }));
    t.regex(err.message, new RegExp(`^VOLREG_TRUSTED_PROXIES: .*${message.source}`), value);
  }
});
