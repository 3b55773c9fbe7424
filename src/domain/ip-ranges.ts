import { BlockList, isIP } from 'node:net';

/**
 * IP addresses and CIDR ranges (`10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`): the reverse proxies
 * whose `X-Forwarded-For` volreg believes (VOLREG_TRUSTED_PROXIES).
 */

export interface IpRange {
  address: string;
  family: 'ipv4' | 'ipv6';
  prefix: number;
}

/** One address or range; throws with a message fit for the operator when it is neither. */
export function parseIpRange(text: string): IpRange {
  const [address = '', prefixText, extra] = text.split('/');
  const version = isIP(address);
  if (version === 0 || extra !== undefined) throw new Error(`${JSON.stringify(text)} is not an IP address or CIDR range (e.g. 127.0.0.1, 10.0.0.0/8, ::1)`);
  const family = version === 4 ? 'ipv4' : 'ipv6';
  const bits = version === 4 ? 32 : 128;
  if (prefixText === undefined) return { address, family, prefix: bits };
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) throw new Error(`${JSON.stringify(text)}: the prefix length must be 0 to ${bits}`);
  return { address, family, prefix: Number(prefixText) };
}

/** A comma- or space-separated list of addresses and ranges; empty when the text is. */
export function parseIpRanges(text: string): IpRange[] {
  return text
    .split(/[\s,]+/)
    .filter((s) => s !== '')
    .map(parseIpRange);
}

/** An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, how a dual-stack socket names an IPv4 peer), as IPv4. */
export function plainAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Whether an address lies in one of the ranges (false for anything that is not an address). */
export function rangeMatcher(ranges: readonly IpRange[]): (address: string) => boolean {
  const list = new BlockList();
  for (const r of ranges) list.addSubnet(r.address, r.prefix, r.family);
  return (address) => {
    const plain = plainAddress(address);
    const version = isIP(plain);
    return version !== 0 && list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
  };
}
