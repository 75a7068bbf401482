// Fetching a client's JWK Set from its jwks_uri, the one place where a client makes this server
// open a connection. The URL is the client's choice (an administrator registers it, but it names
// whatever host its DNS says), so the fetch is kept from becoming a way into the network it runs
// in (SSRF): https only; the address is checked as the connection is made, after DNS, so a name
// that resolves to a private address (or rebinds to one) is refused; no redirects; a size cap and
// a short timeout; and at most one fetch per URL per cool-down, whatever callers ask.
import { isIP } from 'node:net'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import type { JwkSet } from './repository.js'

export interface RemoteJwksSettings {
  /** Tests only: http, and any address, loopback included. */
  allowInsecure: boolean
  timeoutMs: number
  maxBytes: number
  /** A key set is used this long before it is fetched again. */
  ttlMs: number
  /** A URL is fetched again for an unknown kid, or after a failure, at most once in this long. */
  cooldownMs: number
}

export const DEFAULT_REMOTE_JWKS: RemoteJwksSettings = {
  allowInsecure: false,
  timeoutMs: 3000,
  maxBytes: 64 * 1024,
  ttlMs: 5 * 60_000,
  cooldownMs: 30_000,
}

// More keys than anyone rotates through; a larger set is a mistake or an attack.
const MAX_REMOTE_KEYS = 100
// Key sets of this many URLs are kept per instance.
const CACHED_URLS = 1000

export class JwksFetchError extends Error {
  override name = 'JwksFetchError'
}

interface Entry {
  keys: JwkSet | undefined
  error: JwksFetchError | undefined
  /** performance.now() of the last fetch, successful or not. */
  fetchedAt: number
  /** performance.now() of the last fetch made for an unknown kid; -Infinity: none yet. */
  refreshedAt: number
  inFlight: Promise<JwkSet> | undefined
}

/** Key sets fetched from jwks_uris, cached per URL. */
export class RemoteJwks {
  private readonly entries = new LRUCache<string, Entry>({ max: CACHED_URLS })

  constructor(private readonly settings: RemoteJwksSettings = DEFAULT_REMOTE_JWKS) {}

  /**
   * The key set at `uri`: the cached one while it is fresh, else fetched. `refresh` (the kid an
   * assertion names is not in the cached set) fetches again, unless the last fetch was within the
   * cool-down. Throws JwksFetchError when there is no usable set.
   */
  async get(uri: string, opts: { refresh?: boolean } = {}): Promise<JwkSet> {
    const now = performance.now()
    let entry = this.entries.get(uri)
    if (entry?.inFlight !== undefined) return entry.inFlight
    if (entry !== undefined) {
      const { cooldownMs, ttlMs } = this.settings
      if (entry.keys === undefined) {
        // The last fetch failed: not again before the cool-down.
        if (now - entry.fetchedAt < cooldownMs) throw entry.error ?? new JwksFetchError('no key set')
      } else if (opts.refresh === true) {
        if (now - entry.refreshedAt < cooldownMs) return entry.keys
        entry.refreshedAt = now
      } else if (now - entry.fetchedAt < ttlMs) {
        return entry.keys
      }
    }
    entry ??= { keys: undefined, error: undefined, fetchedAt: now, refreshedAt: -Infinity, inFlight: undefined }
    const e = entry
    this.entries.set(uri, e)
    e.inFlight = fetchJwks(uri, this.settings).then(
      (keys) => {
        Object.assign(e, { keys, error: undefined, fetchedAt: performance.now(), inFlight: undefined })
        return keys
      },
      (err: unknown) => {
        // Failing closed: a set that can no longer be fetched is not used either.
        const error = err instanceof JwksFetchError ? err : new JwksFetchError(err instanceof Error ? err.message : String(err))
        Object.assign(e, { keys: undefined, error, fetchedAt: performance.now(), inFlight: undefined })
        throw error
      },
    )
    return e.inFlight
  }
}

