import { OAuthError, invalidGrant, slowDown } from '../../errors.js'
import { userAudiences } from '../audience.js'
import { allowedForUser, grantScopes, parseScope } from '../scope.js'
import { isRefusal } from '../../throttle/login.js'
import type { GrantHandler } from './grant.js'

/** RFC 6749 §4.3: Resource Owner Password Credentials. */
export const passwordGrant: GrantHandler = {
  grantType: 'password',
  parameters: ['username', 'password', 'scope', 'resource'],
  async handle({ client, params, services, address, dpop }) {
    const username = params.required('username')
    const password = params.required('password')
    const requested = parseScope(params.get('scope'))
    const audiences = userAudiences(params.all('resource'), client, services.issuer())
    // A place in the hashing queue first (503 at once when it is full, with nothing counted), then
    // the attempt is counted before the password is checked (src/throttle/login.ts).
    const slot = services.hasher.enter(address)
    let check
    let attempt
    try {
      attempt = await services.loginThrottle.begin(username, address)
      if (isRefusal(attempt)) {
        services.audit.record({
          type: 'login.throttled',
          address,
          clientId: client.clientId,
          username,
          by: attempt.reason,
          blockedUntil: new Date(Date.now() + attempt.retryAfter * 1000),
        })
        throw slowDown(attempt.retryAfter, `login throttled by ${attempt.reason}`)
      }
      check = await services.users.authenticate(username, password, slot)
    } finally {
      slot.leave()
    }
    if (check.failure !== undefined) {
      const known = check.user && { id: check.user.id, username: check.user.username }
      services.audit.record({ type: 'login.failed', address, clientId: client.clientId, username, user: known, reason: check.failure })
      throw invalidGrant('invalid username or password', check.failure)
    }
    const { user } = check
    const scopes = grantScopes(requested, allowedForUser(client.scopes, user.scopes))
    let response
    try {
      response = await services.tokens.startGrant(client, user, scopes, audiences, dpop?.jkt)
    } catch (err) {
      // The password checked out, but the user changed (a new password, disabled, deleted) before
      // the grant was made: refused as it would have been a moment later.
      if (err instanceof OAuthError && err.code === 'invalid_grant') {
        const known = { id: user.id, username: user.username }
        services.audit.record({ type: 'login.failed', address, clientId: client.clientId, username, user: known, reason: 'changed_during_login' })
      }
      throw err
    }
    await services.loginThrottle.succeeded(attempt)
    services.audit.record({ type: 'login.succeeded', address, clientId: client.clientId, user: { id: user.id, username: user.username } })
    return response
  },
}
