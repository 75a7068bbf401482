import type { Kysely } from 'kysely'
import type { Client } from '../clients/repository.js'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import type { AccessTokens } from '../tokens/access-tokens.js'
import { tokenRepository } from '../tokens/repository.js'
import { sha256 } from '../secrets.js'
import { looksLikeJwt } from './introspection.js'

/**
 * RFC 7009 §2.1. A client revokes only its own tokens; anything else (unknown, expired, already
 * revoked, another client's) succeeds without effect, so the answer tells the caller nothing.
 * A refresh token takes its whole grant with it: every refresh token of the family and the
 * access tokens issued from it. An access token goes on the deny-list until it expires.
 */
export async function revoke(
  deps: { db: Kysely<Database>; clock: Clock; accessTokens: AccessTokens },
  caller: Client,
  token: string,
): Promise<void> {
  const now = deps.clock.now()
  if (looksLikeJwt(token)) {
    const verified = await deps.accessTokens.verify(token)
    if (verified === undefined || verified.claims.client_id !== caller.clientId) return
    await tokenRepository.denyAccessToken(deps.db, verified.claims.jti, new Date(verified.claims.exp * 1000))
    return
  }
  const record = await tokenRepository.findRefreshToken(deps.db, sha256(token))
  if (record === undefined || record.grant.clientId !== caller.clientId) return
  await tokenRepository.revokeGrant(deps.db, record.grant.id, now)
}
