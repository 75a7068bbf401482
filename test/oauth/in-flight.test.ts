// Requests in flight against the revocations they race: a login against a password change, a
// refresh against its grant's revocation and against another exchange of its token, and a
// client_credentials request against its client's new secret. Each order is forced, not hoped for:
// on Postgres a side session holds the row the request needs next, and the other party acts once
// pg_locks shows the request waiting for it; embedded (one connection, served in order) the other
// party's transaction is started at the moment the request reads the clock on its way into its
// own, so it is served first.
import { createHash, randomUUID } from 'node:crypto'
import { calculateJwkThumbprint } from 'jose'
import t from 'tap'
import { keyPair, proof } from '../helpers/jwt-clients.js'
import { blockedBy, sideSession } from '../helpers/lock-waits.js'
import { TestClock, assertOAuthError, backend, decodeJwt, startTestServer } from '../helpers/server.js'
import { auditPage } from '../audit/support.js'

/**
 * The test clock, which can also run a step when it is read from inside a given method (named as a
 * stack trace names it). TokenService.startGrant and .rotate read the clock and then, in the same
 * turn, start their transaction: a transaction started by the step is queued before theirs.
 */
class ProbeClock extends TestClock {
  private probe: { where: string; step: () => void } | undefined
  at(where: string, step: () => void): void {
    this.probe = { where, step }
  }
  override now(): Date {
    const probe = this.probe
    if (probe !== undefined && new Error().stack?.includes(`at ${probe.where} `)) {
      this.probe = undefined
      probe.step()
    }
    return super.now()
  }
}

const clock = new ProbeClock()
const srv = await startTestServer(t, {}, { clock })
const app = await srv.createClient()
const sha256 = (s: string) => createHash('sha256').update(s).digest()

const login = (username: string, password: string) => srv.post('/token', { grant_type: 'password', username, password }, app.auth)
const refresh = (token: string) => srv.post('/token', { grant_type: 'refresh_token', refresh_token: token }, app.auth)
const introspect = async (token: string) => (await srv.post('/introspect', { token }, app.auth)).body

async function loggedIn(username: string, password: string): Promise<{ access_token: string; refresh_token: string }> {
  const r = await login(username, password)
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.text}`)
  return r.body
}

t.test('a login that checked a password since changed, with the user\u2019s tokens revoked, gets no grant', async (t) => {
  const userId = await srv.createUser('erin', 'erin password 1')
  let held: Promise<unknown>
  if (backend === 'postgres') {
    // The login checks the password, then waits for the client's row on its way to a grant.
    const side = await sideSession(t, srv)
    await side.query('begin')
    await side.query('select 1 from clients where client_id = $1 for update', [app.id])
    held = login('erin', 'erin password 1')
    await blockedBy(side, /\bfrom clients\b.* for share\s*$/s)
    t.equal((await srv.admin('POST', `/admin/users/${userId}/password`, { password: 'erin password 2' })).status, 204)
    t.equal((await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`)).status, 204)
    await side.query('commit')
  } else {
    // Standing in for the password change (its hash is made beforehand), then the real revocation.
    const newHash = await srv.tessera.hasher.hash('erin password 2')
    let revoked: Promise<boolean> | undefined
    clock.at('TokenService.startGrant', () => {
      void srv.tessera.db.transaction().execute((trx) => trx.updateTable('users').set({ password_hash: newHash }).where('id', '=', userId).execute())
      revoked = srv.tessera.tokens.revokeAllForUser(userId)
    })
    held = login('erin', 'erin password 1')
    await held
    t.equal(await revoked, true, 'the change and the revocation came between the check and the grant')
  }
  assertOAuthError(t, (await held) as never, 400, 'invalid_grant')
  const live = await srv.tessera.db.selectFrom('grants').select('id').where('user_id', '=', userId).where('revoked_at', 'is', null).execute()
  t.same(live, [], 'no live grant of the user')
  await srv.tessera.audit.flush()
  const { events } = await auditPage(srv, { type: 'login.failed', user: userId })
  t.same(events.map((e) => e.details), [{ reason: 'changed_during_login' }], 'on record as a failed login')
  t.equal((await login('erin', 'erin password 1')).status, 400, 'the old password is refused')
  t.equal((await login('erin', 'erin password 2')).status, 200, 'the new one works')
})

