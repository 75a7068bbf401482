// RFC 7662 token introspection over real HTTP: what an active token says, every way a token can
// be inactive (each answered exactly {"active":false}), and who may see which token.
import t, { type Test } from 'tap'
import { SignJWT, generateKeyPair } from 'jose'
import { TestClock, decodeJwt, startTestServer, type HttpResult, assertOAuthError } from '../helpers/server.js'

const API = 'https://api.example'
const BILLING = 'https://billing.example'

const clock = new TestClock()
const srv = await startTestServer(t, {}, { clock })
const app = await srv.createClient({ audiences: [API, BILLING] })
const other = await srv.createClient({ audiences: [API] })
// A resource server: it introspects the tokens presented to https://api.example.
const rs = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'], resource_identifiers: [API] })
const userId = await srv.createUser('Dora', 'dora password')

type Client = { id: string; secret: string; auth: [string, string] }
type Tokens = { access_token: string; refresh_token: string; scope: string; expires_in: number }

async function token(client: Client, form: Record<string, string | string[]>): Promise<Tokens> {
  const r = await srv.post('/token', form, client.auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body
}
const login = (client: Client = app, extra: Record<string, string | string[]> = {}, username = 'dora', password = 'dora password') =>
  token(client, { grant_type: 'password', username, password, ...extra })
const clientToken = (client: Client = app, extra: Record<string, string | string[]> = {}) =>
  token(client, { grant_type: 'client_credentials', ...extra })

const introspect = (tok: string, client: Client = app, extra: Record<string, string> = {}) =>
  srv.post('/introspect', { token: tok, ...extra }, client.auth)

function assertNoStore(t: Test, r: HttpResult) {
  t.equal(r.headers.get('cache-control'), 'no-store', 'Cache-Control: no-store')
  t.equal(r.headers.get('pragma'), 'no-cache')
}

async function assertInactive(t: Test, tok: string, client: Client = app, what = 'inactive') {
  const r = await introspect(tok, client)
  t.equal(r.status, 200, `${what}: 200`)
  t.equal(r.text, '{"active":false}', `${what}: exactly {"active":false}`)
  assertNoStore(t, r)
}

async function assertActive(t: Test, tok: string, client: Client = app, what = 'active'): Promise<any> {
  const r = await introspect(tok, client)
  t.equal(r.status, 200, `${what}: 200`)
  t.equal(r.body?.active, true, what)
  return r.body
}


const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')

/** A JWT made from a real token's claims, signed with our own current key unless told otherwise. */
async function forge(
  real: string,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
  key: Parameters<SignJWT['sign']>[0] = srv.tessera.keys.signingKey().key,
): Promise<string> {
  const signing = srv.tessera.keys.signingKey()
  return new SignJWT({ ...decodeJwt(real).payload, ...claims })
    .setProtectedHeader({ alg: signing.alg, typ: 'at+jwt', kid: signing.kid, ...header } as never)
    .sign(key)
}

t.test('an active password-grant access token says what RFC 7662 §2.2 lists', async (t) => {
  const { access_token } = await login()
  const claims = decodeJwt(access_token).payload
  const r = await introspect(access_token)
  t.equal(r.status, 200)
  assertNoStore(t, r)
  t.match(r.headers.get('content-type'), /application\/json/)
  t.match(r.body, {
    active: true,
    scope: 'read write',
    client_id: app.id,
    username: 'Dora',
    token_type: 'Bearer',
    exp: claims.exp,
    iat: claims.iat,
    sub: userId,
    aud: API,
    iss: srv.issuer,
    jti: claims.jti,
  })
  t.equal(r.body.exp - r.body.iat, 600)
  t.notOk('nbf' in r.body, 'no nbf: the tokens carry none')
})

t.test('a client_credentials token: the client is the subject, and there is no username', async (t) => {
  const { access_token } = await clientToken(app, { scope: 'read', resource: [API, BILLING] })
  const claims = decodeJwt(access_token).payload
  const body = await assertActive(t, access_token)
  t.match(body, { client_id: app.id, sub: app.id, token_type: 'Bearer', iss: srv.issuer, jti: claims.jti })
  t.equal(body.scope, 'read', 'exactly the scope granted')
  t.same(body.aud, [API, BILLING])
  t.notOk('username' in body)
})

t.test('a refresh token is active to its own client', async (t) => {
  const { refresh_token } = await login(app, { scope: 'read' })
  const body = await assertActive(t, refresh_token)
  t.match(body, { active: true, client_id: app.id, username: 'Dora', sub: userId, aud: API, iss: srv.issuer })
  t.equal(body.scope, 'read', 'exactly the scope granted')
  t.equal(body.token_type, 'refresh_token')
  t.type(body.iat, 'number')
  t.equal(body.exp - body.iat, 1_209_600, 'the default refresh token lifetime')
})

t.test('the caller must authenticate as a client', async (t) => {
  const { access_token } = await clientToken()
  const post = await srv.post('/introspect', { token: access_token, client_id: app.id, client_secret: app.secret })
  t.equal(post.status, 200, 'client_secret_post')
  t.equal(post.body.active, true)
  const none = await srv.post('/introspect', { token: access_token })
  assertOAuthError(t, none, 401, 'invalid_client')
  t.match(none.headers.get('www-authenticate'), /^Basic/)
  assertOAuthError(t, await srv.post('/introspect', { token: access_token }, [app.id, 'wrong secret']), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/introspect', { token: access_token }, ['nobody', 'x']), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/introspect', { token: access_token, client_id: app.id, client_secret: 'wrong' }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/introspect', { token: access_token, client_id: app.id }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/introspect', { token: access_token, client_secret: app.secret }, app.auth), 400, 'invalid_request')
  // Whatever the token, and whichever way the caller's record is read, a bad caller is refused.
  // The signature's first character changed: every bit of it counts (its last one carries padding
  // bits that base64 decoding ignores, so changing the end left about 1 in 250 signatures intact).
  const signature = access_token.split('.')[2]!
  const forged = `${access_token.slice(0, -signature.length)}${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`
  for (const token of ['not.a.jwt', 'opaque-token', forged]) {
    assertOAuthError(t, await srv.post('/introspect', { token }, [app.id, 'wrong secret']), 401, 'invalid_client')
    t.same((await srv.post('/introspect', { token }, app.auth)).body, { active: false })
  }
})

