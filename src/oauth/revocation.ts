import { decodeProtectedHeader } from 'jose'
import { NO_ORIGIN, type AuditRecorder, type Origin } from '../audit/events.js'
import type { Client } from '../clients/repository.js'
import type { KeyManager } from '../keys/manager.js'
import type { AccessTokens, VerifiedAccessToken } from '../tokens/access-tokens.js'
import type { TokenService } from '../tokens/service.js'
import { looksLikeJwt } from './introspection.js'

export interface RevocationDeps {
  tokens: TokenService
  accessTokens: AccessTokens
  keys: KeyManager
  audit: AuditRecorder
}

/**
 * RFC 7009 §2.1. A client revokes only its own tokens. Anything else (unknown, malformed,
 * expired, already revoked, or another client's) succeeds without effect: §2.2 answers 200 for
 * invalid tokens, and refusing another client's token with an error, as §2.1 suggests, would tell
 * the caller that the string it holds is a live token, which is what introspection refuses too.
 * token_type_hint is not needed: the two kinds of token cannot be mistaken for each other.
 *
 * A refresh token takes its whole grant with it (§2.1 SHOULD): every refresh token of the family
 * and the access tokens issued from it, whose `sid` names the grant. An access token goes on the
 * deny-list until it expires; the refresh token it came with stays usable (§2.1 MAY, not done).
 * Both commit, and every instance has applied them to its view (src/view/), before the response
 * is sent: no instance answers for the token once the client has its answer.
 *
 * A revocation that took effect is a security event from `origin` (the token named by its jti or
 * its grant); one that changed nothing is not.
 */
export async function revoke(deps: RevocationDeps, caller: Client, token: string, origin: Origin = NO_ORIGIN): Promise<void> {
  if (looksLikeJwt(token)) {
    const verified = await verifyWithFreshKeys(deps, token)
    if (verified === undefined || verified.claims.client_id !== caller.clientId) return
    const { claims } = verified
    if (!(await deps.tokens.denyAccessToken(claims.jti, new Date(claims.exp * 1000)))) return
    deps.audit.record({
      type: 'token.revoked',
      via: 'revocation_endpoint',
      address: origin.address,
      clientId: caller.clientId,
      // A token of a grant (`sid`) is a user's, and `sub` is the user; otherwise the client's own.
      userId: claims.sid !== undefined ? claims.sub : null,
      token: { kind: 'access_token', jti: claims.jti },
    })
    return
  }
  const grant = await deps.tokens.grantOfRefreshToken(token)
  if (grant === undefined || grant.clientId !== caller.clientId) return
  if (!(await deps.tokens.revokeGrant(grant.id))) return
  deps.audit.record({
    type: 'token.revoked',
    via: 'revocation_endpoint',
    address: origin.address,
    clientId: caller.clientId,
    userId: grant.userId,
    token: { kind: 'refresh_token', grantId: grant.id },
  })
}

/**
 * Verifies the access token, re-reading the keys first when its kid is unknown here. After an
 * emergency rotation on another instance this one learns the new key only at its next poll; a
 * revocation that gave up on such a token would answer 200 and leave it active everywhere, so
 * unlike introspection (where a miss only fails closed) it must not rely on the poll.
 */
async function verifyWithFreshKeys(deps: RevocationDeps, token: string): Promise<VerifiedAccessToken | undefined> {
  const verified = await deps.accessTokens.verify(token)
  if (verified !== undefined) return verified
  const header = protectedHeader(token)
  if (header === undefined || (await deps.keys.verificationKey(header.kid, header.alg)) !== undefined) return undefined
  // The read begins after this call, so it sees a key already written; and such reads are rate
  // limited, since anyone with a client can send made-up kids.
  await deps.keys.reloadDemanded()
  return deps.accessTokens.verify(token)
}

function protectedHeader(token: string): { kid: string; alg: string } | undefined {
  try {
    const { kid, alg } = decodeProtectedHeader(token)
    return typeof kid === 'string' && typeof alg === 'string' ? { kid, alg } : undefined
  } catch {
    return undefined
  }
}