t.test('a login that checked the password of a user disabled since gets no grant', async (t) => {
  const userId = await srv.createUser('ida', 'ida password')
  let held: Promise<unknown>
  if (backend === 'postgres') {
    const side = await sideSession(t, srv)
    await side.query('begin')
    await side.query('select 1 from clients where client_id = $1 for update', [app.id])
    held = login('ida', 'ida password')
    await blockedBy(side, /\bfrom clients\b.* for share\s*$/s)
    t.equal((await srv.admin('PATCH', `/admin/users/${userId}`, { disabled: true })).status, 200)
    await side.query('commit')
  } else {
    let disabled: Promise<unknown> | undefined
    clock.at('TokenService.startGrant', () => {
      disabled = srv.tessera.users.update(userId, { disabled: true })
    })
    held = login('ida', 'ida password')
    await held
    t.match(await disabled, { disabled: true }, 'disabled between the check and the grant')
  }
  assertOAuthError(t, (await held) as never, 400, 'invalid_grant')
  const grants = await srv.tessera.db.selectFrom('grants').select('id').where('user_id', '=', userId).execute()
  t.same(grants, [], 'no grant was made')
})

t.test('a refresh racing the revocation of its grant rotates nothing', async (t) => {
  await srv.createUser('fred', 'fred password')
  const first = await loggedIn('fred', 'fred password')
  const grantId = decodeJwt(first.access_token).payload.sid as string
  let held: Promise<any>
  if (backend === 'postgres') {
    // The refresh has read its token and grant and waits to spend the token; the grant is revoked.
    const side = await sideSession(t, srv)
    await side.query('begin')
    await side.query('select 1 from refresh_tokens where token_hash = $1 for update', [sha256(first.refresh_token)])
    held = refresh(first.refresh_token)
    await blockedBy(side, /^update "refresh_tokens"/)
    const revoked = await srv.post('/revoke', { token: first.refresh_token, token_type_hint: 'refresh_token' }, app.auth)
    t.equal(revoked.status, 200, 'the revocation returns while the refresh is held')
    await side.query('commit')
  } else {
    let revoked: Promise<boolean> | undefined
    clock.at('TokenService.rotate', () => {
      revoked = srv.tessera.tokens.revokeGrant(grantId)
    })
    held = refresh(first.refresh_token)
    await held
    t.equal(await revoked, true, 'the grant was revoked between the read and the rotation')
  }
  const r = await held
  assertOAuthError(t, r, 400, 'invalid_grant')
  const grant = await srv.tessera.db.selectFrom('grants').select(['revoked_at']).where('id', '=', grantId).executeTakeFirstOrThrow()
  t.not(grant.revoked_at, null)
  const tokens = await srv.tessera.db.selectFrom('refresh_tokens').select(['used_at']).where('grant_id', '=', grantId).execute()
  t.same(tokens.map((x) => x.used_at), [null], 'the token was not spent and no other was issued')
  t.same(await introspect(first.access_token), { active: false })
})

t.test('concurrent exchanges of one refresh token: the loser revokes the family, on record as a race', async (t) => {
  const userId = await srv.createUser('gina', 'gina password')
  const first = await loggedIn('gina', 'gina password')
  const grantId = decodeJwt(first.access_token).payload.sid as string
  if (backend === 'postgres') {
    // Both exchanges read the token unspent, then queue to spend it.
    const side = await sideSession(t, srv)
    await side.query('begin')
    await side.query('select 1 from refresh_tokens where token_hash = $1 for update', [sha256(first.refresh_token)])
    const both = [refresh(first.refresh_token), refresh(first.refresh_token)]
    await blockedBy(side, /^update "refresh_tokens"/, 2)
    await side.query('commit')
    const results = await Promise.all(both)
    t.same(results.map((r) => r.status).sort(), [200, 400], 'exactly one wins')
    const winner = results.find((r) => r.status === 200)
    const loser = results.find((r) => r.status !== 200)
    if (winner === undefined || loser === undefined) return
    assertOAuthError(t, loser, 400, 'invalid_grant')
    assertOAuthError(t, await refresh(winner.body.refresh_token), 400, 'invalid_grant')
    t.same(await introspect(winner.body.access_token), { active: false }, "the winner's tokens are revoked with the family")
  } else {
    // Standing in for the exchange that got in first: the token spent between the read and the rotation.
    clock.at('TokenService.rotate', () => {
      void srv.tessera.db
        .transaction()
        .execute((trx) => trx.updateTable('refresh_tokens').set({ used_at: clock.now() }).where('token_hash', '=', sha256(first.refresh_token)).execute())
    })
    assertOAuthError(t, await refresh(first.refresh_token), 400, 'invalid_grant')
  }
  t.same(await introspect(first.access_token), { active: false }, 'the family is revoked')
  const grant = await srv.tessera.db.selectFrom('grants').select(['revoked_at']).where('id', '=', grantId).executeTakeFirstOrThrow()
  t.not(grant.revoked_at, null)
  await srv.tessera.audit.flush()
  const { events } = await auditPage(srv, { type: 'refresh_token.reused', user: userId })
  t.same(
    events.map((e) => ({ client_id: e.client_id, user_id: e.user_id, details: e.details })),
    [{ client_id: app.id, user_id: userId, details: { grant_id: grantId, concurrent: true } }],
  )
})