t.test('bad requests are RFC 6749 §5.2 errors', async (t) => {
  assertOAuthError(t, await srv.post('/introspect', {}, app.auth), 400, 'invalid_request')
  assertOAuthError(t, await srv.post('/introspect', { token: '' }, app.auth), 400, 'invalid_request')
  assertOAuthError(t, await srv.post('/introspect', 'token=a&token=b', app.auth), 400, 'invalid_request')
  const json = await fetch(`${srv.url}/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(app.auth.join(':')).toString('base64')}` },
    body: JSON.stringify({ token: 'x' }),
  })
  t.equal(json.status, 400)
  t.equal(((await json.json()) as any).error, 'invalid_request')
})

t.test('token_type_hint is only a hint (RFC 7662 §2.1)', async (t) => {
  const { access_token, refresh_token } = await login()
  for (const hint of ['refresh_token', 'access_token', 'something_else']) {
    t.equal((await introspect(access_token, app, { token_type_hint: hint })).body.active, true, `access token, hint ${hint}`)
    t.equal((await introspect(refresh_token, app, { token_type_hint: hint })).body.active, true, `refresh token, hint ${hint}`)
  }
})

t.test('malformed tokens are inactive', async (t) => {
  const { access_token } = await clientToken()
  const [h, p] = access_token.split('.')
  const samples = [
    'x',
    'not a token at all',
    'a.b.c',
    '..',
    'a.b.c.d.e',
    `${h}.${p}`,
    `${h}.${p}.`,
    `${h}.${p}.AAAA`,
    `${h}.!!!.${access_token.split('.')[2]}`,
    `${b64({ alg: 'ES256' })}.${b64('not an object')}.AAAA`,
    `${b64([1, 2])}.${p}.AAAA`,
    'eyJ',
    'ünïcödé.☃.✓',
    'x'.repeat(5000),
    access_token.slice(0, -4),
    `${access_token} `,
  ]
  for (const sample of samples) await assertInactive(t, sample, app, `malformed ${JSON.stringify(sample.slice(0, 40))}`)
})

