// RFC 7009 token revocation over real HTTP, the admin API's bulk revocation, and the deny-list's
// housekeeping.
import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import t, { type Test } from 'tap'
import { TestClock, decodeJwt, startTestServer, type HttpResult, assertOAuthError } from '../helpers/server.js'
import { tokenRepository } from '../../src/tokens/repository.js'

const API = 'https://api.example'

const clock = new TestClock()
const srv = await startTestServer(t, {}, { clock })
const app = await srv.createClient({ audiences: [API] })
const other = await srv.createClient({ audiences: [API] })
const userId = await srv.createUser('erin', 'erin password')
await srv.createUser('gus', 'gus password')

type Client = { id: string; secret: string; auth: [string, string] }
type Tokens = { access_token: string; refresh_token: string }

async function token(client: Client, form: Record<string, string>): Promise<Tokens> {
  const r = await srv.post('/token', form, client.auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body
}
const login = (client: Client = app, username = 'erin') =>
  token(client, { grant_type: 'password', username, password: `${username} password` })
const clientToken = (client: Client = app) => token(client, { grant_type: 'client_credentials' })
const refresh = (rt: string, client: Client = app) =>
  srv.post('/token', { grant_type: 'refresh_token', refresh_token: rt }, client.auth)
const revoke = (tok: string, client: Client = app, extra: Record<string, string> = {}) =>
  srv.post('/revoke', { token: tok, ...extra }, client.auth)

async function isActive(tok: string, client: Client = app): Promise<boolean> {
  const r = await srv.post('/introspect', { token: tok }, client.auth)
  if (r.status !== 200) throw new Error(`introspect: ${r.status} ${r.text}`)
  return r.body.active
}

function assertRevokeOk(t: Test, r: HttpResult, what: string) {
  t.equal(r.status, 200, `${what}: 200`)
  t.equal(r.headers.get('cache-control'), 'no-store', `${what}: no-store`)
}


const denyListRow = (jti: string) =>
  srv.tessera.db.selectFrom('revoked_access_tokens').selectAll().where('jti', '=', jti).executeTakeFirst()

t.test('the metadata advertises both endpoints and their auth methods (RFC 8414 §2)', async (t) => {
  const r = await srv.get('/.well-known/oauth-authorization-server')
  t.equal(r.status, 200)
  t.equal(r.body.introspection_endpoint, `${srv.issuer}/introspect`)
  t.equal(r.body.revocation_endpoint, `${srv.issuer}/revoke`)
  t.same([...r.body.introspection_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'private_key_jwt'])
  // RFC 7009 §5: a public client may revoke its own tokens with its id alone.
  t.same([...r.body.revocation_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'none', 'private_key_jwt'])
  const adminCopy = await srv.admin('GET', '/.well-known/oauth-authorization-server')
  t.same(adminCopy.body, r.body, 'the admin listener serves the same metadata')
})

t.test('the caller must authenticate as a client', async (t) => {
  const { access_token } = await clientToken()
  const none = await srv.post('/revoke', { token: access_token })
  assertOAuthError(t, none, 401, 'invalid_client')
  t.match(none.headers.get('www-authenticate'), /^Basic/)
  assertOAuthError(t, await srv.post('/revoke', { token: access_token }, [app.id, 'wrong secret']), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/revoke', { token: access_token, client_id: app.id, client_secret: 'wrong' }), 401, 'invalid_client')
  assertOAuthError(t, await srv.post('/revoke', { token: access_token, client_id: app.id }), 401, 'invalid_client')
  t.ok(await isActive(access_token), 'none of that revoked anything')
  const post = await srv.post('/revoke', { token: access_token, client_id: app.id, client_secret: app.secret })
  assertRevokeOk(t, post, 'client_secret_post')
  t.notOk(await isActive(access_token), 'revoked with client_secret_post')
})

t.test('the token parameter is required (RFC 7009 §2.1)', async (t) => {
  assertOAuthError(t, await srv.post('/revoke', {}, app.auth), 400, 'invalid_request')
  assertOAuthError(t, await srv.post('/revoke', { token_type_hint: 'access_token' }, app.auth), 400, 'invalid_request')
  assertOAuthError(t, await srv.post('/revoke', 'token=a&token=b', app.auth), 400, 'invalid_request')
})

t.test('unknown, malformed and already revoked tokens answer 200 (RFC 7009 §2.2)', async (t) => {
  for (const tok of ['unknown-refresh-token', 'a.b.c', 'x'.repeat(3000), `${Buffer.from('{"alg":"none"}').toString('base64url')}.e30.`]) {
    assertRevokeOk(t, await revoke(tok), `token ${JSON.stringify(tok.slice(0, 30))}`)
  }
  const { access_token, refresh_token } = await login()
  for (const tok of [access_token, refresh_token]) {
    assertRevokeOk(t, await revoke(tok), 'first revocation')
    assertRevokeOk(t, await revoke(tok), 'already revoked')
  }
  t.notOk(await isActive(access_token))
  t.notOk(await isActive(refresh_token))
})

t.test("a client cannot revoke another client's tokens", async (t) => {
  const { access_token, refresh_token } = await login()
  const cc = await clientToken()
  for (const tok of [access_token, refresh_token, cc.access_token]) {
    assertRevokeOk(t, await revoke(tok, other), "another client's token: 200, telling nothing")
  }
  t.ok(await isActive(access_token), 'the access token is still active')
  t.ok(await isActive(cc.access_token), 'the client_credentials token is still active')
  t.ok(await isActive(refresh_token), 'the refresh token is still active')
  t.equal((await refresh(refresh_token)).status, 200, 'and still refreshes')
  t.equal(await denyListRow(decodeJwt(access_token).payload.jti), undefined, 'nothing went on the deny-list')
})

t.test('revoking a refresh token revokes its whole family (RFC 7009 §2.1)', async (t) => {
  const first = await login()
  const secondRes = await refresh(first.refresh_token)
  const second: Tokens = secondRes.body
  const unrelated = await login()

  assertRevokeOk(t, await revoke(second.refresh_token), 'revoke the latest refresh token')
  t.notOk(await isActive(second.refresh_token), 'it is inactive')
  t.equal((await refresh(second.refresh_token)).body.error, 'invalid_grant', 'and no longer refreshes')
  t.notOk(await isActive(first.access_token), 'the access token issued with the first refresh token is inactive')
  t.notOk(await isActive(second.access_token), 'the access token issued by the refresh is inactive')
  t.ok(await isActive(unrelated.access_token), 'another login of the same user is untouched')
  t.ok(await isActive(unrelated.refresh_token))

  // A spent refresh token still names its family, and takes it along.
  const third = await login()
  const fourth: Tokens = (await refresh(third.refresh_token)).body
  assertRevokeOk(t, await revoke(third.refresh_token, app, { token_type_hint: 'access_token' }), 'a spent one, with a wrong hint')
  t.equal((await refresh(fourth.refresh_token)).body.error, 'invalid_grant', 'its successor no longer refreshes')
  t.notOk(await isActive(fourth.access_token))
})

t.test('revoking an access token deny-lists its jti until it expires, then housekeeping purges it', async (t) => {
  const { access_token, refresh_token } = await login()
  const { jti, exp } = decodeJwt(access_token).payload
  assertRevokeOk(t, await revoke(access_token, app, { token_type_hint: 'refresh_token' }), 'with a wrong hint')
  t.notOk(await isActive(access_token), 'inactive at once')
  const row = await denyListRow(jti)
  t.ok(row, 'the jti is on the deny-list')
  t.equal(row!.expires_at.getTime(), exp * 1000, 'until the token would expire')
  t.ok(await isActive(refresh_token), 'the refresh token of the same grant stays usable (RFC 7009 §2.1 MAY)')

  await tokenRepository.purgeExpired(srv.tessera.db, clock.now())
  t.ok(await denyListRow(jti), 'housekeeping keeps it while the token could still be presented')
  clock.advance(601)
  t.notOk(await isActive(access_token), 'expired now anyway')
  await tokenRepository.purgeExpired(srv.tessera.db, clock.now())
  // Another instance's clock, or this one's stepped forward: the database's clock has not passed.
  t.ok(await denyListRow(jti), "one instance's clock alone does not purge it")
  await srv.tessera.db
    .updateTable('revoked_access_tokens')
    .set({ expires_at: sql<Date>`now() - interval '61 seconds'` })
    .where('jti', '=', jti)
    .execute()
  await tokenRepository.purgeExpired(srv.tessera.db, clock.now())
  t.equal(await denyListRow(jti), undefined, "purged once both the database's clock and the instance's are past it by the margin")
})

t.test('admin: revoke every token of a user', async (t) => {
  const fromApp = await login(app)
  const fromOther = await login(other)
  const gus = await login(app, 'gus')
  const cc = await clientToken()

  const r = await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`)
  t.equal(r.status, 204)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.notOk(await isActive(fromApp.access_token), "the user's access token")
  t.notOk(await isActive(fromApp.refresh_token), "the user's refresh token")
  t.notOk(await isActive(fromOther.access_token, other), "the user's token at another client")
  t.equal((await refresh(fromOther.refresh_token, other)).body.error, 'invalid_grant')
  t.ok(await isActive(gus.access_token), "another user's tokens stay")
  t.ok(await isActive(cc.access_token), 'client_credentials tokens stay')
  const again = await login(app)
  t.ok(await isActive(again.access_token), 'the user may log in again')

  t.equal((await srv.admin('POST', `/admin/users/${randomUUID()}/revoke-tokens`)).status, 404)
  t.equal((await srv.admin('POST', '/admin/users/not-a-uuid/revoke-tokens')).status, 404)
  t.equal((await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`, undefined, null)).status, 401, 'needs an admin token')
  t.equal((await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`, undefined, cc.access_token)).status, 401, 'an application token is not for the admin API')
})

t.test('admin: revoke every token of a client', async (t) => {
  const victim = await srv.createClient({ audiences: [API] })
  const cc = await clientToken(victim)
  const pw = await login(victim)
  const bystander = await clientToken(other)

  const r = await srv.admin('POST', `/admin/clients/${victim.id}/revoke-tokens`)
  t.equal(r.status, 204)
  t.notOk(await isActive(cc.access_token, victim), 'its client_credentials token')
  t.notOk(await isActive(pw.access_token, victim), 'its password token')
  t.notOk(await isActive(pw.refresh_token, victim), 'its refresh token')
  t.equal((await refresh(pw.refresh_token, victim)).body.error, 'invalid_grant')
  t.ok(await isActive(bystander.access_token, other), "another client's tokens stay")

  // Tokens issued after the revocation are good: their jti's time is later.
  clock.advance(1)
  t.ok(await isActive((await clientToken(victim)).access_token, victim), 'a new client_credentials token')
  t.ok(await isActive((await login(victim)).access_token, victim), 'a new login')

  t.equal((await srv.admin('POST', '/admin/clients/no-such-client/revoke-tokens')).status, 404)
  t.equal((await srv.admin('POST', `/admin/clients/${victim.id}/revoke-tokens`, undefined, null)).status, 401, 'needs an admin token')
})
