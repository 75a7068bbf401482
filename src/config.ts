// The environment, parsed once into a typed Config. Every variable is documented in .env.example.

import { isIP } from 'node:net'
import { availableParallelism } from 'node:os'
import { LIMITS } from './input.js'
import { DEFAULT_VIEW_BOUNDS } from './view/view.js'

export type SigningAlg = 'ES256' | 'EdDSA' | 'RS256' | 'PS256'
export const SIGNING_ALGS: readonly SigningAlg[] = ['ES256', 'EdDSA', 'RS256', 'PS256']

export interface Config {
  host: string
  port: number
  adminHost: string
  adminPort: number
  /**
   * The admin API's URL as its callers reach it (ADMIN_URL): the htu its DPoP proofs must name.
   * Undefined until the admin port is known when ADMIN_PORT=0 and ADMIN_URL is unset.
   */
  adminUrl: string | undefined
  /** `iss` of every token; undefined until the public port is known when PORT=0. */
  issuer: string | undefined
  databaseUrl: string | undefined
  /** A direct (session) connection for change notifications; defaults to databaseUrl. */
  databaseListenUrl: string | undefined
  /** Bounds the wait for a pooled connection and every statement, in milliseconds. */
  databaseTimeoutMs: number
  /** Whether to answer the hot paths from the in-memory view (src/view/) while it is fresh. */
  serveFromMemory: boolean
  /** How much of the state the view holds (src/view/view.ts): beyond it, the database is read. */
  viewBounds: { clients: number; revocations: number }
  dataDir: string
  /** 32 bytes; undefined in embedded mode means "generate or load from DATA_DIR". */
  keyEncryptionKey: Buffer | undefined
  /** The key KEY_ENCRYPTION_KEY replaced, while a rotation is under way: it opens, it never seals. */
  keyEncryptionKeyPrevious: Buffer | undefined
  bootstrapAdmin: { clientId: string; clientSecret: string } | undefined
  accessTokenTtl: number
  refreshTokenTtl: number
  signingAlg: SigningAlg
  keyRotationInterval: number
  /**
   * How long /jwks may be cached. A new key is published at least this long (plus the poll
   * interval) before it signs, so a resource server honouring Cache-Control always knows it.
   */
  jwksMaxAge: number
  /** How often each instance re-reads key state and runs housekeeping, in milliseconds. */
  keyPollIntervalMs: number
  /** Failed password logins per username before further attempts are delayed. */
  loginFreeFailures: number
  /** The longest such delay (of any throttle), in seconds. */
  loginMaxDelay: number
  /** Failed password logins per network address, across usernames, before delays start. */
  loginAddressFailures: number
  /** Networks failing one username within the hour before every attempt at it is delayed. */
  loginUserAddresses: number
  /** How many leading bits of an IPv6 address make one network for the per-address budgets. */
  throttleIpv6Prefix: number
  /** Failed client authentications per client id before its failures are answered 429. */
  clientAuthFailures: number
  /** Failed client authentications per network address before the address is delayed. */
  clientAuthAddressFailures: number
  /** Proxies whose X-Forwarded-For names the client (CIDRs); empty: the TCP peer is the client. */
  trustProxy: string[]
  /** argon2 hashes run at once, and how many more may wait. */
  hashConcurrency: number
  hashQueue: number
  /** Days security events are kept before housekeeping deletes them. */
  auditRetentionDays: number
  /** Client ids that get series of their own in tessera_tokens_issued_by_client_total (src/metrics.ts). */
  metricsClientSeries: number
  logLevel: string
  /** How long a shutdown waits for connections to finish before destroying them, in seconds. */
  shutdownTimeout: number
  /** Worker processes (node:cluster); 1 serves from this process, with no cluster. */
  webConcurrency: number
  /** Whose DPoP proofs must carry a nonce: public clients' (default), everyone's, or no one's. */
  dpopNonce: DpopNonceMode
  /** How far a DPoP proof's iat may be from now, either way, in seconds. */
  dpopProofWindow: number
  /** Tests only: jwks_uri may be http and may point at loopback or private addresses. */
  allowInsecureJwksUri: boolean
}

