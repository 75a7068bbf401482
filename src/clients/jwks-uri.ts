// Fetching a client's JWK Set from its jwks_uri, the one place where a client makes this server
// open a connection. The URL is the client's choice (an administrator registers it, but it names
// whatever host its DNS says), so the fetch is kept from becoming a way into the network it runs
// in (SSRF): https only; the address is checked as the connection is made, after DNS, so a name
// that resolves to a private address (or rebinds to one) is refused; no redirects; a size cap and
// a short timeout; and at most one fetch per URL per cool-down, whatever callers ask.
import { BlockList, isIP } from 'node:net'
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
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return Promise.reject(new JwksFetchError('jwks_uri is not a URL'))
  }
  const secure = url.protocol === 'https:'
  if (!secure && !(settings.allowInsecure && url.protocol === 'http:')) {
    return Promise.reject(new JwksFetchError('jwks_uri is not https'))
  }
  // An address in the URL itself is never looked up, so it is checked here.
  const literal = url.hostname.replace(/^\[(.*)\]$/, '$1')
  if (!settings.allowInsecure && isIP(literal) !== 0 && !isPublicAddress(literal)) {
    return Promise.reject(new JwksFetchError(`jwks_uri names a non-public address (${literal})`))
  }
  return new Promise((resolve, reject) => {
    const fail = (message: string) => reject(new JwksFetchError(message))
    const request = (secure ? httpsRequest : httpRequest)(
      url,
      {
        method: 'GET',
        headers: { accept: 'application/jwk-set+json, application/json' },
        agent: false,
        signal: AbortSignal.timeout(settings.timeoutMs),
        ...(!settings.allowInsecure && { lookup: publicOnlyLookup }),
      },
      (res) => {
        // No redirects are followed: a 3xx is as good as an error.
        if (res.statusCode !== 200) {
          res.resume()
          return fail(`jwks_uri answered ${res.statusCode}`)
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
// ranges, multicast, and the special-purpose blocks (RFC 6890) that lead to any of them.
const NON_PUBLIC = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  NON_PUBLIC.addSubnet(net, prefix, 'ipv4')
}
for (const [net, prefix] of [
  // Unspecified, loopback and IPv4-compatible; IPv4-mapped (an IPv4 address in IPv6 clothes).
  ['::', 96],
  ['::ffff:0:0', 96],
  // NAT64 (they lead to IPv4 addresses, private ones included), discard-only, Teredo, 6to4.
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001::', 32],
  ['2001:db8::', 32],
  ['2002::', 16],
  // Unique-local, link-local, site-local (deprecated), multicast.
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  NON_PUBLIC.addSubnet(net, prefix, 'ipv6')
}

/** Whether a jwks_uri may connect to this address. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address)
  if (family === 0) return false
  return !NON_PUBLIC.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/**
 * dns.lookup, refusing the connection when any address the name resolves to is not public: the
 * check is made on the addresses the socket will connect to, so a name cannot pass it with one
 * answer and connect with another.
 */
function publicOnlyLookup(hostname: string, options: { family?: number | string; all?: boolean }, callback: LookupCallback): void {
  dnsLookup(hostname, { family: options.family as 0, all: true }, (err, addresses) => {
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
