import t, { type Test } from 'tap'
import { createLocalJWKSet, jwtVerify } from 'jose'
import { assertOAuthError, basic, decodeJwt, startTestServer } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient({ audiences: ['https://api.example', 'https://billing.example'] })
const bare = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'] })
const userId = await srv.createUser('Alice', 'correct horse battery staple')

function assertNoStore(t: Test, headers: Headers) {
  t.equal(headers.get('cache-control'), 'no-store')
}


async function verify(token: string) {
  const jwks = await srv.get('/jwks')
  return jwtVerify(token, createLocalJWKSet(jwks.body), { issuer: srv.issuer, typ: 'at+jwt' })
}

t.test('client_credentials issues a signed RFC 9068 access token and no refresh token', async (t) => {
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'read' }, bare.auth)
  t.equal(r.status, 200)
  assertNoStore(t, r.headers)
  t.equal(r.headers.get('pragma'), 'no-cache')
  t.equal(r.body.token_type, 'Bearer')
  t.equal(r.body.scope, 'read')
  t.equal(r.body.expires_in, 600)
  t.notOk('refresh_token' in r.body, 'RFC 6749 §4.4.3: no refresh token')
  const { payload, protectedHeader } = await verify(r.body.access_token)
  t.equal(protectedHeader.typ, 'at+jwt')
  t.equal(protectedHeader.alg, 'ES256')
  t.type(protectedHeader.kid, 'string')
  t.equal(payload.iss, srv.issuer)
  t.equal(payload.sub, bare.id)
  t.equal(payload.client_id, bare.id)
  t.equal(payload.aud, srv.issuer, 'no audiences: the issuer')
  t.equal(payload.scope, 'read')
  t.type(payload.jti, 'string')
  t.equal(payload.exp! - payload.iat!, 600)
})

t.test('client_secret_post authenticates too', async (t) => {
  const r = await srv.post('/token', { grant_type: 'client_credentials', client_id: bare.id, client_secret: bare.secret })
  t.equal(r.status, 200)
  t.equal(r.body.scope, 'read', 'omitted scope: everything allowed')
})

t.test('password grant: sub is the user id, refresh token issued, username case-insensitive', async (t) => {
  const r = await srv.post('/token', { grant_type: 'password', username: 'ALICE', password: 'correct horse battery staple' }, app.auth)
  t.equal(r.status, 200)
  t.type(r.body.refresh_token, 'string')
  t.equal(r.body.scope, 'read write')
  const { payload } = await verify(r.body.access_token)
  t.equal(payload.sub, userId)
  t.equal(payload.aud, 'https://api.example', 'first audience by default')
  t.equal(payload.client_id, app.id)
})

t.test('no refresh token for a client without the refresh_token grant', async (t) => {
  const noRefresh = await srv.createClient({ grant_types: ['password'] })
  const r = await srv.post('/token', { grant_type: 'password', username: 'alice', password: 'correct horse battery staple' }, noRefresh.auth)
  t.equal(r.status, 200)
  t.notOk('refresh_token' in r.body)
})

t.test('resource picks the audience (RFC 8707), and may repeat', async (t) => {
  const one = await srv.post('/token', { grant_type: 'client_credentials', resource: 'https://billing.example' }, app.auth)
  t.equal(one.status, 200)
  t.equal(decodeJwt(one.body.access_token).payload.aud, 'https://billing.example')
  const two = await srv.post('/token', { grant_type: 'client_credentials', resource: ['https://api.example', 'https://billing.example'] }, app.auth)
  t.equal(two.status, 200)
  t.same(decodeJwt(two.body.access_token).payload.aud, ['https://api.example', 'https://billing.example'])
  const bad = await srv.post('/token', { grant_type: 'client_credentials', resource: 'https://evil.example' }, app.auth)
  assertOAuthError(t, bad, 400, 'invalid_target')
})

t.test('scope beyond what is allowed is invalid_scope, never narrowed', async (t) => {
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'read admin' }, app.auth)
  assertOAuthError(t, r, 400, 'invalid_scope')
  const malformed = await srv.post('/token', { grant_type: 'client_credentials', scope: 'read "quoted"' }, app.auth)
  assertOAuthError(t, malformed, 400, 'invalid_scope')
})

t.test("a user's scopes narrow the client's", async (t) => {
  await srv.createUser('reader', 'reader password', { scopes: ['read'] })
  const ok = await srv.post('/token', { grant_type: 'password', username: 'reader', password: 'reader password' }, app.auth)
  t.equal(ok.status, 200)
  t.equal(ok.body.scope, 'read')
  const beyond = await srv.post('/token', { grant_type: 'password', username: 'reader', password: 'reader password', scope: 'write' }, app.auth)
  assertOAuthError(t, beyond, 400, 'invalid_scope')
})

