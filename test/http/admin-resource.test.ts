// The admin API as a resource server (RFC 9068 §4): it accepts only tokens whose aud is its own
// resource identifier, issued by client_credentials to a confidential client. An app's `admin`
// scope, for its own API, never opens it; the README's `-d scope=admin` and the Prometheus client
// of its Metrics section keep working as they read.
import t, { type Test } from 'tap'
import { ADMIN_ID, ADMIN_SECRET, assertOAuthError, decodeJwt, startTestServer, type HttpResult } from '../helpers/server.js'

const srv = await startTestServer(t)
const ADMIN_RESOURCE = `${srv.issuer}/admin`
const API = 'https://api.example.com'
await srv.createUser('alice', 'alice password 1')

const token = async (auth: [string, string] | undefined, form: Record<string, string | string[]>): Promise<HttpResult> =>
  srv.post('/token', form, auth)

async function accessToken(auth: [string, string], form: Record<string, string | string[]>): Promise<string> {
  const r = await token(auth, form)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token
}

const login = (scope: string, extra: Record<string, string | string[]> = {}) => ({
  grant_type: 'password',
  username: 'alice',
  password: 'alice password 1',
  scope,
  ...extra,
})

/** Every way a token could be used on the admin API, the dangerous ones included: each refused 401 invalid_token. */
async function refusedEverywhere(t: Test, bearer: string): Promise<void> {
  const keysBefore = (await srv.admin('GET', '/admin/keys')).body
  for (const [method, path] of [
    ['GET', '/admin/clients'],
    ['GET', '/admin/users'],
    ['POST', '/admin/keys/rotate?immediate=true'],
    ['GET', '/metrics'],
  ] as const) {
    const r = await srv.admin(method, path, undefined, bearer)
    assertOAuthError(t, r, 401, 'invalid_token')
    t.equal(r.headers.get('www-authenticate'), 'Bearer realm="tessera", error="invalid_token"', `${method} ${path}: RFC 6750 §3 challenge`)
  }
  t.same((await srv.admin('GET', '/admin/keys')).body, keysBefore, 'no key was rotated')
}

t.test("an app's own admin scope, for its own API, never opens the admin API", async (t) => {
  const app = await srv.createClient({ scopes: ['read', 'admin'], audiences: [API] })
  const user = await token(app.auth, login('admin'))
  t.equal(user.status, 200)
  t.equal(decodeJwt(user.body.access_token).payload.aud, API, "a user's token is for the app's API")
  await refusedEverywhere(t, user.body.access_token)
  const refreshed = await token(app.auth, { grant_type: 'refresh_token', refresh_token: user.body.refresh_token })
  t.equal(refreshed.status, 200)
  await refusedEverywhere(t, refreshed.body.access_token)
  const own = await accessToken(app.auth, { grant_type: 'client_credentials', scope: 'admin' })
  t.equal(decodeJwt(own).payload.aud, API, "the app's own token is for its API too")
  await refusedEverywhere(t, own)
})

t.test('an app with no audience of its own and an admin scope among others: its tokens are not for the admin API either', async (t) => {
  const app = await srv.createClient({ scopes: ['read', 'admin'] })
  const user = await accessToken(app.auth, login('admin'))
  t.equal(decodeJwt(user).payload.aud, srv.issuer)
  await refusedEverywhere(t, user)
  const own = await accessToken(app.auth, { grant_type: 'client_credentials', scope: 'admin' })
  t.equal(decodeJwt(own).payload.aud, srv.issuer)
  await refusedEverywhere(t, own)
  assertOAuthError(t, await token(app.auth, { grant_type: 'client_credentials', scope: 'admin', resource: ADMIN_RESOURCE }), 400, 'invalid_target')
})

