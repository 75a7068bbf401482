// The security events Tessera records itself, as an administrator finds them at GET /admin/audit
// after the actions that caused them: admin changes, revocations, refresh-token reuse and key
// changes. (Logins, client authentication failures and throttling are recorded by the token
// endpoint; see test/audit/secrets.test.ts for what may be stored of them.)
import t from 'tap'
import { ADMIN_ID, TestClock, decodeJwt, startTestServer } from '../helpers/server.js'
import { atLeast, eventually, freshAdminToken } from './support.js'

const JWKS_MAX_AGE = 5
const ROTATION_INTERVAL = 3600
// jwksMaxAge plus two poll intervals, rounded up to whole seconds.
const PREPUBLISH = JWKS_MAX_AGE + 1
// The default access-token lifetime, the margin and one poll interval.
const RETIRED_FOR = 600 + 60 + 1

const clock = new TestClock(Math.floor(Date.now() / 1000) * 1000)
const srv = await startTestServer(
  t,
  { JWKS_MAX_AGE: String(JWKS_MAX_AGE), KEY_POLL_INTERVAL_MS: '200', KEY_ROTATION_INTERVAL: String(ROTATION_INTERVAL) },
  { clock },
)
const app = await srv.createClient()

/** The admin changes of this route, once there are at least `n`. */
const adminChanges = async (route: string, n = 1) => {
  const ofRoute = (events: any[]) => events.filter((e) => e.details.route === route)
  return ofRoute(await eventually(srv, { type: 'admin.change' }, (events) => ofRoute(events).length >= n))
}

