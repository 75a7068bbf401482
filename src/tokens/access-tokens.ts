import { SignJWT, jwtVerify, decodeProtectedHeader, errors as joseErrors } from 'jose'
import { LRUCache } from 'lru-cache'
import { v7 as uuidv7 } from 'uuid'
import { epochSeconds, type Clock } from '../clock.js'
import type { KeyManager } from '../keys/manager.js'

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
}

export const TOKEN_TYPE = 'at+jwt'

/** The time the token was issued, to the millisecond, from its UUIDv7 jti; NaN if it has none. */
export function issuedAtMs(jti: string): number {
  const hex = jti.replace(/-/g, '')
  if (!/^[0-9a-f]{12}7/i.test(hex)) return Number.NaN
  return parseInt(hex.slice(0, 12), 16)
}

export class AccessTokens {
  /**
   * Tokens whose signature already checked out. A resource server introspects the same token on
   * every request it serves, and what a signature proves about a given string never changes, so
   * the expensive part is done once; expiry and the key's publication are checked on every hit,
   * revocation by the caller on every call. Bounded, so a flood of tokens cannot grow it.
   */
  private readonly verified = new LRUCache<string, VerifiedAccessToken>({ max: 10_000 })

  constructor(
    private readonly keys: KeyManager,
    private readonly clock: Clock,
    private readonly issuer: () => string,
  ) {}

  async issue(req: IssueRequest): Promise<{ token: string; claims: AccessTokenClaims }> {
    const now = this.clock.now()
    const iat = epochSeconds(now)
    const claims: AccessTokenClaims = {
      iss: this.issuer(),
      sub: req.sub,
      aud: req.audiences.length === 1 ? req.audiences[0]! : req.audiences,
      exp: iat + req.ttl,
      iat,
      jti: uuidv7({ msecs: now.getTime() }),
      client_id: req.clientId,
      scope: req.scopes.join(' '),
      ...(req.grantId !== undefined && { sid: req.grantId }),
    }
    const signing = this.keys.signingKey()
    const token = await new SignJWT({ ...claims })
      .setProtectedHeader({ alg: signing.alg, typ: TOKEN_TYPE, kid: signing.kid })
      .sign(signing.key)
    return { token, claims }
  }

  /**
   * The token's claims if it is a well-formed access token of this issuer, signed by a published
   * key with that key's algorithm, and not expired; otherwise undefined. Whether it was revoked
   * is the introspection's business.
   */
  async verify(token: string): Promise<VerifiedAccessToken | undefined> {
    const seen = this.verified.get(token)
    if (seen !== undefined) {
      const now = epochSeconds(this.clock.now())
      const inTime = now < seen.claims.exp && (seen.claims.nbf === undefined || seen.claims.nbf <= now)
      if (inTime && this.keys.isPublished(seen.kid)) return seen
      this.verified.delete(token)
      return undefined
    }
    const verified = await this.verifySignature(token)
    if (verified !== undefined) this.verified.set(token, verified)
    return verified
  }

  private async verifySignature(token: string): Promise<VerifiedAccessToken | undefined> {
    let kid: string | undefined
    try {
      const header = decodeProtectedHeader(token)
      if (typeof header.kid !== 'string' || typeof header.alg !== 'string') return undefined
      kid = header.kid
      const key = await this.keys.verificationKey(header.kid, header.alg)
      if (key === undefined) return undefined
      const { payload } = await jwtVerify(token, key, {
        issuer: this.issuer(),
        typ: TOKEN_TYPE,
        algorithms: [header.alg],
        currentDate: this.clock.now(),
        requiredClaims: ['sub', 'exp', 'iat', 'jti', 'client_id', 'aud'],
      })
      if (typeof payload['client_id'] !== 'string' || typeof payload.jti !== 'string') return undefined
      if (payload['scope'] !== undefined && typeof payload['scope'] !== 'string') return undefined
      return { claims: { scope: '', ...payload } as AccessTokenClaims, kid }
    } catch (err) {
      if (err instanceof joseErrors.JOSEError || err instanceof TypeError) return undefined
      throw err
    }
  }
}