/** Which token requests must carry a server nonce in their DPoP proof (RFC 9449 §8). */
export type DpopNonceMode = 'public' | 'always' | 'never'
const DPOP_NONCE_MODES: readonly DpopNonceMode[] = ['public', 'always', 'never']

export class ConfigError extends Error {
  override name = 'ConfigError'
}

type Env = Record<string, string | undefined>

function str(env: Env, name: string): string | undefined {
  const v = env[name]
  return v === undefined || v.trim() === '' ? undefined : v.trim()
}

function int(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = str(env, name)
  if (raw === undefined) return fallback
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`)
  const n = Number(raw)
  if (n < min || n > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${n}`)
  return n
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = str(env, name)
  if (raw === undefined) return fallback
  if (raw === 'true' || raw === '1') return true
  if (raw === 'false' || raw === '0') return false
  throw new ConfigError(`${name} must be true or false, got "${raw}"`)
}

export function parseKeyEncryptionKey(raw: string, name = 'KEY_ENCRYPTION_KEY'): Buffer {
  const key = Buffer.from(raw, 'base64')
  if (key.length !== 32 || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(raw)) {
    throw new ConfigError(`${name} must be 32 bytes encoded in base64 (try: openssl rand -base64 32)`)
  }
  return key
}

export function loadConfig(env: Env = process.env): Config {
  const port = int(env, 'PORT', 8080, 0, 65535)
  const databaseUrl = postgresUrl(env, 'DATABASE_URL')
  const kekRaw = str(env, 'KEY_ENCRYPTION_KEY')
  const keyEncryptionKey = kekRaw === undefined ? undefined : parseKeyEncryptionKey(kekRaw)
  const previousRaw = str(env, 'KEY_ENCRYPTION_KEY_PREVIOUS')
  const keyEncryptionKeyPrevious = previousRaw === undefined ? undefined : parseKeyEncryptionKey(previousRaw, 'KEY_ENCRYPTION_KEY_PREVIOUS')
  if (keyEncryptionKeyPrevious !== undefined && keyEncryptionKey?.equals(keyEncryptionKeyPrevious)) {
    throw new ConfigError('KEY_ENCRYPTION_KEY_PREVIOUS is the same key as KEY_ENCRYPTION_KEY: set it to the key being replaced, or leave it unset')
  }
  if (databaseUrl !== undefined && keyEncryptionKey === undefined) {
    throw new ConfigError(
      'KEY_ENCRYPTION_KEY is required when DATABASE_URL is set: it encrypts the signing keys stored in ' +
        'Postgres (generate one with: openssl rand -base64 32)',
    )
  }
  const bootstrapId = str(env, 'BOOTSTRAP_ADMIN_CLIENT_ID')
  const bootstrapSecret = str(env, 'BOOTSTRAP_ADMIN_CLIENT_SECRET')
  if ((bootstrapId === undefined) !== (bootstrapSecret === undefined)) {
    throw new ConfigError('BOOTSTRAP_ADMIN_CLIENT_ID and BOOTSTRAP_ADMIN_CLIENT_SECRET go together: set both or neither')
  }
  if (bootstrapSecret !== undefined && bootstrapSecret.length < 16) {
    throw new ConfigError('BOOTSTRAP_ADMIN_CLIENT_SECRET must be at least 16 characters')
  }
  // A client presents them as the token endpoint accepts them (src/input.ts), or not at all.
  for (const [name, value, max] of [
    ['BOOTSTRAP_ADMIN_CLIENT_ID', bootstrapId, LIMITS.clientId],
    ['BOOTSTRAP_ADMIN_CLIENT_SECRET', bootstrapSecret, LIMITS.clientSecret],
  ] as const) {
    if (value !== undefined && (/[\x00-\x1f\x7f]/.test(value) || Buffer.byteLength(value, 'utf8') > max)) {
      throw new ConfigError(`${name} must have no control characters and at most ${max} bytes of UTF-8`)
    }
  }
  const signingAlg = (str(env, 'SIGNING_ALG') ?? 'ES256') as SigningAlg
  if (!SIGNING_ALGS.includes(signingAlg)) {
    throw new ConfigError(`SIGNING_ALG must be one of ${SIGNING_ALGS.join(', ')}, got "${signingAlg}"`)
  }
  const issuer = str(env, 'ISSUER') ?? (port === 0 ? undefined : `http://localhost:${port}`)
  if (issuer !== undefined) validateIssuer(issuer)
  const adminHost = host(env, 'ADMIN_HOST')
  const adminPort = int(env, 'ADMIN_PORT', 8081, 0, 65535)
  const adminUrlRaw = str(env, 'ADMIN_URL')
  const adminUrl = adminUrlRaw !== undefined ? checkAdminUrl(adminUrlRaw) : adminPort === 0 ? undefined : listenerUrl(adminHost, adminPort)
  const webConcurrency = workers(env)
  // One core is left for everything else (the event loop that signs tokens, the database), and
  // the rest is shared among the worker processes.
  const hashConcurrency = int(env, 'HASH_CONCURRENCY', Math.max(1, Math.floor((availableParallelism() - 1) / webConcurrency)), 1, 256)
  if (databaseUrl === undefined && (webConcurrency > 1 || str(env, 'WEB_CONCURRENCY') === 'auto')) {
    throw new ConfigError(
      `WEB_CONCURRENCY=${str(env, 'WEB_CONCURRENCY')} needs DATABASE_URL: the embedded database (PGlite) can be ` +
        'opened by one process only; set DATABASE_URL to run several workers, or WEB_CONCURRENCY=1',
    )
  }
  return {
    host: host(env, 'HOST'),
    port,
    adminHost,
    adminPort,
    adminUrl,
    issuer,
    databaseUrl,
    databaseListenUrl: postgresUrl(env, 'DATABASE_LISTEN_URL') ?? databaseUrl,
    databaseTimeoutMs: int(env, 'DATABASE_TIMEOUT_MS', 5000, 100, 600_000),
    serveFromMemory: bool(env, 'SERVE_FROM_MEMORY', true),
    viewBounds: {
      clients: int(env, 'VIEW_CLIENTS', DEFAULT_VIEW_BOUNDS.clients, 1, 10_000_000),
      revocations: int(env, 'VIEW_REVOCATIONS', DEFAULT_VIEW_BOUNDS.revocations, 1, 100_000_000),
    },
    dataDir: str(env, 'DATA_DIR') ?? './data',
    keyEncryptionKey,
    keyEncryptionKeyPrevious,
    bootstrapAdmin:
      bootstrapId !== undefined && bootstrapSecret !== undefined
        ? { clientId: bootstrapId, clientSecret: bootstrapSecret }
        : undefined,
    accessTokenTtl: int(env, 'ACCESS_TOKEN_TTL', 600, 1),
    refreshTokenTtl: int(env, 'REFRESH_TOKEN_TTL', 1_209_600, 1),
    signingAlg,
    keyRotationInterval: int(env, 'KEY_ROTATION_INTERVAL', 2_592_000, 1),
    jwksMaxAge: int(env, 'JWKS_MAX_AGE', 300, 0, 86_400),
    keyPollIntervalMs: int(env, 'KEY_POLL_INTERVAL_MS', 1000, 50, 60_000),
    loginFreeFailures: int(env, 'LOGIN_FREE_FAILURES', 5, 1, 1000),
    loginMaxDelay: int(env, 'LOGIN_MAX_DELAY', 900, 1, 86_400),
    loginAddressFailures: int(env, 'LOGIN_ADDRESS_FAILURES', 50, 1, 1_000_000),
    loginUserAddresses: int(env, 'LOGIN_USER_ADDRESSES', 10, 1, 1_000_000),
    throttleIpv6Prefix: int(env, 'THROTTLE_IPV6_PREFIX', 64, 32, 128),
    clientAuthFailures: int(env, 'CLIENT_AUTH_FAILURES', 20, 1, 1_000_000),
    clientAuthAddressFailures: int(env, 'CLIENT_AUTH_ADDRESS_FAILURES', 50, 1, 1_000_000),
    trustProxy: cidrs(env, 'TRUST_PROXY'),
    hashConcurrency,
    hashQueue: int(env, 'HASH_QUEUE', 4 * hashConcurrency, 0, 10_000),
    auditRetentionDays: int(env, 'AUDIT_RETENTION_DAYS', 90, 1, 36_500),
    metricsClientSeries: int(env, 'METRICS_CLIENT_SERIES', 100, 0, 100_000),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    shutdownTimeout: int(env, 'SHUTDOWN_TIMEOUT', 10, 1, 3600),
    webConcurrency,
    dpopNonce: oneOf(env, 'DPOP_NONCE', DPOP_NONCE_MODES, 'public'),
    dpopProofWindow: int(env, 'DPOP_PROOF_WINDOW', 300, 1, 3600),
    allowInsecureJwksUri: bool(env, 'ALLOW_INSECURE_JWKS_URI', false),
  }
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = str(env, name)
  if (raw === undefined) return fallback
  if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${raw}"`)
  return raw as T
}

