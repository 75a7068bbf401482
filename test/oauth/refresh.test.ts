import { createHash } from 'node:crypto'
import t from 'tap'
import { TestClock, decodeJwt, startTestServer } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(t, { REFRESH_TOKEN_TTL: '3600' }, { clock })
const app = await srv.createClient({ audiences: ['https://api.example', 'https://billing.example'] })
const other = await srv.createClient()
const userId = await srv.createUser('carol', 'carol password')

async function login(client = app, extra: Record<string, string | string[]> = {}) {
  const r = await srv.post('/token', { grant_type: 'password', username: 'carol', password: 'carol password', ...extra }, client.auth)
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.text}`)
  return r.body as { access_token: string; refresh_token: string; scope: string }
}

const refresh = (token: string, client = app, extra: Record<string, string | string[]> = {}) =>
  srv.post('/token', { grant_type: 'refresh_token', refresh_token: token, ...extra }, client.auth)

t.test('a refresh token rotates on use and keeps the grant', async (t) => {
  const first = await login()
  const r = await refresh(first.refresh_token)
  t.equal(r.status, 200)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.type(r.body.refresh_token, 'string')
  t.not(r.body.refresh_token, first.refresh_token, 'a new refresh token')
  t.equal(r.body.scope, 'read write')
  const before = decodeJwt(first.access_token).payload
  const after = decodeJwt(r.body.access_token).payload
  t.equal(after.sub, userId)
  t.equal(after.sid, before.sid, 'same grant')
  t.equal(after.aud, 'https://api.example')
  // and the new one works in turn
  t.equal((await refresh(r.body.refresh_token)).status, 200)
})

t.test('reuse of a spent refresh token revokes the whole family (RFC 9700 §4.14.2)', async (t) => {
  const first = await login()
  const second = await refresh(first.refresh_token)
  t.equal(second.status, 200)
  const reuse = await refresh(first.refresh_token)
  t.equal(reuse.status, 400)
  t.equal(reuse.body.error, 'invalid_grant')
  const afterTheft = await refresh(second.body.refresh_token)
  t.equal(afterTheft.status, 400, 'the descendant is revoked too')
  t.equal(afterTheft.body.error, 'invalid_grant')
  const introspected = await srv.post('/introspect', { token: second.body.access_token }, app.auth)
  t.same(introspected.body, { active: false }, 'and the access tokens of the family')
})

t.test('two concurrent refreshes with the same token: exactly one wins', async (t) => {
  for (let round = 0; round < 3; round++) {
    const { refresh_token } = await login()
    const results = await Promise.all([refresh(refresh_token), refresh(refresh_token), refresh(refresh_token)])
    const wins = results.filter((r) => r.status === 200)
    t.equal(wins.length, 1, `round ${round}: one winner`)
    for (const r of results.filter((r) => r.status !== 200)) t.equal(r.body.error, 'invalid_grant')
  }
})

t.test('scope may narrow on refresh, never widen', async (t) => {
  const { refresh_token } = await login(app, { scope: 'read' })
  const widen = await refresh(refresh_token, app, { scope: 'read write' })
  t.equal(widen.status, 400)
  t.equal(widen.body.error, 'invalid_scope')
  const { refresh_token: rt2 } = await login()
  const narrow = await refresh(rt2, app, { scope: 'read' })
  t.equal(narrow.status, 200)
  t.equal(narrow.body.scope, 'read')
  t.equal(decodeJwt(narrow.body.access_token).payload.scope, 'read')
})

t.test('resource on refresh: any of the original grant, nothing else (RFC 8707 §2.2)', async (t) => {
  const { refresh_token } = await login(app, { resource: ['https://api.example', 'https://billing.example'] })
  const one = await refresh(refresh_token, app, { resource: 'https://billing.example' })
  t.equal(one.status, 200)
  t.equal(decodeJwt(one.body.access_token).payload.aud, 'https://billing.example')
  const { refresh_token: rt2 } = await login()
  const beyond = await refresh(rt2, app, { resource: 'https://billing.example' })
  t.equal(beyond.status, 400)
  t.equal(beyond.body.error, 'invalid_target')
})

t.test("another client's refresh token is invalid_grant", async (t) => {
  const { refresh_token } = await login()
  const r = await refresh(refresh_token, other)
  t.equal(r.status, 400)
  t.equal(r.body.error, 'invalid_grant')
  t.equal((await refresh(refresh_token)).status, 200, 'and it did not spend the token')
})

t.test('unknown, missing and expired refresh tokens', async (t) => {
  const unknown = await refresh('not-a-token')
  t.equal(unknown.body.error, 'invalid_grant')
  const missing = await srv.post('/token', { grant_type: 'refresh_token' }, app.auth)
  t.equal(missing.body.error, 'invalid_request')
  const { refresh_token } = await login()
  clock.advance(3601)
  const expired = await refresh(refresh_token)
  t.equal(expired.status, 400)
  t.equal(expired.body.error, 'invalid_grant')
})

t.test('refresh fails once the user is disabled or deleted', async (t) => {
  const id = await srv.createUser('dave', 'dave password')
  const get = async () =>
    (await srv.post('/token', { grant_type: 'password', username: 'dave', password: 'dave password' }, app.auth)).body.refresh_token as string
  const rt = await get()
  await srv.admin('PATCH', `/admin/users/${id}`, { disabled: true })
  const disabled = await refresh(rt)
  t.equal(disabled.status, 400)
  t.equal(disabled.body.error, 'invalid_grant')
  await srv.admin('PATCH', `/admin/users/${id}`, { disabled: false })
  const rt2 = await get()
  t.equal((await srv.admin('DELETE', `/admin/users/${id}`)).status, 204)
  const deleted = await refresh(rt2)
  t.equal(deleted.status, 400)
  t.equal(deleted.body.error, 'invalid_grant')
})

t.test('a client without the refresh_token grant may not refresh', async (t) => {
  const noRefresh = await srv.createClient({ grant_types: ['password'] })
  const { refresh_token } = await login()
  const r = await refresh(refresh_token, noRefresh)
  t.equal(r.status, 400)
  t.equal(r.body.error, 'unauthorized_client')
})

t.test('refresh tokens are stored only as hashes', async (t) => {
  const { refresh_token } = await login()
  const rows = await srv.tessera.db.selectFrom('refresh_tokens').select('token_hash').execute()
  const hash = createHash('sha256').update(refresh_token).digest()
  t.ok(rows.some((r) => Buffer.from(r.token_hash).equals(hash)), 'its SHA-256 is there')
  t.notOk(
    rows.some((r) => Buffer.from(r.token_hash).toString().includes(refresh_token)),
    'the token itself is not',
  )
})
