// "Revoke every token of this client" against a login under way, on real Postgres (PGlite runs one
// transaction at a time, so the race cannot happen there). Postgres only (npm run test:pg).
import t from 'tap'
import { blockedBy, sideSession } from '../helpers/lock-waits.js'
import { startTestServer } from '../helpers/server.js'

if (!process.env['DATABASE_URL']) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const srv = await startTestServer(t)
  const app = await srv.createClient()
  const userId = await srv.createUser('heidi', 'heidi password')

  t.test('a login waits for a revocation of its client under way, and the revocation for it', async (t) => {
    // Stand in for revokeAllForClient, whose update holds the client's row. (The grant's foreign
    // key alone would not wait for it: an update of non-key columns lets key-share locks by.)
    const revoker = await sideSession(t, srv)
    await revoker.query('begin')
    await revoker.query('update clients set tokens_revoked_at = now() where client_id = $1', [app.id])

    let settled = false
    const login = srv
      .post('/token', { grant_type: 'password', username: 'heidi', password: 'heidi password' }, app.auth)
      .finally(() => {
        settled = true
      })
    // Waiting for the state, not for a while: a slow password hash would pass a sleep as well.
    await blockedBy(revoker, /\bfrom clients\b.* for share\s*$/s)
    t.notOk(settled, 'the login is held until the revocation commits')
    await revoker.query('commit')
    const r = await login
    t.equal(r.status, 200, 'then it goes through: it came after the revocation')

    // And a revocation of the user's tokens after it ends the grant it made.
    t.equal((await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`)).status, 204)
    const refresh = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: r.body.refresh_token }, app.auth)
    t.equal(refresh.body.error, 'invalid_grant')
  })
}
