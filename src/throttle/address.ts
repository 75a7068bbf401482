import { isIPv4, isIPv6 } from 'node:net'

/**
 * The network a per-address budget counts: an IPv4 address as it is, an IPv6 address by its
 * first `ipv6Prefix` bits (64 by default). One IPv6 host is usually handed a whole /64 (RFC 6177,
 * SLAAC), and often a /56 or /48, so counting each /128 would give every IPv6 client 2^64 budgets
 * and the throttle table a row for each. Written as `2001:db8:1:2::/64`, one spelling per network.
 */
export function addressKey(address: string, ipv6Prefix: number): string {
  if (isIPv4(address)) return address
  const bare = address.replace(/%.*$/, '') // a zone id names an interface, not a network
  if (!isIPv6(bare)) return address
  const groups = ipv6Groups(bare)
  const kept = groups.map((g, i) => {
    const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16))
    return bits === 0 ? 0 : g & ((0xffff << (16 - bits)) & 0xffff)
  })
  const used = Math.ceil(ipv6Prefix / 16)
  return `${kept.slice(0, used).map((g) => g.toString(16)).join(':')}${used < 8 ? '::' : ''}/${ipv6Prefix}`
}

/** The eight 16-bit groups of a valid IPv6 address (with `::` and a trailing dotted IPv4 part). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase()
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)))
  const front = parse(head)
  if (tail === undefined) return front
  const back = parse(tail)
  return [...front, ...Array<number>(8 - front.length - back.length).fill(0), ...back]
}
