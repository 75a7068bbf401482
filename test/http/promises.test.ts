// Promises of README and SECURITY.md that no test held to (issue 15 item 13): each test here fails
// once the code that keeps its promise is removed. The jwks_uri fetch's limits are in
// test/oauth/jwks-uri.test.ts.
import t from 'tap'
import { auditPage, eventually } from '../audit/support.js'
import { parseMetrics } from '../helpers/metrics.js'
import { assertOAuthError, decodeJwt, startTestServer, type TestServer } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient({ grant_types: ['password', 'client_credentials', 'refresh_token'], scopes: ['read', 'write'] })

const login = async (s: TestServer, client: [string, string], username: string, password: string) =>
  s.post('/token', { grant_type: 'password', username, password }, client)

t.test('a refresh asking for what the client or the user no longer has is invalid_scope', async (t) => {
  const client = await srv.createClient({ grant_types: ['password', 'refresh_token'], scopes: ['read', 'write'] })
  const userId = await srv.createUser('narrowed', 'narrowed password 1')
  const first = await login(srv, client.auth, 'narrowed', 'narrowed password 1')
  t.equal(first.body.scope, 'read write')

  // The client loses write: a refresh of the whole grant asks for it.
  t.equal((await srv.admin('PATCH', `/admin/clients/${client.id}`, { scopes: ['read'] })).status, 200)
  const refresh = (rt: string, extra: Record<string, string> = {}) =>
    srv.post('/token', { grant_type: 'refresh_token', refresh_token: rt, ...extra }, client.auth)
  assertOAuthError(t, await refresh(first.body.refresh_token), 400, 'invalid_scope')
  const narrowed = await refresh(first.body.refresh_token, { scope: 'read' })
  t.equal(narrowed.status, 200, 'what is still allowed is refreshed')
  t.equal(decodeJwt(narrowed.body.access_token).payload.scope, 'read')

  // The user loses read (the client has write again): a grant of read is refreshed no more.
  t.equal((await srv.admin('PATCH', `/admin/clients/${client.id}`, { scopes: ['read', 'write'] })).status, 200)
  const second = await login(srv, client.auth, 'narrowed', 'narrowed password 1')
  t.equal((await srv.admin('PATCH', `/admin/users/${userId}`, { scopes: ['write'] })).status, 200)
  assertOAuthError(t, await refresh(second.body.refresh_token), 400, 'invalid_scope')
  assertOAuthError(t, await refresh(second.body.refresh_token, { scope: 'read' }), 400, 'invalid_scope')
  const writeOnly = await refresh(second.body.refresh_token, { scope: 'write' })
  t.equal(writeOnly.status, 200)
  t.equal(writeOnly.body.scope, 'write')
})

t.test('passwords are stored as argon2id with m = 19 MiB, t = 2, p = 1', async (t) => {
  const id = await srv.createUser('hashed', 'hashed password 1')
  const row = await srv.tessera.db.selectFrom('users').select('password_hash').where('id', '=', id).executeTakeFirstOrThrow()
  // The PHC string: $argon2id$v=19$<parameters>$<salt>$<hash>, its parameters in any order.
  const [empty, algorithm, version, parameters, salt, hash, ...rest] = row.password_hash.split('$')
  t.same([empty, algorithm, version, rest], ['', 'argon2id', 'v=19', []])
  t.same(Object.fromEntries(parameters!.split(',').map((p) => p.split('='))), { m: '19456', t: '2', p: '1' })
  t.equal(Buffer.from(salt!, 'base64').length, 16, 'a 16-byte salt')
  t.equal(Buffer.from(hash!, 'base64').length, 32, 'a 32-byte hash')
})

t.test("a disabled user's password is still verified (one argon2 verification, like anyone's)", async (t) => {
  const id = await srv.createUser('dormant', 'dormant password 1')
  t.equal((await srv.admin('PATCH', `/admin/users/${id}`, { disabled: true })).status, 200)
  const verifications = async () =>
    parseMetrics((await srv.admin('GET', '/metrics')).text).value('tessera_password_hashes_total', { operation: 'verify' }) ?? 0
  for (const [what, username, password] of [
    ['a disabled user, the right password', 'dormant', 'dormant password 1'],
    ['a disabled user, a wrong password', 'dormant', 'not the password'],
    ['an unknown user', 'nobody-of-that-name', 'dormant password 1'],
  ] as const) {
    const before = await verifications()
    assertOAuthError(t, await login(srv, app.auth, username, password), 400, 'invalid_grant')
    t.equal((await verifications()) - before, 1, `${what}: one verification`)
  }
})

t.test('OAuth parameters are read from the form body only, never from the query string', async (t) => {
  const tokens = await srv.post('/token', { grant_type: 'client_credentials' }, app.auth)
  t.equal(tokens.status, 200)
  t.equal(tokens.body.scope, 'read write')
  // Everything in the query string: no grant type, no client.
  assertOAuthError(t, await srv.post(`/token?grant_type=client_credentials`, {}, app.auth), 400, 'invalid_request')
  const query = new URLSearchParams({ grant_type: 'client_credentials', client_id: app.id, client_secret: app.secret })
  assertOAuthError(t, await srv.post(`/token?${query}`, {}), 400, 'invalid_request')
  assertOAuthError(t, await srv.post(`/token?${query}`, { grant_type: 'client_credentials' }), 401, 'invalid_client')
  // A scope in the query string does not narrow the token; the body's does.
  const narrowed = await srv.post('/token?scope=read', { grant_type: 'client_credentials' }, app.auth)
  t.equal(narrowed.status, 200)
  t.equal(narrowed.body.scope, 'read write', 'the query string is ignored')
  t.equal((await srv.post('/token?scope=write', { grant_type: 'client_credentials', scope: 'read' }, app.auth)).body.scope, 'read')
  // Introspection and revocation alike.
  assertOAuthError(t, await srv.post(`/introspect?token=${tokens.body.access_token}`, {}, app.auth), 400, 'invalid_request')
  assertOAuthError(t, await srv.post(`/revoke?token=${tokens.body.access_token}`, {}, app.auth), 400, 'invalid_request')
  t.equal((await srv.post('/introspect', { token: tokens.body.access_token }, app.auth)).body.active, true, 'not revoked')
})

t.test('the audit keys its username hash: two servers with different keys hash one username apart', async (t) => {
  const other = await startTestServer(t)
  const otherApp = await other.createClient({ grant_types: ['password'] })
  const typed = 'Someone-Typed-This'
  const hashOn = async (s: TestServer, client: [string, string]) => {
    assertOAuthError(t, await login(s, client, typed, 'whatever password'), 400, 'invalid_grant')
    const [event] = await eventually(s, { type: 'login.failed', username: typed }, (es) => es.length >= 1)
    return event.username_hash as string
  }
  const [here, there] = [await hashOn(srv, app.auth), await hashOn(other, otherApp.auth)]
  t.match(here, /^[\w-]{22}$/)
  t.match(there, /^[\w-]{22}$/)
  t.not(here, there, 'another key, another hash: a dump of one cannot be matched against a list of usernames')
  // And one server finds it again, in any case, by what was typed.
  t.equal((await auditPage(srv, { type: 'login.failed', username: typed.toLowerCase() })).events[0]?.username_hash, here)
})