t.test('a user grant never gets the admin resource, even from a client that names it', async (t) => {
  const app = await srv.createClient({ scopes: ['admin', 'metrics'], audiences: [ADMIN_RESOURCE, API] })
  assertOAuthError(t, await token(app.auth, login('admin', { resource: ADMIN_RESOURCE })), 400, 'invalid_target')
  const user = await accessToken(app.auth, login('admin'))
  t.equal(decodeJwt(user).payload.aud, API, 'the default skips the admin resource')
  await refusedEverywhere(t, user)
  const onlyAdmin = await srv.createClient({ scopes: ['admin'] })
  const plain = await accessToken(onlyAdmin.auth, login('admin'))
  t.equal(decodeJwt(plain).payload.aud, srv.issuer, "a user's token from an admin API client is the issuer's")
  await refusedEverywhere(t, plain)
  const pub = await srv.admin('POST', '/admin/clients', {
    name: 'public',
    token_endpoint_auth_method: 'none',
    grant_types: ['password'],
    scopes: ['admin'],
    audiences: [ADMIN_RESOURCE],
  })
  t.equal(pub.status, 201)
  assertOAuthError(t, await token(undefined, { ...login('admin', { resource: ADMIN_RESOURCE }), client_id: pub.body.client_id }), 400, 'invalid_target')
  const publicToken = await token(undefined, { ...login('admin'), client_id: pub.body.client_id })
  t.equal(decodeJwt(publicToken.body.access_token).payload.aud, srv.issuer)
  await refusedEverywhere(t, publicToken.body.access_token)
})

t.test('the admin resource is a resource of its own: never one audience among others', async (t) => {
  const both = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['admin', 'read'], audiences: [API, ADMIN_RESOURCE] })
  assertOAuthError(t, await token(both.auth, { grant_type: 'client_credentials', scope: 'admin', resource: [ADMIN_RESOURCE, API] }), 400, 'invalid_target')
  const admin = await accessToken(both.auth, { grant_type: 'client_credentials', scope: 'admin' })
  t.equal(decodeJwt(admin).payload.aud, ADMIN_RESOURCE, 'scope=admin asks for the admin resource')
  t.equal((await srv.admin('GET', '/admin/clients', undefined, admin)).status, 200)
  const explicit = await accessToken(both.auth, { grant_type: 'client_credentials', scope: 'admin', resource: ADMIN_RESOURCE })
  t.equal(decodeJwt(explicit).payload.aud, ADMIN_RESOURCE)
  t.equal((await srv.admin('GET', '/admin/clients', undefined, explicit)).status, 200)
  const api = await accessToken(both.auth, { grant_type: 'client_credentials', scope: 'read' })
  t.equal(decodeJwt(api).payload.aud, API, 'its other scope goes to its first audience')
  await refusedEverywhere(t, api)
  const mixed = await accessToken(both.auth, { grant_type: 'client_credentials', scope: 'admin', resource: API })
  t.equal(decodeJwt(mixed).payload.aud, API, 'scope admin for its own API, asked for by name')
  await refusedEverywhere(t, mixed)
})

t.test("the README walk-through: the bootstrap client's scope=admin, and the Prometheus client's scope=metrics", async (t) => {
  const r = await token([ADMIN_ID, ADMIN_SECRET], { grant_type: 'client_credentials', scope: 'admin' })
  t.equal(r.status, 200)
  t.equal(decodeJwt(r.body.access_token).payload.aud, ADMIN_RESOURCE)
  t.equal((await srv.admin('GET', '/admin/clients', undefined, r.body.access_token)).status, 200)
  const created = await srv.admin('POST', '/admin/clients', { name: 'prometheus', grant_types: ['client_credentials'], scopes: ['metrics'] })
  t.equal(created.status, 201)
  const metrics = await accessToken([created.body.client_id, created.body.client_secret], { grant_type: 'client_credentials', scope: 'metrics' })
  t.equal(decodeJwt(metrics).payload.aud, ADMIN_RESOURCE)
  const scraped = await srv.admin('GET', '/metrics', undefined, metrics)
  t.equal(scraped.status, 200)
  t.match(scraped.text, /^# HELP tessera_tokens_issued_total /m)
  assertOAuthError(t, await srv.admin('GET', '/admin/clients', undefined, metrics), 403, 'insufficient_scope')
})

t.test("a token for the admin resource that belongs to a user's grant is refused", async (t) => {
  // What a flaw in issuing would make: signed by this server, live, aud the admin resource, but a
  // user's (it has a grant). The admin API checks the grant itself rather than trust issuing.
  const app = await srv.createClient({ scopes: ['admin'] })
  const user = decodeJwt(await accessToken(app.auth, login('admin'))).payload
  const { token: forged } = srv.tessera.accessTokens.issue({
    sub: user.sub,
    clientId: app.id,
    scopes: ['admin'],
    audiences: [ADMIN_RESOURCE],
    ttl: 60,
    grantId: user.sid,
  })
  t.match((await srv.post('/introspect', { token: forged }, app.auth)).body, { active: true, aud: ADMIN_RESOURCE }, 'a live token of ours')
  await refusedEverywhere(t, forged)
})