/** One GET of a JWK Set, under every restriction above. */
export function fetchJwks(uri: string, settings: RemoteJwksSettings): Promise<JwkSet> {
  const refused = refusedJwksUri(uri, settings.allowInsecure)
  if (refused !== undefined) return Promise.reject(new JwksFetchError(refused))
  const url = new URL(uri)
  const secure = url.protocol === 'https:'
  return new Promise((resolve, reject) => {
    const fail = (message: string) => reject(new JwksFetchError(message))
    const request = (secure ? httpsRequest : httpRequest)(
      url,
      {
        method: 'GET',
        headers: { accept: 'application/jwk-set+json, application/json' },
        agent: false,
        signal: AbortSignal.timeout(settings.timeoutMs),
        ...(!settings.allowInsecure && { lookup: publicOnlyLookup() }),
      },
      (res) => {
        // No redirects are followed: a 3xx is as good as an error.
        if (res.statusCode !== 200) {
          res.resume()
          return fail(`jwks_uri answered ${res.statusCode}`)
        }
        // A JWK Set says so (RFC 7517 §8.5.1): an HTML page or a text file that happens to parse
        // is not one, nor is whatever else a misconfigured host serves at that path.
        const type = (res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
        if (type !== 'application/jwk-set+json' && type !== 'application/json') {
          res.resume()
          return fail(`jwks_uri answered ${type === '' ? 'without a content type' : type}, not a JWK Set`)
        }
        const declared = Number(res.headers['content-length'])
        if (Number.isFinite(declared) && declared > settings.maxBytes) {
          res.destroy()
          return fail(`the key set is larger than ${settings.maxBytes} bytes`)
        }
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > settings.maxBytes) {
            res.destroy()
            fail(`the key set is larger than ${settings.maxBytes} bytes`)
            return
          }
          chunks.push(chunk)
        })
        res.on('error', (err) => fail(err.message))
        res.on('end', () => {
          try {
            resolve(parseJwkSet(Buffer.concat(chunks).toString('utf8')))
          } catch (err) {
            fail((err as Error).message)
          }
        })
      },
    )
    request.on('error', (err) => fail(err.name === 'AbortError' || err.name === 'TimeoutError' ? 'jwks_uri timed out' : err.message))
    request.end()
  })
}

function parseJwkSet(text: string): JwkSet {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw new JwksFetchError('the key set is not JSON')
  }
  const keys = (body as { keys?: unknown } | null)?.keys
  if (!Array.isArray(keys) || keys.length > MAX_REMOTE_KEYS || !keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) {
    throw new JwksFetchError('the key set is not a JWK Set')
  }
  return { keys: keys as Record<string, unknown>[] }
}

// Addresses no jwks_uri may reach: this host, private networks, link-local and unique-local
// ranges, multicast, and every block of the IANA special-purpose registries (RFC 6890 and its
// updates), several of which lead to any of the others. Checked by hand, bit by bit: node's
// BlockList also applies an IPv6 rule for ::ffff:0:0/96 to every IPv4 address, which once made
// this list refuse them all.
const NON_PUBLIC_V4: readonly (readonly [string, number])[] = [
  ['0.0.0.0', 8], // this network
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // shared address space (carrier-grade NAT)
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments (DS-Lite, NAT64 discovery, anycast services)
  ['192.0.2.0', 24], // documentation
  ['192.31.196.0', 24], // AS112
  ['192.52.193.0', 24], // AMT
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16],
  ['192.175.48.0', 24], // AS112 direct delegation
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and the limited broadcast address
]
const NON_PUBLIC_V6: readonly (readonly [string, number])[] = [
  // Unspecified, loopback and IPv4-compatible; IPv4-mapped addresses are judged as the IPv4
  // address they carry (below), and IPv4-translated ones (::ffff:0:0:0/96) are refused.
  ['::', 96],
  ['::ffff:0:0:0', 96],
  // NAT64 (they lead to IPv4 addresses, private ones included), discard-only, dummy prefix.
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['100:0:0:1::', 64],
  // IETF protocol assignments (Teredo, benchmarking, AMT, AS112, ORCHID), documentation, 6to4.
  ['2001::', 23],
  ['2001:db8::', 32],
  ['2002::', 16],
  ['2620:4f:8000::', 48],
  ['3fff::', 20],
  ['5f00::', 16], // SRv6 SIDs
  // Unique-local, link-local, site-local (deprecated), multicast.
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
]

