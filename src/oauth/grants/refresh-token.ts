import { invalidGrant, invalidScope, invalidTarget } from '../../errors.js'
import { allowedForUser, grantScopes, parseScope } from '../scope.js'
import type { GrantHandler } from './grant.js'

/**
 * RFC 6749 §6: Refreshing an Access Token, with rotation (RFC 9700 §4.14.2). A grant started with
 * a DPoP proof is bound to its key (RFC 9449 §5): every refresh must prove that key, and the
 * access token it gets stays bound to it. A public client's grant begun without a proof is bound
 * at its first refresh with one (§5: a public client's refresh token is bound to the key of the
 * proof it was issued with): from then on, the same rules.
 */
export const refreshTokenGrant: GrantHandler = {
  grantType: 'refresh_token',
  parameters: ['refresh_token', 'scope', 'resource'],
  async handle({ client, params, services, address, dpop }) {
    const presented = await services.tokens.findRefreshToken(client, params.required('refresh_token'))
    const { grant } = presented
    // Before anything is spent: a refresh token stolen without its key stays usable by its owner,
    // and a spent one replayed without it is refused without ending its owner's grant: reuse is
    // told by rotate(), after every check, and only a request that could have used the token
    // reveals a theft by presenting it.
    if (grant.dpopJkt !== null && dpop === undefined) {
      throw invalidGrant('this refresh token is bound to a DPoP key: send a DPoP proof', `grant ${grant.id} is DPoP-bound`)
    }
    if (grant.dpopJkt !== null && dpop !== undefined && dpop.jkt !== grant.dpopJkt) {
      throw invalidGrant('this refresh token is bound to another DPoP key', `grant ${grant.id}: proof of another key`)
    }
    const user = await services.users.find(grant.userId)
    if (user === undefined || user.disabled) throw invalidGrant('refresh token is invalid', 'user disabled or deleted')
    // §6: the scope may narrow what was granted, never widen it; and what the client or the user
    // may no longer have is not handed out again.
    const scopes = grantScopes(parseScope(params.get('scope')), grant.scopes)
    const allowedNow = new Set(allowedForUser(client.scopes, user.scopes))
    const withdrawn = scopes.filter((s) => !allowedNow.has(s))
    if (withdrawn.length > 0) throw invalidScope(`scope no longer allowed: ${withdrawn.join(' ')}`)
    // RFC 8707 §2.2: a refresh may ask for any of the resources of the original grant.
    const resources = params.all('resource')
    const beyond = resources.filter((r) => !grant.audiences.includes(r))
    if (beyond.length > 0) throw invalidTarget(`resource not in the original grant: ${beyond.join(' ')}`)
    const audiences = resources.length > 0 ? [...new Set(resources)] : grant.audiences
    // A confidential client's refresh tokens are bound by its authentication (§5); its grant stays
    // as it began, and a refresh with a proof gets a bound access token only.
    const bind = grant.dpopJkt === null && dpop !== undefined && client.tokenEndpointAuthMethod === 'none'
    return services.tokens.rotate(client, presented, scopes, audiences, { address }, dpop?.jkt, bind)
  },
}
