// What every route answers, over HTTP, against the OpenAPI document the server serves: each answer's
// status, content type, body and telling headers are as documented (test/helpers/openapi.ts). And,
// because the response schemas also serialize (fast-json-stringify drops what a schema does not
// list, and coerces types), each answer keeps every field its handler made: compared with the
// server's own view of the record (clientView, userView, auditView, metadata, the key list) made
// plain JSON, or with the token's claims. Also: the route's own checks answer before the schema's
// validation, with their descriptions and in their order.
import t, { type Test } from 'tap'
import { auditView } from '../../src/audit/service.js'
import { clientView, userView } from '../../src/http/admin.js'
import { metadata } from '../../src/http/public.js'
import { DocumentedAnswers, servedDocument } from '../helpers/openapi.js'
import { keyPair, proof } from '../helpers/jwt-clients.js'
import { assertOAuthError, decodeJwt, startTestServer, toResult, type HttpResult } from '../helpers/server.js'

const srv = await startTestServer(t, { CLIENT_AUTH_FAILURES: '2', LOGIN_FREE_FAILURES: '1', LOGIN_USER_ADDRESSES: '1' })
const doc = new DocumentedAnswers(await servedDocument(srv))
const check = (t: Test, method: string, path: string, r: HttpResult) => doc.check(t, method, path, r)
const plain = (value: unknown) => JSON.parse(JSON.stringify(value))

const API = ['https://a.example', 'https://b.example']
const app = await srv.createClient({ audiences: API, scopes: ['read', 'write'] })
const userId = await srv.createUser('olga', 'olga password 1')
const key = await keyPair()
const htu = `${srv.issuer}/token`

async function adminRaw(method: string, path: string, headers: Record<string, string>): Promise<HttpResult> {
  return toResult(await fetch(`${srv.adminUrl}${path}`, { method, headers }))
}

t.test('POST /token: every grant, with and without DPoP', async (t) => {
  const cc = await srv.post('/token', { grant_type: 'client_credentials', scope: 'read' }, app.auth)
  check(t, 'POST', '/token', cc)
  t.same(Object.keys(cc.body).sort(), ['access_token', 'expires_in', 'scope', 'token_type'])
  t.equal(cc.body.token_type, 'Bearer')

  const login = await srv.post('/token', { grant_type: 'password', username: 'olga', password: 'olga password 1' }, app.auth)
  check(t, 'POST', '/token', login)
  t.same(Object.keys(login.body).sort(), ['access_token', 'expires_in', 'refresh_token', 'scope', 'token_type'])

  const refreshed = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: login.body.refresh_token }, app.auth)
  check(t, 'POST', '/token', refreshed)
  t.type(refreshed.body.refresh_token, 'string')

  const bound = await srv.post('/token', { grant_type: 'client_credentials' }, app.auth, { dpop: await proof(key, { htu }) })
  check(t, 'POST', '/token', bound)
  t.equal(bound.body.token_type, 'DPoP')
  t.ok(bound.headers.get('dpop-nonce'), 'with the nonce for the next proof')
})