/** An address as a number of `bits` bits; undefined when it is not one. */
function addressBits(address: string): { value: bigint; bits: 32 | 128 } | undefined {
  const family = isIP(address)
  if (family === 4) return { value: v4Bits(address), bits: 32 }
  if (family !== 6) return undefined
  // A zone id (fe80::1%eth0) names an interface, not an address.
  let text = address.replace(/%.*$/, '').toLowerCase()
  // A dotted IPv4 tail (::ffff:127.0.0.1) is two groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (dotted !== null) {
    const v4 = v4Bits(dotted[1]!)
    text = `${text.slice(0, dotted.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const groups = (part: string | undefined) => (part === undefined || part === '' ? [] : part.split(':'))
  const left = groups(head)
  const right = groups(tail)
  const all = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return { value: all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n), bits: 128 }
}

const v4Bits = (address: string): bigint => address.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n)

const inRange = (value: bigint, bits: number, [net, prefix]: readonly [string, number]): boolean => {
  const shift = BigInt(bits - prefix)
  return value >> shift === addressBits(net)!.value >> shift
}

/** Whether a jwks_uri may connect to this address (an IP address in any form isIP accepts). */
export function isPublicAddress(address: string): boolean {
  const parsed = addressBits(address)
  if (parsed === undefined) return false
  const { value, bits } = parsed
  if (bits === 32) return !NON_PUBLIC_V4.some((range) => inRange(value, 32, range))
  // IPv4-mapped (::ffff:a.b.c.d): a dual-stack socket connects to the IPv4 address itself.
  if (value >> 32n === 0xffffn) return isPublicAddress([24n, 16n, 8n, 0n].map((s) => (value >> s) & 0xffn).join('.'))
  // Only global unicast (2000::/3) is routed on the Internet at all.
  if (value >> 125n !== 1n) return false
  return !NON_PUBLIC_V6.some((range) => inRange(value, 128, range))
}

/**
 * Why a jwks_uri may not be fetched, judged from the URL alone (no DNS); undefined when it may
 * be tried, its host then checked again at connect time. An address in the URL itself is never
 * looked up, so it is checked here, as the URL parser spells it (decimal, octal, hex and short
 * IPv4 forms are dotted quads by then; IPv6 is bracketed).
 */
export function refusedJwksUri(uri: string, allowInsecure: boolean): string | undefined {
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return 'jwks_uri is not a URL'
  }
  if (url.protocol !== 'https:' && !(allowInsecure && url.protocol === 'http:')) return 'jwks_uri is not https'
  const literal = url.hostname.replace(/^\[(.*)\]$/, '$1')
  if (!allowInsecure && isIP(literal) !== 0 && !isPublicAddress(literal)) return `jwks_uri names a non-public address (${literal})`
  return undefined
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/** How names are resolved: dns.lookup's all-addresses form. */
export type Resolver = (hostname: string, options: { family: 0 | 4 | 6; all: true }, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void

/**
 * A socket's lookup function over `resolve` (dns.lookup by default), refusing the connection when
 * any address the name resolves to is not public: the check is made on the addresses the socket
 * will connect to, so a name cannot pass it with one answer and connect with another.
 */
export function publicOnlyLookup(resolve: Resolver = dnsLookup) {
  return (hostname: string, options: { family?: number | string; all?: boolean }, callback: LookupCallback): void =>
    resolve(hostname, { family: options.family as 0, all: true }, (err, addresses) => {
      if (err !== null) return callback(err, [])
      const refused = addresses.find((a) => !isPublicAddress(a.address))
      if (refused !== undefined || addresses.length === 0) {
        const e: NodeJS.ErrnoException = new Error(`jwks_uri host ${hostname} resolves to a non-public address`)
        e.code = 'ENOTPUBLIC'
        return callback(e, [])
      }
      if (options.all === true) return callback(null, addresses)
      callback(null, addresses[0]!.address, addresses[0]!.family)
    })
}
