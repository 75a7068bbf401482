// Public clients (token_endpoint_auth_method "none", RFC 6749 §2.1): apps whose secret would ship
// inside them get none. They send their client_id alone, may use password and refresh_token only,
// and a confidential client can never pass for one.
import t from 'tap'
import * as oauth from 'oauth4webapi'
import { assertOAuthError, startTestServer } from '../helpers/server.js'
import { oauthClient } from '../helpers/jwt-clients.js'

const srv = await startTestServer(t, { LOGIN_FREE_FAILURES: '3' })
const created = await srv.admin('POST', '/admin/clients', {
  name: 'phone app',
  token_endpoint_auth_method: 'none',
  grant_types: ['password', 'refresh_token'],
  scopes: ['read'],
})
const appId: string = created.body.client_id
const confidential = await srv.createClient({ grant_types: ['password', 'refresh_token', 'client_credentials'] })
await srv.createUser('finn', 'finn password 1')
const login = { grant_type: 'password', username: 'finn', password: 'finn password 1' }

t.test('a public client is registered without a secret, and never for client_credentials', async (t) => {
  t.equal(created.status, 201)
  t.notOk('client_secret' in created.body, 'no secret is made or shown')
  t.equal(created.body.token_endpoint_auth_method, 'none')
  const cc = await srv.admin('POST', '/admin/clients', { name: 'x', token_endpoint_auth_method: 'none', grant_types: ['client_credentials'], scopes: [] })
  assertOAuthError(t, cc, 400, 'invalid_request')
  assertOAuthError(t, await srv.admin('PATCH', `/admin/clients/${appId}`, { grant_types: ['password', 'client_credentials'] }), 400, 'invalid_request')
  assertOAuthError(t, await srv.admin('POST', `/admin/clients/${appId}/secret`, {}), 400, 'invalid_request')
})

t.test('oauth4webapi: password and refresh_token with the client_id alone; refresh tokens rotate', async (t) => {
  const { as, insecure } = await oauthClient(srv.issuer)
  const client: oauth.Client = { client_id: appId }
  const first = await oauth.processGenericTokenEndpointResponse(
    as,
    client,
    await oauth.genericTokenEndpointRequest(as, client, oauth.None(), 'password', { username: 'finn', password: 'finn password 1' }, insecure),
  )
  t.equal(first.token_type, 'bearer')
  const second = await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, oauth.None(), first.refresh_token!, insecure))
  t.not(second.refresh_token, first.refresh_token)
  const reused = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token!, client_id: appId })
  assertOAuthError(t, reused, 400, 'invalid_grant')
})

t.test('a public client may not use client_credentials, introspect, or send a secret', async (t) => {
  assertOAuthError(t, await srv.post('/token', { grant_type: 'client_credentials', client_id: appId }), 400, 'unauthorized_client')
  const tokens = await srv.post('/token', { ...login, client_id: appId })
  assertOAuthError(t, await srv.post('/introspect', { token: tokens.body.access_token, client_id: appId }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/token', { ...login, client_id: appId, client_secret: 'anything' }), 401, 'invalid_client')
})

t.test('a public client revokes its own refresh token with its id alone (RFC 7009 §5)', async (t) => {
  const tokens = await srv.post('/token', { ...login, client_id: appId })
  t.equal((await srv.post('/revoke', { token: tokens.body.refresh_token, client_id: appId })).status, 200)
  assertOAuthError(t, await srv.post('/token', { grant_type: 'refresh_token', refresh_token: tokens.body.refresh_token, client_id: appId }), 400, 'invalid_grant')
})

t.test('a confidential client sending only its id is refused', async (t) => {
  assertOAuthError(t, await srv.post('/token', { ...login, client_id: confidential.id }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/token', { grant_type: 'client_credentials', client_id: confidential.id }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/revoke', { token: 'x', client_id: confidential.id }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/token', { ...login, client_id: 'no-such-client' }), 401, 'invalid_client')
})

t.test('the per-username throttle applies to a public client in full', async (t) => {
  await srv.createUser('gail', 'gail password 1')
  const wrong = { grant_type: 'password', username: 'gail', password: 'not it', client_id: appId }
  for (let i = 0; i < 3; i++) assertOAuthError(t, await srv.post('/token', wrong), 400, 'invalid_grant')
  assertOAuthError(t, await srv.post('/token', wrong), 429, 'slow_down')
})

t.test('switching methods: a client that stops using a secret loses it; one that starts has none until one is made', async (t) => {
  const c = await srv.createClient({ grant_types: ['password'] })
  const patched = await srv.admin('PATCH', `/admin/clients/${c.id}`, { token_endpoint_auth_method: 'none' })
  t.equal(patched.status, 200)
  assertOAuthError(t, await srv.post('/token', login, c.auth), 401, 'invalid_client')
  t.equal((await srv.post('/token', { ...login, client_id: c.id })).status, 200, 'now public')
  t.equal((await srv.admin('PATCH', `/admin/clients/${c.id}`, { token_endpoint_auth_method: 'client_secret_post' })).status, 200)
  assertOAuthError(t, await srv.post('/token', { ...login, client_id: c.id }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/token', login, c.auth), 401, 'invalid_client')
  const secret = await srv.admin('POST', `/admin/clients/${c.id}/secret`, {})
  t.equal(secret.status, 200)
  t.equal((await srv.post('/token', { ...login, client_id: c.id, client_secret: secret.body.client_secret })).status, 200)
})