async function login(username: string, password: string) {
  const r = await srv.post('/token', { grant_type: 'password', username, password }, app.auth)
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.text}`)
  return r.body as { access_token: string; refresh_token: string }
}

t.test('an admin change names the admin client, the route, the target, the outcome and the address', async (t) => {
  const created = await srv.admin('POST', '/admin/clients', { name: 'billing', grant_types: ['client_credentials'], scopes: ['read'] })
  t.equal(created.status, 201)
  const id = created.body.client_id as string
  const [event] = await atLeast(srv, { type: 'admin.change', client: id })
  t.match(event, {
    type: 'admin.change',
    address: '127.0.0.1',
    admin_client_id: ADMIN_ID,
    client_id: id,
    user_id: null,
    details: {
      method: 'POST',
      route: '/admin/clients',
      status: 201,
      changes: { name: 'billing', grant_types: ['client_credentials'], scopes: ['read'] },
    },
  })
  t.match(event.id, /^\d+$/)
  t.ok(Math.abs(Date.parse(event.at) - clock.now().getTime()) < 1000, 'at the time of the change, by the server clock')
  t.notOk(JSON.stringify(event).includes(created.body.client_secret), 'never the secret it was given')

  t.equal((await srv.admin('PATCH', `/admin/clients/${id}`, { name: 'billing v2' })).status, 200)
  const rotated = await srv.admin('POST', `/admin/clients/${id}/secret`, { grace_seconds: 30 })
  t.equal(rotated.status, 200)
  // A body sent to a route that takes none is not read, let alone recorded.
  t.equal((await srv.admin('DELETE', `/admin/clients/${id}`, { name: 'sent along' })).status, 204)
  t.equal((await srv.admin('DELETE', `/admin/clients/${id}`)).status, 404)
  const events = await atLeast(srv, { type: 'admin.change', client: id }, 5)
  t.same(
    events.map((e) => [e.details.method, e.details.route, e.details.status, e.details.changes]).reverse(),
    [
      ['POST', '/admin/clients', 201, { name: 'billing', grant_types: ['client_credentials'], scopes: ['read'] }],
      ['PATCH', '/admin/clients/:client_id', 200, { name: 'billing v2' }],
      ['POST', '/admin/clients/:client_id/secret', 200, { grace_seconds: 30 }],
      ['DELETE', '/admin/clients/:client_id', 204, undefined],
      ['DELETE', '/admin/clients/:client_id', 404, undefined],
    ],
    'every change, newest first, refused ones too',
  )
  t.notOk(JSON.stringify(events).includes(rotated.body.client_secret), 'never the new secret')
})

t.test('user changes: the user is named by id, and no password is ever recorded', async (t) => {
  const created = await srv.admin('POST', '/admin/users', { username: 'Olivia', password: 'olivia-first-password', scopes: ['read'] })
  t.equal(created.status, 201)
  const id = created.body.id as string
  t.equal((await srv.admin('POST', `/admin/users/${id}/password`, { password: 'olivia-second-password' })).status, 204)
  t.equal((await srv.admin('PATCH', `/admin/users/${id}`, { disabled: true })).status, 200)
  t.equal((await srv.admin('PATCH', `/admin/users/${id}`, { password: 'olivia-third-password' })).status, 400, 'a password where none belongs')
  t.equal((await srv.admin('DELETE', `/admin/users/${id}`)).status, 204)
  const events = await atLeast(srv, { type: 'admin.change', user: id }, 5)
  t.same(
    events.map((e) => [e.details.method, e.details.route, e.details.status, e.details.changes]).reverse(),
    [
      ['POST', '/admin/users', 201, { username: 'Olivia', scopes: ['read'] }],
      ['POST', '/admin/users/:id/password', 204, undefined],
      ['PATCH', '/admin/users/:id', 200, { disabled: true }],
      ['PATCH', '/admin/users/:id', 400, undefined],
      ['DELETE', '/admin/users/:id', 204, undefined],
    ],
  )
  for (const e of events) t.match(e, { user_id: id, admin_client_id: ADMIN_ID, address: '127.0.0.1' })
  t.notMatch(JSON.stringify(events), /olivia-(first|second|third)-password/)
})

t.test('refused calls are on record too: no token, a token without the admin scope', async (t) => {
  const body = { name: 'sneaky', grant_types: ['client_credentials'], scopes: ['read'] }
  t.equal((await srv.admin('POST', '/admin/clients', body, null)).status, 401)
  // A client of the admin API (its resource among its audiences) whose token lacks the admin scope.
  const outsider = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'], audiences: [`${srv.issuer}/admin`] })
  const token = await srv.post('/token', { grant_type: 'client_credentials' }, outsider.auth)
  t.equal((await srv.admin('POST', '/admin/clients', body, token.body.access_token)).status, 403)
  t.equal((await srv.admin('POST', '/admin/no-such-route', {}, null)).status, 401)

  const anonymous = await eventually(srv, { type: 'admin.change' }, (es) => es.some((e) => e.details.status === 401))
  t.match(
    anonymous.find((e) => e.details.status === 401),
    { admin_client_id: null, address: '127.0.0.1', details: { method: 'POST', route: '/admin/clients', status: 401 } },
  )
  // Newest first: the refused call, then the outsider's own creation.
  const [forbidden] = await atLeast(srv, { type: 'admin.change', client: outsider.id }, 2)
  t.match(forbidden, { admin_client_id: outsider.id, details: { route: '/admin/clients', status: 403 } })
  t.notOk('changes' in forbidden.details, 'what a refused call asked for is not recorded')
  t.notOk(anonymous.some((e) => e.details.route === undefined || /no-such-route/.test(e.details.route)), 'only real routes')
})

t.test('revocations: by the revocation endpoint (named by jti or grant) and by revoke-tokens', async (t) => {
  const userId = await srv.createUser('paul', 'paul password')
  const first = await login('paul', 'paul password')
  const { jti, sid } = decodeJwt(first.access_token).payload
  t.equal((await srv.post('/revoke', { token: first.access_token }, app.auth)).status, 200)
  t.equal((await srv.post('/revoke', { token: first.access_token }, app.auth)).status, 200, 'again: nothing to revoke')
  const second = await login('paul', 'paul password')
  t.equal((await srv.post('/revoke', { token: second.refresh_token }, app.auth)).status, 200)
  const grantId = decodeJwt(second.access_token).payload.sid
  t.equal((await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`)).status, 204)
  t.equal((await srv.admin('POST', `/admin/clients/${app.id}/revoke-tokens`)).status, 204)

  const events = await eventually(srv, { type: 'token.revoked' }, (es) => es.some((e) => e.client_id === app.id && e.details.via === 'admin'))
  const endpoint = events.filter((e) => e.details.via === 'revocation_endpoint' && e.user_id === userId).reverse()
  t.equal(endpoint.length, 2, 'one per revocation that took effect')
  t.match(endpoint[0], { client_id: app.id, user_id: userId, details: { token_type: 'access_token', jti } })
  t.not(endpoint[0].details.grant_id, sid)
  t.match(endpoint[1], { client_id: app.id, user_id: userId, details: { token_type: 'refresh_token', grant_id: grantId } })
  t.match(events.find((e) => e.details.via === 'admin' && e.user_id === userId), { admin_client_id: ADMIN_ID, address: '127.0.0.1', client_id: null })
  t.match(events.find((e) => e.details.via === 'admin' && e.client_id === app.id), { admin_client_id: ADMIN_ID, address: '127.0.0.1', user_id: null })
  const text = JSON.stringify(events)
  for (const token of [first.access_token, first.refresh_token, second.access_token, second.refresh_token]) t.notOk(text.includes(token))
  t.match((await adminChanges('/admin/users/:id/revoke-tokens')).find((e) => e.user_id === userId), { details: { status: 204 } })
})

