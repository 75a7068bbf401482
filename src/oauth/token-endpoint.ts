import type { GrantType } from '../clients/repository.js'
import { OAuthError, invalidDpopProof } from '../errors.js'
import type { TokenResponse } from '../tokens/service.js'
import { authenticateClient, clientCredentials } from './client-auth.js'
import { clientCredentialsGrant } from './grants/client-credentials.js'
import type { GrantHandler, OAuthServices } from './grants/grant.js'
import { passwordGrant } from './grants/password.js'
import { refreshTokenGrant } from './grants/refresh-token.js'
import type { Params } from './params.js'

const GRANTS = new Map<string, GrantHandler>(
  [passwordGrant, clientCredentialsGrant, refreshTokenGrant].map((g) => [g.grantType, g]),
)

export const SUPPORTED_GRANT_TYPES: GrantType[] = [...GRANTS.values()].map((g) => g.grantType)

/** What the token endpoint needs of a request beyond its parameters. */
export interface TokenRequest {
  authorization: string | undefined
  params: Params
  address: string
  /** Every DPoP header sent, and the URL a proof must name (htu). */
  dpop: { headers: readonly string[]; url: string }
}

/**
 * The token endpoint (RFC 6749 §3.2), as the RFC orders its checks; then the DPoP proof (RFC 9449
 * §5), whose nonce rule depends on the client, before the grant that binds its tokens to the key.
 */
export async function tokenEndpoint(services: OAuthServices, request: TokenRequest): Promise<TokenResponse> {
  const { params, address } = request
  const grantType = params.required('grant_type')
  const client = await authenticateClient(services, clientCredentials(request.authorization, params), address)
  const grant = GRANTS.get(grantType)
  if (grant === undefined) throw new OAuthError('unsupported_grant_type', `grant_type "${grantType}" is not supported`)
  if (!client.grantTypes.includes(grant.grantType)) {
    throw new OAuthError('unauthorized_client', `this client may not use the ${grantType} grant`)
  }
  const dpop = await services.dpop.verify({
    headers: request.dpop.headers,
    method: 'POST',
    url: request.dpop.url,
    nonceRequired: services.dpop.requiresNonce(client),
  })
  // RFC 9449 §5.2
  if (dpop === undefined && client.dpopBoundAccessTokens) {
    throw invalidDpopProof('this client must send a DPoP proof (dpop_bound_access_tokens)')
  }
  return grant.handle({ client, params, address, services, dpop })
}
