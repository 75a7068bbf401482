import { randomBytes, type KeyObject } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { LRUCache } from 'lru-cache'
import { v7 as uuidv7 } from 'uuid'
import { epochSeconds, type Clock } from '../clock.js'
import type { KeyManager } from '../keys/manager.js'
import { decodeJws, isClientAlg, jwsVerifier, KeyProblem, type VerifyJws } from '../oauth/jws.js'

/** The claims of an access token, per RFC 9068 §2.2. */
export interface AccessTokenClaims {
  iss: string
  sub: string
  aud: string | string[]
  exp: number
  iat: number
  nbf?: number
  /** A UUIDv7: its first 48 bits are the issue time in milliseconds. */
  jti: string
  client_id: string
  scope: string
  /** The grant (refresh-token family) a password-grant token belongs to. */
  sid?: string
  /** RFC 9449 §6.1: the thumbprint of the DPoP key the token is bound to. */
  cnf?: { jkt: string }
  /**
   * A client_credentials token's client generation: the client's tokens_revoked_at (ms, 0 for
   * never) in the record it was issued from. A revoke-tokens moves it on, so the token is revoked
   * by comparing two values the database wrote, never the issuer's clock (src/tokens/status.ts).
   */
  cgen?: number
}

export interface VerifiedAccessToken {
  claims: AccessTokenClaims
  kid: string
}

export interface IssueRequest {
  sub: string
  clientId: string
  scopes: string[]
  audiences: string[]
  ttl: number
  grantId?: string | undefined
  /** Bind the token to this DPoP key (its RFC 7638 thumbprint). */
  jkt?: string | undefined
  /** The client's tokensRevokedAt in the record the token is issued from: its `cgen`. */
  clientRevokedAt?: Date | null | undefined
}

export const TOKEN_TYPE = 'at+jwt'

/** The time the token was issued, to the millisecond, from its UUIDv7 jti; NaN if it has none. */
export function issuedAtMs(jti: string): number {
  const hex = jti.replace(/-/g, '')
  if (!/^[0-9a-f]{12}7/i.test(hex)) return Number.NaN
  return parseInt(hex.slice(0, 12), 16)
}

type Sign = (payload: object) => string

/**
 * Random bytes for jtis, fetched from the CSPRNG a few kilobytes at a time: uuid asks for 16 bytes
 * per id, and one call per token was a measurable share of issuing one. The same bytes, fewer calls
 * (node's own randomUUID buffers the same way).
 */
const randomPool = {
  bytes: Buffer.alloc(0),
  at: 0,
  take(n: number): Uint8Array {
    if (this.at + n > this.bytes.length) {
      this.bytes = randomBytes(4096)
      this.at = 0
    }
    const out = this.bytes.subarray(this.at, this.at + n)
    this.at += n
    return out
  },
}

/**
 * Issues and verifies access tokens. Signing and verifying run synchronously on the event loop
 * (fast-jwt over node:crypto, about 0.05 ms for an ES256 signature): WebCrypto, which jose uses,
 * queues each signature on libuv's four threads, where a burst of argon2 password hashes would
 * hold every token up behind it.
 */
export class AccessTokens {
  /**
   * Tokens whose signature already checked out. A resource server introspects the same token on
   * every request it serves, and what a signature proves about a given string never changes, so
   * the expensive part is done once; expiry and the key's publication are checked on every hit,
   * revocation by the caller on every call. Bounded, so a flood of tokens cannot grow it.
   */
  private readonly verified = new LRUCache<string, VerifiedAccessToken>({ max: 10_000 })
  /** Per key: a key never changes under its kid, and these are costly to make. */
  private readonly signers = new WeakMap<KeyObject, Sign>()
  private readonly verifiers = new WeakMap<KeyObject, VerifyJws>()

  constructor(
    private readonly keys: KeyManager,
    private readonly clock: Clock,
    private readonly issuer: () => string,
  ) {}

