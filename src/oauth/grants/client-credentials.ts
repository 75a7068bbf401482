import type { Client } from '../../clients/repository.js'
import { invalidClient } from '../../errors.js'
import { clientAudiences } from '../audience.js'
import { grantScopes, parseScope } from '../scope.js'
import type { GrantHandler } from './grant.js'

/**
 * RFC 6749 §4.4: Client Credentials. Nothing is stored, so nothing in a transaction can stop a
 * request that raced a change of its client (a secret replaced and the client's tokens revoked
 * while a proof's replay check was held up): the token is signed, and then the client is read
 * again, as revocations are (from memory while that is the truth). It is handed out only if the
 * client is still the one that was authenticated; a token signed before a change that returned
 * is then never seen, and one signed after it was checked against it.
 */
export const clientCredentialsGrant: GrantHandler = {
  grantType: 'client_credentials',
  parameters: ['scope', 'resource'],
  async handle({ client, params, services, dpop }) {
    const scopes = grantScopes(parseScope(params.get('scope')), client.scopes)
    const audiences = clientAudiences(params.all('resource'), client, services.issuer(), scopes)
    const issued = await services.tokens.issueForClient(client, scopes, audiences, dpop?.jkt)
    const current = await services.clients.current(client.clientId)
    if (current === undefined || !unchanged(client, current)) throw invalidClient(`client ${client.clientId} changed while the request was under way`)
    return issued
  },
}

/** Whether nothing that authenticates or revokes the client has changed between the two reads. */
function unchanged(authenticated: Client, now: Client): boolean {
  return (
    now.updatedAt.getTime() === authenticated.updatedAt.getTime() &&
    (now.tokensRevokedAt?.getTime() ?? null) === (authenticated.tokensRevokedAt?.getTime() ?? null)
  )
}
