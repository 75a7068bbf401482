import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import { NO_ORIGIN, type AuditRecorder, type Origin } from '../audit/events.js'
import { clientRepository, type Client, type GrantType } from '../clients/repository.js'
import { addSeconds, type Clock } from '../clock.js'
import type { Database, Executor } from '../db/schema.js'
import { invalidGrant } from '../errors.js'
import { randomSecret, sha256 } from '../secrets.js'
import type { User } from '../users/repository.js'
import type { Change, ChangeWriter } from '../view/changes.js'
import type { AccessTokens } from './access-tokens.js'
import { tokenRepository, type Grant } from './repository.js'
import { RevocationBatcher } from './revocation-batch.js'

/** RFC 6749 §5.1 */
export interface TokenResponse {
  access_token: string
  /** RFC 9449 §5: DPoP for a token bound to a key. */
  token_type: 'Bearer' | 'DPoP'
  expires_in: number
  scope: string
  refresh_token?: string
}

export interface TokenLifetimes {
  accessTokenTtl: number
  refreshTokenTtl: number
}

/** The refresh token presented and what it was issued for, once it is known to be of a live grant. */
export interface LiveRefreshToken {
  hash: Buffer
  grant: Grant
  /** Whether it had been exchanged already when it was read: a replay, which rotate() tells. */
  spent: boolean
}