  issue(req: IssueRequest): { token: string; claims: AccessTokenClaims } {
    const now = this.clock.now()
    const iat = epochSeconds(now)
    const claims: AccessTokenClaims = {
      iss: this.issuer(),
      sub: req.sub,
      aud: req.audiences.length === 1 ? req.audiences[0]! : req.audiences,
      exp: iat + req.ttl,
      iat,
      jti: uuidv7({ msecs: now.getTime(), random: randomPool.take(16) }),
      client_id: req.clientId,
      scope: req.scopes.join(' '),
      ...(req.grantId !== undefined && { sid: req.grantId }),
      ...(req.jkt !== undefined && { cnf: { jkt: req.jkt } }),
      ...(req.clientRevokedAt !== undefined && { cgen: req.clientRevokedAt?.getTime() ?? 0 }),
    }
    const signing = this.keys.signingKey()
    let sign = this.signers.get(signing.key)
    if (sign === undefined) {
      sign = createSigner({
        key: signing.key.export({ format: 'pem', type: 'pkcs8' }) as string,
        algorithm: signing.alg,
        kid: signing.kid,
        header: { alg: signing.alg, typ: TOKEN_TYPE },
      }) as Sign
      this.signers.set(signing.key, sign)
    }
    return { token: sign(claims), claims }
  }

  /**
   * The token's claims if it is a well-formed access token of this issuer, signed by a published
   * key with that key's algorithm, and not expired; otherwise undefined. Whether it was revoked
   * is the introspection's business.
   */
  async verify(token: string): Promise<VerifiedAccessToken | undefined> {
    const seen = this.verified.get(token)
    if (seen !== undefined) {
      if (this.inTime(seen.claims) && this.keys.isPublished(seen.kid)) return seen
      this.verified.delete(token)
      return undefined
    }
    const verified = await this.verifySignature(token)
    if (verified !== undefined) this.verified.set(token, verified)
    return verified
  }

  private inTime(claims: AccessTokenClaims): boolean {
    const now = epochSeconds(this.clock.now())
    return now < claims.exp && (claims.nbf === undefined || claims.nbf <= now)
  }

  private async verifySignature(token: string): Promise<VerifiedAccessToken | undefined> {
    const header = decodeJws(token)?.header
    if (header === undefined) return undefined
    const { kid, alg } = header
    if (typeof kid !== 'string' || !isClientAlg(alg) || header['typ'] !== TOKEN_TYPE) return undefined
    const key = await this.keys.verificationKey(kid, alg)
    if (key === undefined) return undefined
    let verify = this.verifiers.get(key)
    if (verify === undefined) {
      // Expiry and not-before are checked below, against the injected clock.
      verify = jwsVerifier(key, alg)
      this.verifiers.set(key, verify)
    }
    let payload: Record<string, unknown>
    try {
      payload = verify(token).payload
    } catch (err) {
      if (err instanceof KeyProblem) return undefined
      throw err
    }
    const claims = accessTokenClaims(payload, this.issuer())
    return claims !== undefined && this.inTime(claims) ? { claims, kid } : undefined
  }
}

/** RFC 9068 §2.2: the claims an access token of ours must have, with the right types. */
function accessTokenClaims(p: Record<string, unknown>, issuer: string): AccessTokenClaims | undefined {
  const str = (v: unknown) => typeof v === 'string'
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v)
  if (p['iss'] !== issuer || !str(p['sub']) || !str(p['jti']) || !str(p['client_id'])) return undefined
  if (!num(p['exp']) || !num(p['iat']) || (p['nbf'] !== undefined && !num(p['nbf']))) return undefined
  const aud = p['aud']
  if (!(str(aud) || (Array.isArray(aud) && aud.length > 0 && aud.every(str)))) return undefined
  if (p['scope'] !== undefined && !str(p['scope'])) return undefined
  if (p['sid'] !== undefined && !str(p['sid'])) return undefined
  const cnf = p['cnf'] as { jkt?: unknown } | undefined
  if (cnf !== undefined && (typeof cnf !== 'object' || cnf === null || !str(cnf.jkt))) return undefined
  return { scope: '', ...p } as unknown as AccessTokenClaims
}