t.test('client authentication failures', async (t) => {
  const wrong = await srv.post('/token', { grant_type: 'client_credentials' }, [app.id, 'wrong'])
  assertOAuthError(t, wrong, 401, 'invalid_client')
  t.match(wrong.headers.get('www-authenticate'), /^Basic/)
  const unknown = await srv.post('/token', { grant_type: 'client_credentials' }, ['nobody', 'x'])
  assertOAuthError(t, unknown, 401, 'invalid_client')
  t.same(unknown.body, wrong.body, 'unknown client and wrong secret look the same')
  const none = await srv.post('/token', { grant_type: 'client_credentials' })
  assertOAuthError(t, none, 401, 'invalid_client')
  const postWrong = await srv.post('/token', { grant_type: 'client_credentials', client_id: app.id, client_secret: 'nope' })
  assertOAuthError(t, postWrong, 401, 'invalid_client')
  const garbage = await srv.post('/token', { grant_type: 'client_credentials' }, undefined, { authorization: 'Basic !!!' })
  assertOAuthError(t, garbage, 401, 'invalid_client')
})

t.test('Basic credentials are form-urlencoded (RFC 6749 §2.3.1)', async (t) => {
  const id = 'odd id:+/%'
  const secret = 'secret with spaces & symbols +=/:'
  await srv.tessera.clients.ensureAdminClient(id, secret)
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, undefined, { authorization: basic(id, secret) })
  t.equal(r.status, 200)
})

t.test('two authentication methods at once is invalid_request', async (t) => {
  const r = await srv.post('/token', { grant_type: 'client_credentials', client_id: app.id, client_secret: app.secret }, app.auth)
  assertOAuthError(t, r, 400, 'invalid_request')
})

t.test('a repeated parameter is invalid_request', async (t) => {
  const r = await srv.post('/token', 'grant_type=client_credentials&scope=read&scope=write', app.auth)
  assertOAuthError(t, r, 400, 'invalid_request')
  const gt = await srv.post('/token', 'grant_type=client_credentials&grant_type=password', app.auth)
  assertOAuthError(t, gt, 400, 'invalid_request')
})

t.test('grant type errors', async (t) => {
  const missing = await srv.post('/token', {}, app.auth)
  assertOAuthError(t, missing, 400, 'invalid_request')
  const unknown = await srv.post('/token', { grant_type: 'urn:example:magic' }, app.auth)
  assertOAuthError(t, unknown, 400, 'unsupported_grant_type')
  const code = await srv.post('/token', { grant_type: 'authorization_code', code: 'x' }, app.auth)
  assertOAuthError(t, code, 400, 'unsupported_grant_type')
  const notAllowed = await srv.post('/token', { grant_type: 'password', username: 'alice', password: 'x' }, bare.auth)
  assertOAuthError(t, notAllowed, 400, 'unauthorized_client')
})

t.test('bad user credentials are invalid_grant, the same whether the user exists or not', async (t) => {
  const wrongPassword = await srv.post('/token', { grant_type: 'password', username: 'alice', password: 'wrong' }, app.auth)
  assertOAuthError(t, wrongPassword, 400, 'invalid_grant')
  const noUser = await srv.post('/token', { grant_type: 'password', username: 'mallory', password: 'wrong' }, app.auth)
  assertOAuthError(t, noUser, 400, 'invalid_grant')
  t.same(noUser.body, wrongPassword.body)
  t.equal(noUser.text, wrongPassword.text)
  const missing = await srv.post('/token', { grant_type: 'password', username: 'alice' }, app.auth)
  assertOAuthError(t, missing, 400, 'invalid_request')
})

t.test('unknown and known users take about the same time', async (t) => {
  const time = async (username: string) => {
    const start = process.hrtime.bigint()
    await srv.post('/token', { grant_type: 'password', username, password: 'wrong' }, app.auth)
    return Number(process.hrtime.bigint() - start) / 1e6
  }
  // Both pay for one argon2 verification; without the dummy hash the unknown user would answer
  // in well under a millisecond of server time.
  const known: number[] = []
  const unknown: number[] = []
  for (let i = 0; i < 4; i++) {
    known.push(await time('alice'))
    unknown.push(await time(`nobody-${i}`))
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  t.ok(median(unknown) > median(known) / 3, `unknown ${median(unknown)} ms vs known ${median(known)} ms`)
})

t.test('a disabled user cannot log in', async (t) => {
  const id = await srv.createUser('bob', 'bob password')
  t.equal((await srv.admin('PATCH', `/admin/users/${id}`, { disabled: true })).status, 200)
  const r = await srv.post('/token', { grant_type: 'password', username: 'bob', password: 'bob password' }, app.auth)
  assertOAuthError(t, r, 400, 'invalid_grant')
})

t.test('the token endpoint wants a form body', async (t) => {
  const res = await fetch(`${srv.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: basic(...app.auth) },
    body: JSON.stringify({ grant_type: 'client_credentials' }),
  })
  t.equal(res.status, 400)
  t.equal(((await res.json()) as any).error, 'invalid_request')
  const xml = await fetch(`${srv.url}/token`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: '<x/>' })
  t.equal(xml.status, 400)
  t.equal(((await xml.json()) as any).error, 'invalid_request')
  t.equal(xml.headers.get('cache-control'), 'no-store')
  const big = await srv.post('/token', { grant_type: 'client_credentials', junk: 'x'.repeat(100_000) }, app.auth)
  assertOAuthError(t, big, 400, 'invalid_request')
})

t.test('per-client TTL overrides', async (t) => {
  const short = await srv.createClient({ access_token_ttl: 5 })
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, short.auth)
  t.equal(r.body.expires_in, 5)
  const { payload } = decodeJwt(r.body.access_token)
  t.equal(payload.exp - payload.iat, 5)
})
