import { clientAudiences } from '../audience.js'
import { grantScopes, parseScope } from '../scope.js'
import type { GrantHandler } from './grant.js'

/** RFC 6749 §4.4: Client Credentials. */
export const clientCredentialsGrant: GrantHandler = {
  grantType: 'client_credentials',
  parameters: ['scope', 'resource'],
  async handle({ client, params, services, dpop }) {
    const scopes = grantScopes(parseScope(params.get('scope')), client.scopes)
    const audiences = clientAudiences(params.all('resource'), client, services.issuer(), scopes)
    return services.tokens.issueForClient(client, scopes, audiences, dpop?.jkt)
  },
}