export class TokenService {
  private readonly revocations: RevocationBatcher

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly accessTokens: AccessTokens,
    private readonly defaults: TokenLifetimes,
    private readonly changes: ChangeWriter,
    private readonly audit: AuditRecorder,
    /** Told of every access token issued, once signed: what the metrics count. */
    private readonly issued: (client: Client, grantType: GrantType) => void = () => undefined,
  ) {
    this.revocations = new RevocationBatcher(db, clock, changes)
  }

  private accessTtl(client: Client): number {
    return client.accessTokenTtl ?? this.defaults.accessTokenTtl
  }

  private refreshTtl(client: Client): number {
    return client.refreshTokenTtl ?? this.defaults.refreshTokenTtl
  }

  /**
   * client_credentials: the client is the subject, and there is no refresh token (RFC 6749
   * §4.4.3). With `jkt`, the token is bound to that DPoP key.
   */
  async issueForClient(client: Client, scopes: string[], audiences: string[], jkt?: string): Promise<TokenResponse> {
    const ttl = this.accessTtl(client)
    const { token } = this.accessTokens.issue({ sub: client.clientId, clientId: client.clientId, scopes, audiences, ttl, jkt, clientRevokedAt: client.tokensRevokedAt })
    this.issued(client, 'client_credentials')
    return { access_token: token, token_type: tokenType(jkt), expires_in: ttl, scope: scopes.join(' ') }
  }

  /**
   * password: a new grant for the user, its access token, and a refresh token when the client may
   * use the refresh_token grant. With `jkt` (a DPoP proof came with the request), the grant is
   * bound to that key: its access tokens, and every refresh of the family (src/oauth/grants/
   * refresh-token.ts).
   *
   * `user` is the user as the password was checked against: the grant is made only if the user is
   * still enabled and has that password hash when their row is locked. A password changed (or the
   * user disabled, and their tokens revoked) while the login was under way stops it, as it would
   * have a moment later.
   */
  async startGrant(client: Client, user: User, scopes: string[], audiences: string[], jkt?: string): Promise<TokenResponse> {
    const now = this.clock.now()
    const accessTtl = this.accessTtl(client)
    const withRefresh = client.grantTypes.includes('refresh_token')
    const refresh = withRefresh ? randomSecret() : undefined
    const refreshExpiry = addSeconds(now, this.refreshTtl(client))
    const accessExpiry = addSeconds(now, accessTtl)
    const grant = { id: randomUUID(), clientId: client.clientId, userId: user.id, scopes, audiences, dpopJkt: jkt ?? null }
    await this.db.transaction().execute(async (trx) => {
      const owner = await tokenRepository.lockGrantOwners(trx, client.clientId, user.id)
      if (owner === undefined) throw invalidGrant('invalid username or password', 'user or client deleted during login')
      if (owner.disabled || owner.passwordHash !== user.passwordHash) {
        throw invalidGrant('invalid username or password', 'password changed or user disabled during login')
      }
      const until = refresh !== undefined && refreshExpiry > accessExpiry ? refreshExpiry : accessExpiry
      await tokenRepository.insertGrant(trx, grant, now, until)
      if (refresh !== undefined) await tokenRepository.insertRefreshToken(trx, sha256(refresh), grant.id, now, refreshExpiry)
    })
    const { token } = this.accessTokens.issue({
      sub: user.id,
      clientId: client.clientId,
      scopes,
      audiences,
      ttl: accessTtl,
      grantId: grant.id,
      jkt,
    })
    this.issued(client, 'password')
    return {
      access_token: token,
      token_type: tokenType(jkt),
      expires_in: accessTtl,
      scope: scopes.join(' '),
      ...(refresh !== undefined && { refresh_token: refresh }),
    }
  }

  /**
   * Revokes every grant of the user: their refresh tokens and the access tokens issued with them.
   * False when there is no such user.
   */
  async revokeAllForUser(userId: string): Promise<boolean> {
    const now = this.clock.now()
    return this.changes.write(async (trx, change) => {
      // Waits for logins under way, so that their grants are revoked too.
      if (!(await tokenRepository.lockUser(trx, userId))) return false
      await tokenRepository.revokeGrantsOfUser(trx, userId, now)
      change({ kind: 'user', subject: userId })
      return true
    })
  }

  /** Revokes every token issued to the client so far, of any grant. */
  async revokeAllForClient(clientId: string): Promise<boolean> {
    const now = this.clock.now()
    return this.changes.write(async (trx, change) => {
      if (!(await clientRepository.revokeTokens(trx, clientId, now))) return false
      await tokenRepository.revokeGrantsOfClient(trx, clientId, now)
      change({ kind: 'client', subject: clientId })
      return true
    })
  }

  /** The grant a refresh token (used or not, expired or not) belongs to; undefined if unknown. */
  async grantOfRefreshToken(token: string): Promise<Grant | undefined> {
    return (await tokenRepository.findRefreshToken(this.db, sha256(token)))?.grant
  }

  /**
   * Deny-lists an access token until it expires, on every instance. False if it already was; that
   * caller waits for the instances too (src/tokens/revocation-batch.ts).
   */
  denyAccessToken(jti: string, expiresAt: Date): Promise<boolean> {
    return this.revocations.revoke({ kind: 'access_token', jti, until: expiresAt })
  }

  /**
   * Revokes a grant (a refresh-token family with its access tokens) on every instance. False if it
   * was revoked already (or is gone); that caller waits for the instances too.
   */
  revokeGrant(grantId: string): Promise<boolean> {
    return this.revocations.revoke({ kind: 'grant', grantId })
  }

  /**
   * The grant behind a refresh token of this client, if the grant is live and the token unexpired.
   * Expired, revoked, unknown or another client's tokens are invalid_grant. Whether it was spent is
   * only noted here: rotate() decides that, in its transaction, for a replay and a race alike.
   */
  async findRefreshToken(client: Client, token: string): Promise<LiveRefreshToken> {
    const hash = sha256(token)
    const record = await tokenRepository.findRefreshToken(this.db, hash)
    const now = this.clock.now()
    if (record === undefined || record.grant.clientId !== client.clientId) {
      throw invalidGrant('refresh token is invalid', 'unknown refresh token or another client\u2019s')
    }
    if (record.grant.revokedAt !== null) throw invalidGrant('refresh token is invalid', 'grant revoked')
    if (record.expiresAt <= now) throw invalidGrant('refresh token is invalid', 'refresh token expired')
    return { hash, grant: record.grant, spent: record.usedAt !== null }
  }

  /**
   * Rotates the refresh token (RFC 6749 §6, RFC 9700 §4.14.2): the presented one is spent, a new
   * one is issued in the same grant. A token spent already is reuse: the whole family is revoked,
   * and that is recorded as a security event from `origin`. The one place that tells is the
   * conditional update that spends the token, so of concurrent exchanges of one token exactly one
   * wins and to the others it is reuse as well. A grant revoked since it was read (a revocation
   * racing this refresh) is invalid_grant, and nothing is issued: the grant is extended in the same
   * transaction only while it is not revoked. With `jkt` the access token is bound to that DPoP
   * key (for a bound grant, the caller has checked it is the grant's); with `bind` too, an
   * unbound grant is bound to it, in the same transaction that spends the presented token.
   */
  async rotate(
    client: Client,
    presented: LiveRefreshToken,
    scopes: string[],
    audiences: string[],
    origin: Origin = NO_ORIGIN,
    jkt?: string,
    bind = false,
  ): Promise<TokenResponse> {
    const now = this.clock.now()
    const accessTtl = this.accessTtl(client)
    const refresh = randomSecret()
    const refreshExpiry = addSeconds(now, this.refreshTtl(client))
    const accessExpiry = addSeconds(now, accessTtl)
    const grantId = presented.grant.id
    const won = await this.changes.write(async (trx, change) => {
      if (!(await tokenRepository.markUsed(trx, presented.hash, now))) {
        await revokeGrantIn(trx, grantId, now, change)
        return false
      }
      if (!(await tokenRepository.extendLiveGrant(trx, grantId, refreshExpiry > accessExpiry ? refreshExpiry : accessExpiry))) {
        throw invalidGrant('refresh token is invalid', `grant ${grantId} revoked during the refresh`)
      }
      if (bind && jkt !== undefined) await tokenRepository.bindGrant(trx, grantId, jkt)
      await tokenRepository.insertRefreshToken(trx, sha256(refresh), grantId, now, refreshExpiry)
      return true
    })
    if (!won) {
      // Spent when it was read: a replay; unspent then, so another exchange got in first: a race.
      const concurrent = !presented.spent
      this.recordReuse(client, presented.grant, origin, concurrent)
      throw invalidGrant('refresh token is invalid', `refresh token reused${concurrent ? ' concurrently' : ''}: grant ${grantId} revoked`)
    }
    const { token } = this.accessTokens.issue({
      sub: presented.grant.userId,
      clientId: client.clientId,
      scopes,
      audiences,
      ttl: accessTtl,
      grantId,
      jkt,
    })
    this.issued(client, 'refresh_token')
    return { access_token: token, token_type: tokenType(jkt), expires_in: accessTtl, scope: scopes.join(' '), refresh_token: refresh }
  }

  private recordReuse(client: Client, grant: Grant, origin: Origin, concurrent: boolean): void {
    this.audit.record({
      type: 'refresh_token.reused',
      address: origin.address,
      clientId: client.clientId,
      userId: grant.userId,
      grantId: grant.id,
      concurrent,
    })
  }
}

const tokenType = (jkt: string | undefined): TokenResponse['token_type'] => (jkt === undefined ? 'Bearer' : 'DPoP')

/** Revokes the grant within `trx`, recording the change if it was live; whether it was. */
export async function revokeGrantIn(trx: Executor, grantId: string, now: Date, change: (c: Change) => void): Promise<boolean> {
  const until = await tokenRepository.revokeGrant(trx, grantId, now)
  if (until !== undefined) change({ kind: 'grant', subject: grantId, until })
  return until !== undefined
}