t.test('forged and foreign JWTs are inactive', async (t) => {
  const { access_token } = await clientToken()
  const ours = srv.tessera.keys.signingKey()
  t.equal((await introspect(await forge(access_token))).body.active, true, 'control: a token signed with our key as we do is active')

  const [, p] = access_token.split('.')
  await assertInactive(t, `${b64({ alg: 'none', typ: 'at+jwt', kid: ours.kid })}.${p}.`, app, 'alg none')
  await assertInactive(t, `${b64({ alg: 'none', typ: 'at+jwt' })}.${p}.`, app, 'alg none without kid')

  const stranger = await generateKeyPair('ES256')
  await assertInactive(t, await forge(access_token, {}, {}, stranger.privateKey), app, 'a key we do not have, with our kid')
  await assertInactive(t, await forge(access_token, {}, { kid: 'some-other-kid' }, stranger.privateKey), app, 'a key we do not have, another kid')
  await assertInactive(t, await forge(access_token, {}, { kid: undefined }), app, 'our key, no kid')
  const hmac = new TextEncoder().encode('x'.repeat(32))
  await assertInactive(t, await forge(access_token, {}, { alg: 'HS256' }, hmac), app, 'HS256 with a made-up secret')

  await assertInactive(t, await forge(access_token, { iss: 'https://evil.example' }), app, 'wrong issuer')
  await assertInactive(t, await forge(access_token, { iss: undefined }), app, 'no issuer')
  await assertInactive(t, await forge(access_token, {}, { typ: 'JWT' }), app, 'typ JWT rather than at+jwt (RFC 9068 §4)')
  await assertInactive(t, await forge(access_token, { jti: undefined }), app, 'no jti')
  await assertInactive(t, await forge(access_token, { client_id: undefined }), app, 'no client_id')

  const tampered = decodeJwt(access_token).payload
  const [h, , s] = access_token.split('.')
  await assertInactive(t, `${h}.${b64({ ...tampered, scope: 'read write admin' })}.${s}`, app, 'payload changed after signing')
})

t.test('an expired token is inactive', async (t) => {
  const short = await srv.createClient({ access_token_ttl: 1, refresh_token_ttl: 3 })
  const { access_token, refresh_token } = await login(short)
  const cc = await clientToken(short)
  await assertActive(t, access_token, short)
  await assertActive(t, cc.access_token, short)
  clock.advance(1)
  await assertInactive(t, access_token, short, 'access token at exp')
  await assertInactive(t, cc.access_token, short, 'client_credentials token at exp')
  await assertActive(t, refresh_token, short, 'the refresh token lives longer')
  clock.advance(2)
  await assertInactive(t, refresh_token, short, 'refresh token at its expiry')
})

t.test('a revoked token is inactive', async (t) => {
  const { access_token, refresh_token } = await login()
  const cc = await clientToken()
  for (const tok of [cc.access_token, refresh_token]) {
    t.equal((await srv.post('/revoke', { token: tok }, app.auth)).status, 200)
  }
  await assertInactive(t, cc.access_token, app, 'revoked access token')
  await assertInactive(t, refresh_token, app, 'revoked refresh token')
  await assertInactive(t, access_token, app, 'access token of the revoked family')
})

t.test("a token whose user was disabled or deleted is inactive", async (t) => {
  const id = await srv.createUser('frank', 'frank password')
  const frank = () => login(app, {}, 'frank', 'frank password')
  const a = await frank()
  await assertActive(t, a.access_token)
  t.equal((await srv.admin('PATCH', `/admin/users/${id}`, { disabled: true })).status, 200)
  await assertInactive(t, a.access_token, app, 'access token of a disabled user')
  await assertInactive(t, a.refresh_token, app, 'refresh token of a disabled user')
  await assertInactive(t, a.access_token, rs, 'to the resource server too')

  t.equal((await srv.admin('PATCH', `/admin/users/${id}`, { disabled: false })).status, 200)
  const b = await frank()
  await assertActive(t, b.access_token)
  t.equal((await srv.admin('DELETE', `/admin/users/${id}`)).status, 204)
  await assertInactive(t, b.access_token, app, 'access token of a deleted user')
  await assertInactive(t, b.refresh_token, app, 'refresh token of a deleted user')
})