t.test('POST /token: the form is read before the schema is, so its descriptions answer', async (t) => {
  const repeated = await srv.post('/token', 'grant_type=client_credentials&grant_type=password', app.auth)
  assertOAuthError(t, repeated, 400, 'invalid_request')
  t.equal(repeated.body.error_description, 'parameter "grant_type" is repeated')
  check(t, 'POST', '/token', repeated)
  const missing = await srv.post('/token', { scope: 'read' }, app.auth)
  t.equal(missing.body.error_description, 'parameter "grant_type" is required')
  const empty = await srv.post('/token', { grant_type: '' }, app.auth)
  t.equal(empty.body.error_description, 'parameter "grant_type" is required', 'empty counts as absent')
  const unknown = await srv.post('/token', { grant_type: 'urn:example:magic' }, app.auth)
  assertOAuthError(t, unknown, 400, 'unsupported_grant_type')
  check(t, 'POST', '/token', unknown)
  const json = await fetch(`${srv.url}/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"grant_type":5}' })
  t.same(await json.json(), { error: 'invalid_request', error_description: 'the request body must be application/x-www-form-urlencoded' })
  const nul = await srv.post('/token', { grant_type: 'client_credentials', scope: 're\u0000ad' }, app.auth)
  t.equal(nul.body.error_description, 'parameter "scope" contains a NUL character')
})

t.test('POST /token: refusals, with their headers', async (t) => {
  const bad = await srv.post('/token', { grant_type: 'client_credentials' }, [app.id, 'wrong secret'])
  assertOAuthError(t, bad, 401, 'invalid_client')
  check(t, 'POST', '/token', bad)
  let throttled = bad
  for (let i = 0; i < 5 && throttled.status !== 429; i++) {
    throttled = await srv.post('/token', { grant_type: 'client_credentials' }, [app.id, 'wrong secret'])
  }
  assertOAuthError(t, throttled, 429, 'slow_down')
  check(t, 'POST', '/token', throttled)
  t.match(throttled.headers.get('retry-after'), /^\d+$/)

  const mobile = await srv.createClient({ token_endpoint_auth_method: 'none', grant_types: ['password', 'refresh_token'] })
  const noNonce = await srv.post('/token', { grant_type: 'password', username: 'olga', password: 'olga password 1', client_id: mobile.id }, undefined, {
    dpop: await proof(key, { htu }),
  })
  assertOAuthError(t, noNonce, 400, 'use_dpop_nonce')
  check(t, 'POST', '/token', noNonce)
  t.ok(noNonce.headers.get('dpop-nonce'))
})

t.test('POST /introspect: what it answers keeps every claim', async (t) => {
  const login = await srv.post('/token', { grant_type: 'password', username: 'olga', password: 'olga password 1', resource: API }, app.auth, {
    dpop: await proof(key, { htu }),
  })
  t.equal(login.status, 200)
  const claims = decodeJwt(login.body.access_token).payload
  t.same(claims.aud, API, 'two audiences: aud is an array')
  const at = await srv.post('/introspect', { token: login.body.access_token }, app.auth)
  check(t, 'POST', '/introspect', at)
  const fromClaims = Object.fromEntries(
    ['scope', 'client_id', 'cnf', 'exp', 'iat', 'nbf', 'sub', 'aud', 'iss', 'jti'].filter((c) => claims[c] !== undefined).map((c) => [c, claims[c]]),
  )
  t.same(at.body, { active: true, ...fromClaims, username: 'olga', token_type: 'DPoP', token_use: 'access_token' })
  t.ok(Array.isArray(at.body.aud), 'aud stays an array')

  const rt = await srv.post('/introspect', { token: login.body.refresh_token }, app.auth)
  check(t, 'POST', '/introspect', rt)
  t.same(Object.keys(rt.body).sort(), ['active', 'aud', 'client_id', 'cnf', 'exp', 'iat', 'iss', 'scope', 'sub', 'token_type', 'token_use', 'username'])
  t.same(rt.body.aud, API)
  t.equal(rt.body.token_type, 'refresh_token')

  const single = await srv.post('/token', { grant_type: 'client_credentials', resource: API[1]! }, app.auth)
  const one = await srv.post('/introspect', { token: single.body.access_token }, app.auth)
  t.equal(one.body.aud, API[1], 'one audience: a string')
  t.notOk('username' in one.body || 'cnf' in one.body)

  const inactive = await srv.post('/introspect', { token: 'not-a-token' }, app.auth)
  check(t, 'POST', '/introspect', inactive)
  t.equal(inactive.text, '{"active":false}')

  const missing = await srv.post('/introspect', {}, app.auth)
  t.equal(missing.body.error_description, 'parameter "token" is required')
  check(t, 'POST', '/introspect', missing)
  const other = await srv.createClient({ grant_types: ['client_credentials'] })
  const unauthenticated = await srv.post('/introspect', { token: 'x' }, [other.id, 'wrong'])
  check(t, 'POST', '/introspect', unauthenticated)
})

t.test('POST /revoke: the client authenticates before the token is looked for', async (t) => {
  const other = await srv.createClient({ grant_types: ['client_credentials'] })
  const { body } = await srv.post('/token', { grant_type: 'client_credentials' }, other.auth)
  const ok = await srv.post('/revoke', { token: body.access_token }, other.auth)
  check(t, 'POST', '/revoke', ok)
  const missing = await srv.post('/revoke', {}, other.auth)
  t.equal(missing.body.error_description, 'parameter "token" is required')
  check(t, 'POST', '/revoke', missing)
  const anonymous = await srv.post('/revoke', {}, [other.id, 'wrong secret'])
  assertOAuthError(t, anonymous, 401, 'invalid_client')
  check(t, 'POST', '/revoke', anonymous)
})

t.test('GET /jwks, the metadata on both listeners, /healthz and /readyz', async (t) => {
  const jwks = await srv.get('/jwks')
  check(t, 'GET', '/jwks', jwks)
  t.equal(jwks.text, srv.tessera.keys.jwks().body, 'the key set as the key manager made it, byte for byte')
  const again = await srv.get('/jwks', { 'if-none-match': jwks.headers.get('etag')! })
  check(t, 'GET', '/jwks', again)
  t.equal(again.status, 304)

  const path = '/.well-known/oauth-authorization-server'
  const pub = await srv.get(path)
  check(t, 'GET', path, pub)
  t.same(pub.body, plain(metadata(srv.issuer)))
  const adm = await adminRaw('GET', path, {})
  check(t, 'GET', path, adm)
  t.same(adm.body, pub.body)

  const live = await srv.get('/healthz')
  check(t, 'GET', '/healthz', live)
  t.same(live.body, { status: 'ok' })
  const ready = await srv.get('/readyz')
  check(t, 'GET', '/readyz', ready)
  t.same(Object.keys(ready.body).sort(), ['database', 'signingKey', 'status', 'view'])
})

t.test('admin clients: every setting is answered as stored', async (t) => {
  const path = '/admin/clients/{client_id}'
  const made = await srv.admin('POST', '/admin/clients', { name: 'answers', grant_types: ['client_credentials'], scopes: ['read'], access_token_ttl: 60 })
  check(t, 'POST', '/admin/clients', made)
  const { client_secret, ...view } = made.body
  t.type(client_secret, 'string')
  t.same(view, plain(clientView((await srv.tessera.clients.find(made.body.client_id))!)))

  const signer = await keyPair('ES256', 'k1')
  const pkj = await srv.admin('POST', '/admin/clients', {
    name: 'with keys',
    grant_types: ['client_credentials'],
    scopes: ['read'],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [signer.jwk] },
    token_endpoint_auth_signing_alg: 'ES256',
    dpop_bound_access_tokens: true,
  })
  check(t, 'POST', '/admin/clients', pkj)
  t.notOk('client_secret' in pkj.body, 'no secret for a private_key_jwt client')
  t.same(pkj.body.jwks, { keys: [signer.jwk] }, 'every member of the key')
  t.same(pkj.body, plain(clientView((await srv.tessera.clients.find(pkj.body.client_id))!)))

  const one = await srv.admin('GET', `/admin/clients/${pkj.body.client_id}`)
  check(t, 'GET', path, one)
  t.same(one.body, pkj.body)
  const page = await srv.admin('GET', '/admin/clients?limit=1')
  check(t, 'GET', '/admin/clients', page)
  t.type(page.body.next, 'string')
  const all = await srv.admin('GET', '/admin/clients?limit=1000')
  t.same(all.body, { clients: plain((await srv.tessera.clients.list({ limit: 1000 })).map(clientView)) })
  const badLimit = await srv.admin('GET', '/admin/clients?limit=x')
  t.equal(badLimit.body.error_description, 'limit must be a whole number from 1 to 1000')
  check(t, 'GET', '/admin/clients', badLimit)

  const changed = await srv.admin('PATCH', `/admin/clients/${made.body.client_id}`, { access_token_ttl: null, audiences: ['https://c.example'] })
  check(t, 'PATCH', path, changed)
  t.same(changed.body, plain(clientView((await srv.tessera.clients.find(made.body.client_id))!)))
  const badBody = await srv.admin('PATCH', `/admin/clients/${made.body.client_id}`, { name: 7 })
  assertOAuthError(t, badBody, 400, 'invalid_request')
  check(t, 'PATCH', path, badBody)

  const secret = await srv.admin('POST', `/admin/clients/${made.body.client_id}/secret`)
  check(t, 'POST', `${path}/secret`, secret)
  t.same(Object.keys(secret.body), ['client_secret'])
  check(t, 'POST', `${path}/revoke-tokens`, await srv.admin('POST', `/admin/clients/${made.body.client_id}/revoke-tokens`))
  check(t, 'DELETE', path, await srv.admin('DELETE', `/admin/clients/${made.body.client_id}`))
  const gone = await srv.admin('GET', `/admin/clients/${made.body.client_id}`)
  assertOAuthError(t, gone, 404, 'not_found')
  check(t, 'GET', path, gone)
})

t.test('admin users: views, lockout, conflicts', async (t) => {
  const path = '/admin/users/{id}'
  const made = await srv.admin('POST', '/admin/users', { username: 'pavel', password: 'pavel password 1', scopes: ['read'] })
  check(t, 'POST', '/admin/users', made)
  t.same(made.body, plain(userView((await srv.tessera.users.find(made.body.id))!)))
  const taken = await srv.admin('POST', '/admin/users', { username: 'PAVEL', password: 'pavel password 1' })
  assertOAuthError(t, taken, 409, 'conflict')
  check(t, 'POST', '/admin/users', taken)

  const byName = await srv.admin('GET', '/admin/users?username=Pavel')
  check(t, 'GET', '/admin/users', byName)
  t.same(byName.body, { users: [made.body] })
  const page = await srv.admin('GET', '/admin/users?limit=1')
  check(t, 'GET', '/admin/users', page)
  t.type(page.body.next, 'string')
  const badPage = await srv.admin('GET', '/admin/users?username=pavel&limit=0')
  t.equal(badPage.body.error_description, 'limit must be a whole number from 1 to 1000', 'paging is checked with a username too')

  const one = await srv.admin('GET', `/admin/users/${userId}`)
  check(t, 'GET', path, one)
  t.equal(one.body.scopes, null, 'no narrowing: null, not dropped')
  const changed = await srv.admin('PATCH', `/admin/users/${made.body.id}`, { disabled: true, scopes: null })
  check(t, 'PATCH', path, changed)
  t.same(changed.body, plain(userView((await srv.tessera.users.find(made.body.id))!)))
  check(t, 'POST', `${path}/password`, await srv.admin('POST', `/admin/users/${userId}/password`, { password: 'olga password 2' }))
  const weak = await srv.admin('POST', `/admin/users/${userId}/password`, { password: 'short' })
  assertOAuthError(t, weak, 400, 'invalid_request')
  check(t, 'POST', `${path}/password`, weak)

  // LOGIN_FREE_FAILURES and LOGIN_USER_ADDRESSES are 1 here: two failures from one network and
  // logins for the name wait, from every network (what the lockout view calls locked).
  for (let i = 0; i < 2; i++) await srv.post('/token', { grant_type: 'password', username: 'olga', password: 'wrong' }, app.auth)
  const locked = await srv.admin('GET', `/admin/users/${userId}/lockout`)
  check(t, 'GET', `${path}/lockout`, locked)
  t.same(Object.keys(locked.body).sort(), ['failures', 'locked', 'locked_until', 'user_id', 'username'])
  t.equal(locked.body.locked, true)
  t.type(locked.body.locked_until, 'string')
  check(t, 'DELETE', `${path}/lockout`, await srv.admin('DELETE', `/admin/users/${userId}/lockout`))
  const clear = await srv.admin('GET', `/admin/users/${userId}/lockout`)
  t.same({ ...clear.body, user_id: undefined }, { user_id: undefined, username: 'olga', failures: 0, locked: false, locked_until: null })
  check(t, 'GET', `${path}/lockout`, clear)

  check(t, 'POST', `${path}/revoke-tokens`, await srv.admin('POST', `/admin/users/${made.body.id}/revoke-tokens`))
  check(t, 'DELETE', path, await srv.admin('DELETE', `/admin/users/${made.body.id}`))
  const unknown = await srv.admin('GET', '/admin/users/00000000-0000-4000-8000-000000000000')
  check(t, 'GET', path, unknown)
  const malformed = await srv.admin('GET', `/admin/users/a%00b`)
  assertOAuthError(t, malformed, 400, 'invalid_request')
  check(t, 'GET', path, malformed)
})

t.test('admin keys: the list and a rotation, every date answered', async (t) => {
  const rotated = await srv.admin('POST', '/admin/keys/rotate')
  check(t, 'POST', '/admin/keys/rotate', rotated)
  const list = await srv.admin('GET', '/admin/keys')
  check(t, 'GET', '/admin/keys', list)
  t.same(list.body, plain({ keys: await srv.tessera.keys.list() }))
  t.same(rotated.body, list.body.keys.find((k: { kid: string }) => k.kid === rotated.body.kid))
  const bad = await srv.admin('POST', '/admin/keys/rotate?immediate=maybe')
  t.equal(bad.body.error_description, 'immediate must be true or false')
  check(t, 'POST', '/admin/keys/rotate', bad)
})

t.test('admin audit: events with their open details, and the filters checked first', async (t) => {
  await srv.tessera.audit.flush()
  const until = new Date(srv.tessera.clock.now().getTime() + 1).toISOString()
  const r = await srv.admin('GET', `/admin/audit?limit=1000&until=${until}`)
  check(t, 'GET', '/admin/audit', r)
  const stored = await srv.tessera.audit.list({ limit: 1000, until: new Date(until) })
  t.same(r.body, plain({ events: stored.map(auditView) }))
  t.ok(
    r.body.events.some((e: { type: string; details: { changes?: unknown } }) => e.type === 'admin.change' && e.details.changes !== undefined),
    'nested details are kept',
  )
  const page = await srv.admin('GET', '/admin/audit?limit=1')
  check(t, 'GET', '/admin/audit', page)
  t.type(page.body.next, 'string')
  const next = await srv.admin('GET', `/admin/audit?limit=1&after=${page.body.next}&since=2020-01-01`)
  check(t, 'GET', '/admin/audit', next)
  t.equal(next.status, 200, 'a date alone is a time')
  const bad = await srv.admin('GET', '/admin/audit?since=yesterday')
  t.equal(bad.body.error_description, 'since must be an ISO 8601 time such as 2024-05-01T12:00:00Z')
  check(t, 'GET', '/admin/audit', bad)
})

t.test('the admin listener refuses, as documented', async (t) => {
  const reader = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read', 'admin'], audiences: [`${srv.issuer}/admin`] })
  const readOnly = (await srv.post('/token', { grant_type: 'client_credentials', scope: 'read' }, reader.auth)).body.access_token
  const metrics = await adminRaw('GET', '/metrics', { authorization: `Bearer ${await srv.adminToken()}` })
  check(t, 'GET', '/metrics', metrics)
  t.match(metrics.text, /^# HELP /m)
  for (const [method, path, template] of [
    ['GET', '/metrics', '/metrics'],
    ['GET', '/admin/clients', '/admin/clients'],
    ['DELETE', `/admin/users/${userId}`, '/admin/users/{id}'],
  ] as const) {
    const none = await adminRaw(method, path, {})
    assertOAuthError(t, none, 401, 'invalid_token')
    check(t, method, template, none)
    const scoped = await adminRaw(method, path, { authorization: `Bearer ${readOnly}` })
    assertOAuthError(t, scoped, 403, 'insufficient_scope')
    check(t, method, template, scoped)
  }
  const bound = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, reader.auth, { dpop: await proof(key, { htu }) })
  const asBearer = await adminRaw('GET', '/admin/keys', { authorization: `Bearer ${bound.body.access_token}` })
  assertOAuthError(t, asBearer, 401, 'invalid_token')
  t.match(asBearer.headers.get('www-authenticate'), /^DPoP /)
  check(t, 'GET', '/admin/keys', asBearer)
  const noProof = await adminRaw('GET', '/admin/keys', { authorization: `DPoP ${bound.body.access_token}` })
  assertOAuthError(t, noProof, 401, 'invalid_dpop_proof')
  check(t, 'GET', '/admin/keys', noProof)
  check(t, 'GET', '/openapi.json', await adminRaw('GET', '/openapi.json', {}))
})