t.test('a replayed refresh token revokes the family, on record as a replay', async (t) => {
  const userId = await srv.createUser('hugo', 'hugo password')
  const first = await loggedIn('hugo', 'hugo password')
  const grantId = decodeJwt(first.access_token).payload.sid as string
  const second = await refresh(first.refresh_token)
  t.equal(second.status, 200)
  assertOAuthError(t, await refresh(first.refresh_token), 400, 'invalid_grant')
  assertOAuthError(t, await refresh(second.body.refresh_token), 400, 'invalid_grant')
  t.same(await introspect(second.body.access_token), { active: false })
  await srv.tessera.audit.flush()
  const { events } = await auditPage(srv, { type: 'refresh_token.reused', user: userId })
  t.same(events.map((e) => e.details), [{ grant_id: grantId, concurrent: false }])
})

// Postgres only: embedded, with one transaction at a time, a held replay check holds the change too.
t.test('a client_credentials request held on its proof\u2019s replay check gets no token once its client changed', { skip: backend !== 'postgres' && 'needs Postgres: a second session holds the replay-guard row' }, async (t) => {
  const svc = await srv.createClient({ grant_types: ['client_credentials'] })
  const key = await keyPair()
  const jti = randomUUID()
  const jkt = await calculateJwkThumbprint(key.jwk)
  const dpop = await proof(key, { htu: `${srv.issuer}/token`, jti })
  // The same proof, recorded by a transaction that has not committed: the server's record waits.
  const side = await sideSession(t, srv)
  await side.query('begin')
  await side.query(`insert into replay_guard (kind, jti, expires_at) values ('dpop', $1, now() + interval '1 hour')`, [`${jkt} ${jti}`])
  const held = srv.post('/token', { grant_type: 'client_credentials' }, svc.auth, { dpop })
  await blockedBy(side, /^\s*insert into "?replay_guard"?/i)
  const rotated = await srv.admin('POST', `/admin/clients/${svc.id}/secret`, {})
  t.equal(rotated.status, 200)
  t.equal((await srv.admin('POST', `/admin/clients/${svc.id}/revoke-tokens`)).status, 204)
  await side.query('rollback')
  assertOAuthError(t, await held, 401, 'invalid_client')
  clock.advance(1) // past the revocation: the test clock stands still otherwise
  const fresh = await srv.post('/token', { grant_type: 'client_credentials' }, [svc.id, rotated.body.client_secret])
  t.equal(fresh.status, 200, 'the new secret gets a token')
  const introspected = await srv.post('/introspect', { token: fresh.body.access_token }, [svc.id, rotated.body.client_secret])
  t.equal(introspected.body.active, true)
})

// Last: it moves the clock on by minutes (the proofs above are made with the real time).
const fromMemory = process.env['TESSERA_TEST_SERVE_FROM_MEMORY'] !== 'false'
t.test('a grant revoked after a rotation stays revoked in memory as long as the rotated tokens live', { skip: !fromMemory && 'serving per call' }, async (t) => {
  // The access token outlives the refresh token, so the rotation extends the grant.
  const short = await srv.createClient({ access_token_ttl: 600, refresh_token_ttl: 60 })
  const userId = await srv.createUser('jane', 'jane password')
  const first = await srv.post('/token', { grant_type: 'password', username: 'jane', password: 'jane password' }, short.auth)
  t.equal(first.status, 200)
  clock.advance(30)
  const second = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: first.body.refresh_token }, short.auth)
  t.equal(second.status, 200)
  const claims = decodeJwt(second.body.access_token).payload
  t.equal((await srv.post('/introspect', { token: second.body.access_token }, short.auth)).body.active, true)
  const revoked = await srv.post('/revoke', { token: second.body.refresh_token, token_type_hint: 'refresh_token' }, short.auth)
  t.equal(revoked.status, 200)
  // Past the expiry the grant had before the rotation, and the view's housekeeping run.
  clock.advance(580)
  srv.tessera.view.prune(clock.now().getTime())
  t.ok(srv.tessera.view.isFresh(), 'memory answers')
  const facts = srv.tessera.view.tokenFacts({ jti: claims.jti, clientId: short.id, userId, grantId: claims.sid, expMs: claims.exp * 1000 })
  t.equal(facts?.grantRevoked, true, 'the revocation is still in memory')
  t.same((await srv.post('/introspect', { token: second.body.access_token }, short.auth)).body, { active: false })
})