t.test('a token whose client was deleted is inactive', async (t) => {
  const doomed = await srv.createClient({ audiences: [API] })
  const cc = await clientToken(doomed)
  const pw = await login(doomed)
  await assertActive(t, cc.access_token, rs, 'the resource server sees the client_credentials token')
  await assertActive(t, pw.access_token, rs, 'and the password token')
  t.equal((await srv.admin('DELETE', `/admin/clients/${doomed.id}`)).status, 204)
  await assertInactive(t, cc.access_token, rs, 'client_credentials token of a deleted client')
  await assertInactive(t, pw.access_token, rs, 'password token of a deleted client')
})

t.test('a used (rotated) refresh token is inactive; its successor is active', async (t) => {
  const first = await login()
  const second = await token(app, { grant_type: 'refresh_token', refresh_token: first.refresh_token })
  await assertInactive(t, first.refresh_token, app, 'the spent refresh token')
  await assertActive(t, second.refresh_token, app, 'its successor')
  await assertActive(t, first.access_token, app, 'rotation alone does not revoke the earlier access token')
})

t.test('a refresh token whose family was revoked is inactive', async (t) => {
  const first = await login()
  const second = await token(app, { grant_type: 'refresh_token', refresh_token: first.refresh_token })
  const reuse = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token }, app.auth)
  t.equal(reuse.body.error, 'invalid_grant', 'reuse of the spent token revokes the family')
  await assertInactive(t, second.refresh_token, app, 'the latest refresh token of the family')
  await assertInactive(t, second.access_token, app, 'an access token of the family')
  await assertInactive(t, first.access_token, app, 'the first access token of the family')
})

t.test("a client cannot see another client's tokens", async (t) => {
  const { access_token, refresh_token } = await login()
  const cc = await clientToken()
  for (const [name, tok] of [['access', access_token], ['refresh', refresh_token], ['client_credentials', cc.access_token]] as const) {
    await assertActive(t, tok, app, `${name}: active to its client`)
    await assertInactive(t, tok, other, `${name}: inactive to another client`)
  }
})

t.test('a resource server sees the tokens meant for it, and only those', async (t) => {
  const forApi = await clientToken(app, { resource: API })
  const forBoth = await clientToken(app, { resource: [BILLING, API] })
  const forBilling = await clientToken(app, { resource: BILLING })
  const pw = await login(app, { resource: API })

  const body = await assertActive(t, forApi.access_token, rs, 'aud is its resource')
  t.match(body, { client_id: app.id, sub: app.id, aud: API })
  t.equal(body.scope, 'read write', 'exactly the scope granted')
  await assertActive(t, forBoth.access_token, rs, 'aud includes its resource')
  const user = await assertActive(t, pw.access_token, rs, 'a password token for its resource')
  t.match(user, { username: 'Dora', sub: userId })
  await assertInactive(t, forBilling.access_token, rs, 'aud is another resource')
  await assertInactive(t, pw.refresh_token, rs, "never another client's refresh token, whatever its audience")

  const otherRs = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'], resource_identifiers: [BILLING] })
  await assertInactive(t, forApi.access_token, otherRs, 'a resource server for another resource')
  await assertActive(t, forBilling.access_token, otherRs, 'which sees its own')

  // Marking a client as a resource server is an admin change, seen at once.
  t.equal((await srv.admin('PATCH', `/admin/clients/${other.id}`, { resource_identifiers: [API] })).status, 200)
  await assertActive(t, forApi.access_token, other, 'after PATCH resource_identifiers')
  t.equal((await srv.admin('PATCH', `/admin/clients/${other.id}`, { resource_identifiers: [] })).status, 200)
  await assertInactive(t, forApi.access_token, other, 'and no longer once removed')
})

// Last: an emergency rotation invalidates every token signed so far, the admin's included.
t.test('a token of a removed key is inactive', async (t) => {
  const before = await login()
  const cc = await clientToken()
  const rotated = await srv.admin('POST', '/admin/keys/rotate?immediate=true')
  t.equal(rotated.status, 200)
  await assertInactive(t, before.access_token, app, 'password token signed by the removed key')
  await assertInactive(t, cc.access_token, app, 'client_credentials token signed by the removed key')
  await assertInactive(t, cc.access_token, rs, 'to a resource server too')
  await assertActive(t, before.refresh_token, app, 'refresh tokens are not signed, so they live on')
  const after = await token(app, { grant_type: 'refresh_token', refresh_token: before.refresh_token })
  t.equal(decodeJwt(after.access_token).header.kid, rotated.body.kid, 'the new key signs')
  await assertActive(t, after.access_token, app, 'a token of the new key')
})
