import { invalidGrant } from '../../errors.js'
import { resolveAudiences } from '../audience.js'
import { allowedForUser, grantScopes, parseScope } from '../scope.js'
import type { GrantHandler } from './grant.js'

/** RFC 6749 §4.3: Resource Owner Password Credentials. */
export const passwordGrant: GrantHandler = {
  grantType: 'password',
  parameters: ['username', 'password', 'scope', 'resource'],
  async handle({ client, params, services }) {
    const username = params.required('username')
    const password = params.required('password')
    const requested = parseScope(params.get('scope'))
    const audiences = resolveAudiences(params.all('resource'), client.audiences, services.issuer())
    if (await services.loginThrottle.isBlocked(username)) {
      throw invalidGrant('too many failed logins for this username; try again later')
    }
    const user = await services.users.authenticate(username, password)
    if (user === undefined) {
      await services.loginThrottle.recordFailure(username)
      throw invalidGrant('invalid username or password')
    }
    await services.loginThrottle.recordSuccess(username)
    const scopes = grantScopes(requested, allowedForUser(client.scopes, user.scopes))
    return services.tokens.startGrant(client, user, scopes, audiences)
  },
}
