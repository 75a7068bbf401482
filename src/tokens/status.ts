import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import type { Clock } from '../clock.js'
import type { AccessTokens, AccessTokenClaims } from './access-tokens.js'
import { issuedAtMs } from './access-tokens.js'
import { sha256 } from '../secrets.js'
import { tokenRepository, type AccessTokenStatus, type Grant } from './repository.js'
import { toClient, type Client } from '../clients/repository.js'

export interface ActiveAccessToken {
  kind: 'access_token'
  claims: AccessTokenClaims
  /** The user's current username, for password-grant tokens. */
  username: string | undefined
}

export interface ActiveRefreshToken {
  kind: 'refresh_token'
  grant: Grant
  username: string
  issuedAt: Date
  expiresAt: Date
}

/**
 * Whether a token is live right now, asked of the database every time: revocation on any instance
 * is seen at once, because nothing here is cached but the public keys (whose removal is also
 * checked against the database). The price is one round trip of primary-key lookups per access
 * token; a cache of "active" answers would have to be emptied on every instance before /revoke
 * answers, which a poll cannot promise, so there is none.
 */
export class TokenStatus {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly accessTokens: AccessTokens,
  ) {}

  /** The access token's claims if it is ours, unexpired and not revoked in any way; else undefined. */
  async activeAccessToken(token: string): Promise<ActiveAccessToken | undefined> {
    return (await this.check(token, undefined)).active
  }

  /**
   * activeAccessToken, and the calling client's record read in the same round trip, for
   * introspection to authenticate its caller with. `caller` is 'unread' when the token did not
   * verify and so no query was made.
   */
  activeAccessTokenWithCaller(token: string, callerId: string) {
    return this.check(token, callerId)
  }

  private async check(
    token: string,
    callerId: string | undefined,
  ): Promise<{ active: ActiveAccessToken | undefined; caller: Client | undefined | 'unread' }> {
    const verified = await this.accessTokens.verify(token)
    if (verified === undefined) return { active: undefined, caller: 'unread' }
    const { claims, kid } = verified
    // client_credentials tokens have the client as subject and belong to no grant.
    const userId = claims.sid !== undefined ? claims.sub : undefined
    const s = await tokenRepository.accessTokenStatus(this.db, {
      jti: claims.jti,
      kid,
      clientId: claims.client_id,
      userId,
      grantId: claims.sid,
      callerId,
    })
    const caller = s.caller === undefined ? undefined : toClient(s.caller)
    return { active: isActive(claims, s) ? { kind: 'access_token', claims, username: s.username ?? undefined } : undefined, caller }
  }

  /** The refresh token's grant if it can still be exchanged; else undefined. */
  async activeRefreshToken(token: string): Promise<ActiveRefreshToken | undefined> {
    const record = await tokenRepository.findRefreshToken(this.db, sha256(token))
    if (record === undefined || record.usedAt !== null || record.grant.revokedAt !== null) return undefined
    if (record.expiresAt <= this.clock.now()) return undefined
    // The access-token query answers for the client and the user too; no jti or kid is ''.
    const s = await tokenRepository.accessTokenStatus(this.db, {
      jti: '',
      kid: '',
      clientId: record.grant.clientId,
      userId: record.grant.userId,
      grantId: undefined,
    })
    if (!s.clientExists || !s.userExists || s.userDisabled || s.username === null) return undefined
    return { kind: 'refresh_token', grant: record.grant, username: s.username, issuedAt: record.issuedAt, expiresAt: record.expiresAt }
  }
}

function isActive(claims: AccessTokenClaims, s: AccessTokenStatus): boolean {
  if (s.denied || !s.clientExists) return false
  if (s.keyState === null || s.keyState === 'removed') return false
  if (s.clientRevokedAt !== null && !(issuedAtMs(claims.jti) > s.clientRevokedAt.getTime())) return false
  if (claims.sid !== undefined) {
    if (!s.grantExists || s.grantRevokedAt !== null) return false
    if (!s.userExists || s.userDisabled) return false
  }
  return true
}