// A listener's address: an IP address or a host name that resolves to one (checked when it listens).
const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/

function host(env: Env, name: string): string {
  const raw = str(env, name)
  if (raw === undefined) return '127.0.0.1'
  if (isIP(raw) === 0 && !HOSTNAME.test(raw)) throw new ConfigError(`${name} must be an IP address or a host name, got "${raw}"`)
  return raw
}

/** The URL with its password replaced, for messages and `tessera config`: it is a credential. */
export function redactUrl(raw: string): string {
  try {
    const url = new URL(raw)
    if (url.password !== '') url.password = '****'
    return url.toString()
  } catch {
    return '(not a URL)'
  }
}

function postgresUrl(env: Env, name: string): string | undefined {
  const raw = str(env, name)
  if (raw === undefined) return undefined
  let protocol: string
  try {
    protocol = new URL(raw).protocol
  } catch {
    throw new ConfigError(`${name} must be a postgres:// URL (postgres://user:password@host:5432/database), got ${redactUrl(raw)}`)
  }
  if (protocol !== 'postgres:' && protocol !== 'postgresql:') {
    throw new ConfigError(`${name} must be a postgres:// URL, got a ${protocol.slice(0, -1)}: URL`)
  }
  return raw
}


// More would mostly add database connections (a pool of up to 10 each), not throughput.
const MAX_WORKERS = 64

