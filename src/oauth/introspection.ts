import {
  authenticateClient,
  checkedClient,
  abandonOnError,
  admitCheck,
  verifyCredentials,
  type AuthContext,
  type ClientAuthDeps,
  type Credentials,
} from './client-auth.js'
import type { TokenStatus } from '../tokens/status.js'
import { epochSeconds } from '../clock.js'

export type IntrospectionResponse = { active: false } | ({ active: true } & Record<string, unknown>)

const INACTIVE: IntrospectionResponse = Object.freeze({ active: false })

// RFC 7662 §2.1: the caller authenticates; a public client has nothing to authenticate with.
const INTROSPECTION: AuthContext = { allowPublic: false }

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

/**
 * A refresh token is opaque; an access token is a JWS in compact form (RFC 7515 §7.1): three
 * base64url parts. Anything else is not one of our access tokens, even if a lenient decoder would
 * read it as one (a trailing space, say).
 */
export const looksLikeJwt = (token: string): boolean => COMPACT_JWS.test(token)

/**
 * RFC 7662 §2. A token is active for the client it was issued to, and for a client that serves
 * one of its audiences as a resource server; to anyone else it is `{"active": false}`, exactly
 * as an unknown token is, so introspection cannot be used to scan other clients' tokens.
 * token_type_hint is not needed: the two kinds of token cannot be mistaken for each other.
 */
export async function introspect(
  deps: ClientAuthDeps & { status: TokenStatus },
  request: { credentials: Credentials; address: string },
  token: string,
  issuer: string,
): Promise<IntrospectionResponse> {
  const { credentials, address } = request
  const check = await admitCheck(deps, address)
  if (looksLikeJwt(token)) {
    // The hot path: the caller's record comes with the token's status (from memory, or from the
    // database in the same round trip).
    const { active: at, caller: loaded } = await abandonOnError(check, () => deps.status.activeAccessTokenWithCaller(token, credentials.clientId))
    const caller =
      loaded === 'unread'
        ? await authenticateClient(deps, credentials, address, INTROSPECTION, check)
        : await checkedClient(deps, credentials, address, check, await abandonOnError(check, () => verifyCredentials(deps, loaded, credentials, INTROSPECTION)))
    if (at === undefined) return INACTIVE
    const { claims } = at
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud]
    const serves = aud.some((a) => caller.resourceIdentifiers.includes(a))
    if (claims.client_id !== caller.clientId && !serves) return INACTIVE
    return {
      active: true,
      scope: claims.scope,
      client_id: claims.client_id,
      ...(at.username !== undefined && { username: at.username }),
      // RFC 9449 §6.2: a bound token says so, and to which key.
      token_type: claims.cnf !== undefined ? 'DPoP' : 'Bearer',
      ...(claims.cnf !== undefined && { cnf: { jkt: claims.cnf.jkt } }),
      exp: claims.exp,
      iat: claims.iat,
      ...(claims.nbf !== undefined && { nbf: claims.nbf }),
      sub: claims.sub,
      aud: claims.aud,
      iss: claims.iss,
      jti: claims.jti,
      token_use: 'access_token',
    }
  }
  const caller = await authenticateClient(deps, credentials, address, INTROSPECTION, check)
  const rt = await deps.status.activeRefreshToken(token)
  // Refresh tokens are only ever shown to the client that holds them (RFC 6749 §10.4).
  if (rt === undefined || rt.grant.clientId !== caller.clientId) return INACTIVE
  return {
    active: true,
    scope: rt.grant.scopes.join(' '),
    client_id: rt.grant.clientId,
    username: rt.username,
    token_type: 'refresh_token',
    ...(rt.grant.dpopJkt !== null && { cnf: { jkt: rt.grant.dpopJkt } }),
    exp: epochSeconds(rt.expiresAt),
    iat: epochSeconds(rt.issuedAt),
    sub: rt.grant.userId,
    aud: rt.grant.audiences.length === 1 ? rt.grant.audiences[0] : rt.grant.audiences,
    iss: issuer,
    token_use: 'refresh_token',
  }
}
