import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import type { Clock } from '../clock.js'
import type { KeyManager } from '../keys/manager.js'
import type { AccessTokens, AccessTokenClaims } from './access-tokens.js'
import { issuedAtMs } from './access-tokens.js'
import { sha256 } from '../secrets.js'
import { tokenRepository, type AccessTokenStatus, type Grant } from './repository.js'
import { toClient, type Client } from '../clients/repository.js'
import { GONE, UNKNOWN, type MemoryView, type TokenFacts } from '../view/view.js'

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

/** Everything that can make a verified, unexpired access token inactive. */
type Facts = TokenFacts & { keyLive: boolean }

/**
 * Whether a token is live right now. Access tokens are answered from the instance's memory while
 * its view is fresh (src/view/): a lease that every revocation waits for, so memory is exact. When
 * it is not fresh, or the view lacks a record, the same facts are read from the database in one
 * round trip, and the same function decides. Refresh tokens are always read from the database.
 */
export class TokenStatus {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly accessTokens: AccessTokens,
    private readonly keys: Pick<KeyManager, 'isPublished'>,
    private readonly view: MemoryView,
  ) {}

  /** The access token's claims if it is ours, unexpired and not revoked in any way; else undefined. */
  async activeAccessToken(token: string): Promise<ActiveAccessToken | undefined> {
    return (await this.check(token, undefined)).active
  }

  /**
   * activeAccessToken, and the calling client's record, for introspection to authenticate its
   * caller with (from the view, or read in the same round trip). `caller` is 'unread' when the
   * token did not verify and so nothing was looked up.
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
    const ref = { jti: claims.jti, clientId: claims.client_id, userId: claims.sid !== undefined ? claims.sub : undefined, grantId: claims.sid }
    const expMs = claims.exp * 1000

    // From memory: no await between the freshness check and the answer.
    if (this.view.isFresh()) {
      const facts = this.view.tokenFacts({ ...ref, expMs })
      const caller = callerId === undefined ? undefined : this.view.client(callerId)
      if (facts !== UNKNOWN && (callerId === undefined || caller !== UNKNOWN)) {
        return {
          active: answer(claims, { ...facts, keyLive: this.keys.isPublished(kid) }),
          caller: caller === GONE ? undefined : caller,
        }
      }
    }

    const mark = this.view.readMark
    const s = await tokenRepository.accessTokenStatus(this.db, { ...ref, kid, callerId })
    const caller = s.caller === undefined ? undefined : toClient(s.caller)
    if (callerId !== undefined) this.view.offerClient(callerId, caller, mark)
    if (ref.userId !== undefined) {
      this.view.offerUser(ref.userId, s.userExists && s.username !== null ? { username: s.username, disabled: s.userDisabled } : undefined, mark)
    }
    return { active: answer(claims, factsFromDatabase(s)), caller }
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

function factsFromDatabase(s: AccessTokenStatus): Facts {
  return {
    denied: s.denied,
    keyLive: s.keyState !== null && s.keyState !== 'removed',
    clientExists: s.clientExists,
    clientRevokedAt: s.clientRevokedAt,
    userExists: s.userExists,
    userDisabled: s.userDisabled,
    username: s.username,
    // A grant is deleted only once every token issued from it has expired, or with its user or
    // client: absent is as good as revoked.
    grantRevoked: !s.grantExists || s.grantRevokedAt !== null,
  }
}

function answer(claims: AccessTokenClaims, f: Facts): ActiveAccessToken | undefined {
  return isActive(claims, f) ? { kind: 'access_token', claims, username: f.username ?? undefined } : undefined
}

function isActive(claims: AccessTokenClaims, f: Facts): boolean {
  if (f.denied || !f.clientExists || !f.keyLive) return false
  if (claims.sid === undefined) {
    // A client's revoke-tokens moves its generation on; a token issued from an older record of
    // the client is revoked, whatever the issuer's clock said. A token without one (issued before
    // generations) falls back to its jti's time (a UUIDv7), which trusts the issuer's clock.
    const revokedAt = f.clientRevokedAt?.getTime()
    if (revokedAt !== undefined && !(claims.cgen !== undefined ? claims.cgen >= revokedAt : issuedAtMs(claims.jti) > revokedAt)) return false
  } else {
    // A token of a grant answers to its grant alone: revoke-tokens revokes the client's grants in
    // its transaction, and the views apply each (src/view/feed.ts).
    if (f.grantRevoked) return false
    if (!f.userExists || f.userDisabled) return false
  }
  return true
}