t.test('refresh-token reuse: the family revoked, with its grant, user and client', async (t) => {
  const userId = await srv.createUser('quinn', 'quinn password')
  const first = await login('quinn', 'quinn password')
  const grantId = decodeJwt(first.access_token).payload.sid
  const refresh = (token: string) => srv.post('/token', { grant_type: 'refresh_token', refresh_token: token }, app.auth)
  t.equal((await refresh(first.refresh_token)).status, 200)
  t.equal((await refresh(first.refresh_token)).status, 400, 'reuse')
  const [reused] = await atLeast(srv, { type: 'refresh_token.reused', user: userId })
  t.match(reused, { client_id: app.id, user_id: userId, details: { grant_id: grantId, concurrent: false } })
  t.notOk(JSON.stringify(reused).includes(first.refresh_token))

  // Concurrent exchanges of one token: exactly one wins, and the losers are reuse.
  const racing = await login('quinn', 'quinn password')
  const racingGrant = decodeJwt(racing.access_token).payload.sid
  const results = await Promise.all([refresh(racing.refresh_token), refresh(racing.refresh_token), refresh(racing.refresh_token)])
  t.equal(results.filter((r) => r.status === 200).length, 1)
  const raced = await eventually(srv, { type: 'refresh_token.reused', user: userId }, (es) => es.some((e) => e.details.grant_id === racingGrant))
  t.ok(raced.some((e) => e.details.grant_id === racingGrant), 'the race is on record')
})

t.test('key changes: on demand, by the schedule, and in an emergency', async (t) => {
  const keys = srv.tessera.keys
  const advance = async (s: number) => {
    clock.advance(s)
    await keys.tick()
  }
  const old = decodeJwt(await freshAdminToken(srv)).header.kid as string
  const [first] = await atLeast(srv, { type: 'key.created' })
  t.match(first, { details: { kid: old, alg: 'ES256', state: 'active' } }, 'the first key, made at the first start')

  const rotated = await srv.admin('POST', '/admin/keys/rotate', undefined, await freshAdminToken(srv))
  t.equal(rotated.status, 200)
  const next = rotated.body.kid as string
  const [onDemand] = await atLeast(srv, { type: 'key.rotated' })
  t.match(onDemand, { details: { kid: next, alg: 'ES256', immediate: false, removed: [] }, address: null, client_id: null })
  t.match((await adminChanges('/admin/keys/rotate'))[0], {
    admin_client_id: ADMIN_ID,
    details: { status: 200, kid: next, changes: { immediate: false } },
  })
  const again = await srv.admin('POST', '/admin/keys/rotate', undefined, await freshAdminToken(srv))
  t.equal(again.body.kid, next, 'asked again while it is under way: the same rotation')

  await advance(PREPUBLISH)
  t.match((await atLeast(srv, { type: 'key.activated' }))[0], { details: { kid: next, alg: 'ES256' } })
  await advance(RETIRED_FOR)
  t.match((await atLeast(srv, { type: 'key.removed' }))[0], { details: { kids: [old] } })

  await advance(ROTATION_INTERVAL - RETIRED_FOR)
  const [scheduled] = await atLeast(srv, { type: 'key.created' }, 2)
  t.match(scheduled, { details: { alg: 'ES256', state: 'next' } })
  const live = (await srv.admin('GET', '/admin/keys', undefined, await freshAdminToken(srv))).body.keys
  t.equal(live.find((k: { state: string }) => k.state === 'next').kid, scheduled.details.kid)
  t.equal(
    (await eventually(srv, { type: 'key.created' }, () => true)).length,
    2,
    'once, though every instance runs the schedule (and the timer ran it beside this test)',
  )

  const emergency = await srv.admin('POST', '/admin/keys/rotate?immediate=true', undefined, await freshAdminToken(srv))
  t.equal(emergency.status, 200)
  const events = await atLeast(srv, { type: 'key.rotated' }, 2)
  t.equal(events.length, 2, 'asking again made no key, so no key.rotated (its admin change is on record)')
  t.match(events[0], { details: { kid: emergency.body.kid, immediate: true } })
  t.same([...events[0].details.removed].sort(), [next, scheduled.details.kid].sort(), 'every other key, by kid')
  const rotations = await adminChanges('/admin/keys/rotate', 3)
  t.equal(rotations.length, 3, 'every call')
  t.match(rotations[0], { details: { kid: emergency.body.kid, changes: { immediate: true } } })
})
