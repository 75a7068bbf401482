import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import type { Clock } from '../clock.js'
import type { AccessTokens, AccessTokenClaims } from './access-tokens.js'
import { issuedAtMs } from './access-tokens.js'
import { sha256 } from '../secrets.js'
import { tokenRepository, type Grant } from './repository.js'

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

export type ActiveToken = ActiveAccessToken | ActiveRefreshToken

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
    const verified = await this.accessTokens.verify(token)
    if (verified === undefined) return undefined
    const { claims, kid } = verified
    // client_credentials tokens have the client as subject and belong to no grant.
    const userId = claims.sid !== undefined ? claims.sub : undefined
    const s = await tokenRepository.accessTokenStatus(this.db, {
      jti: claims.jti,
      kid,
      clientId: claims.client_id,
      userId,
      grantId: claims.sid,
    })
    if (s.denied || !s.clientExists) return undefined
    if (s.keyState === null || s.keyState === 'removed') return undefined
    if (s.clientRevokedAt !== null && !(issuedAtMs(claims.jti) > s.clientRevokedAt.getTime())) return undefined
    if (claims.sid !== undefined) {
      if (!s.grantExists || s.grantRevokedAt !== null) return undefined
      if (!s.userExists || s.userDisabled) return undefined
    }
    return { kind: 'access_token', claims, username: s.username ?? undefined }
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