function workers(env: Env): number {
  if (str(env, 'WEB_CONCURRENCY') === 'auto') return Math.min(availableParallelism(), MAX_WORKERS)
  try {
    return int(env, 'WEB_CONCURRENCY', 1, 1, MAX_WORKERS)
  } catch {
    throw new ConfigError(`WEB_CONCURRENCY must be a whole number from 1 to ${MAX_WORKERS} or "auto", got "${str(env, 'WEB_CONCURRENCY')}"`)
  }
}

/** A comma-separated list of IP addresses and CIDR blocks, each checked. */
function cidrs(env: Env, name: string): string[] {
  const raw = str(env, name)
  if (raw === undefined) return []
  const list = raw.split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const entry of list) {
    const [address, prefix, extra] = entry.split('/')
    const family = isIP(address ?? '')
    const bits = family === 4 ? 32 : 128
    const ok =
      family !== 0 && extra === undefined && (prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits))
    if (!ok) throw new ConfigError(`${name} must list IP addresses or CIDR blocks separated by commas, got "${entry}"`)
  }
  return list
}

/**
 * The URL a listener on `host` and `port` is reached by from this machine: an IPv6 address in
 * brackets, and the wildcard address as loopback.
 */
export function listenerUrl(host: string, port: number): string {
  const name = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host
  return `http://${name}:${port}`
}

/** ADMIN_URL: an http(s) URL with no credentials, query or fragment; no trailing slash. */
function checkAdminUrl(raw: string): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError(`ADMIN_URL must be a URL, got "${raw}"`)
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ConfigError(`ADMIN_URL must be an http(s) URL with no credentials, query or fragment, got "${raw}"`)
  }
  return url.href.replace(/\/+$/, '')
}

/** RFC 8414 §2: the issuer is an https (or, for development, http) URL with no query or fragment. */
function validateIssuer(issuer: string): void {
  let url: URL
  try {
    url = new URL(issuer)
  } catch {
    throw new ConfigError(`ISSUER must be a URL, got "${issuer}"`)
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search !== '' || url.hash !== '') {
    throw new ConfigError(`ISSUER must be an http(s) URL with no query or fragment, got "${issuer}"`)
  }
}
