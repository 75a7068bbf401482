// private_key_jwt (RFC 7523 §2.2, with the audience rule of draft-ietf-oauth-rfc7523bis): keys
// registered inline or at a jwks_uri, assertions through oauth4webapi at every endpoint, and every
// refusal with an assertion made by hand.
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { exportJWK, SignJWT } from 'jose'
import * as oauth from 'oauth4webapi'
import { eventually } from '../audit/support.js'
import { assertOAuthError, startTestServer, type TestServer } from '../helpers/server.js'
import { assertion, assertionParams, keyPair, now, oauthClient, unsigned, type KeyPair } from '../helpers/jwt-clients.js'

// Every refusal below is a failed client authentication: room for all of them.
const srv = await startTestServer(t, { CLIENT_AUTH_FAILURES: '1000', CLIENT_AUTH_ADDRESS_FAILURES: '1000' })
const cc = { grant_type: 'client_credentials' }

async function registerKeyClient(s: TestServer, keys: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const r = await s.admin('POST', '/admin/clients', {
    name: 'key client',
    grant_types: ['client_credentials'],
    scopes: ['read'],
    token_endpoint_auth_method: 'private_key_jwt',
    ...keys,
    ...extra,
  })
  if (r.status !== 201) throw new Error(`create client: ${r.status} ${r.text}`)
  return r.body as { client_id: string; client_secret?: string; token_endpoint_auth_signing_alg: string; jwks: unknown }
}

const aliceKey = await keyPair('ES256')
const bobKey = await keyPair('ES256')
const alice = await registerKeyClient(srv, { jwks: { keys: [aliceKey.jwk] } })
const bob = await registerKeyClient(srv, { jwks: { keys: [bobKey.jwk] } })

const withAssertion = (jwt: string, path = '/token', form: Record<string, string> = cc) => srv.post(path, { ...form, ...assertionParams(jwt) })

t.test('a private_key_jwt client is registered with its public keys, and has no secret', async (t) => {
  t.notOk('client_secret' in alice, 'no secret is made or shown')
  t.equal(alice.token_endpoint_auth_signing_alg, 'ES256', 'the algorithm defaults to ES256, and is pinned')
  t.same(alice.jwks, { keys: [aliceKey.jwk] })
  const shown = await srv.admin('GET', `/admin/clients/${alice.client_id}`)
  t.match(shown.body, { token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [aliceKey.jwk] }, jwks_uri: null })
  assertOAuthError(t, await srv.admin('POST', `/admin/clients/${alice.client_id}/secret`, {}), 400, 'invalid_request')
})

t.test('registration refuses keys that cannot authenticate the client as it says', async (t) => {
  const privateJwk = await exportJWK(aliceKey.privateKey)
  const rsa = await keyPair('RS256')
  const refused = {
    'a private key': { jwks: { keys: [privateJwk] } },
    'two keys without kids': { jwks: { keys: [aliceKey.jwk, bobKey.jwk] } },
    'two keys with one kid': { jwks: { keys: [{ ...aliceKey.jwk, kid: 'k' }, { ...bobKey.jwk, kid: 'k' }] } },
    'an RSA key for ES256': { jwks: { keys: [rsa.jwk] } },
    'a symmetric key': { jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } },
    'both jwks and jwks_uri': { jwks: { keys: [aliceKey.jwk] }, jwks_uri: 'https://keys.example/jwks' },
    'neither jwks nor jwks_uri': {},
    'an http jwks_uri': { jwks_uri: 'http://keys.example/jwks' },
    'a jwks_uri with credentials': { jwks_uri: 'https://user:pw@keys.example/jwks' },
    'an HMAC algorithm': { jwks: { keys: [aliceKey.jwk] }, token_endpoint_auth_signing_alg: 'HS256' },
    'no algorithm at all': { jwks: { keys: [aliceKey.jwk] }, token_endpoint_auth_signing_alg: 'none' },
  }
  for (const [what, body] of Object.entries(refused)) {
    const r = await srv.admin('POST', '/admin/clients', { name: 'x', grant_types: ['client_credentials'], scopes: [], token_endpoint_auth_method: 'private_key_jwt', ...body })
    assertOAuthError(t, r, 400, 'invalid_request')
    t.pass(what)
  }
  const secretWithKeys = await srv.admin('POST', '/admin/clients', { name: 'x', grant_types: ['client_credentials'], scopes: [], jwks: { keys: [aliceKey.jwk] } })
  assertOAuthError(t, secretWithKeys, 400, 'invalid_request')
  const rsaClient = await registerKeyClient(srv, { jwks: { keys: [rsa.jwk] }, token_endpoint_auth_signing_alg: 'RS256' })
  t.equal((await withAssertion(await assertion(rsa, rsaClient.client_id, srv.issuer, { alg: 'RS256' }))).status, 200, 'RS256')
  const ed = await keyPair('EdDSA')
  const edClient = await registerKeyClient(srv, { jwks: { keys: [ed.jwk] }, token_endpoint_auth_signing_alg: 'EdDSA' })
  t.equal((await withAssertion(await assertion(ed, edClient.client_id, srv.issuer, { alg: 'EdDSA' }))).status, 200, 'EdDSA')
})

t.test('oauth4webapi: private_key_jwt at the token, introspection and revocation endpoints', async (t) => {
  const { as, insecure } = await oauthClient(srv.issuer)
  const client: oauth.Client = { client_id: alice.client_id }
  const auth = oauth.PrivateKeyJwt(aliceKey.privateKey)
  const tokens = await oauth.processClientCredentialsResponse(
    as,
    client,
    await oauth.clientCredentialsGrantRequest(as, client, auth, { scope: 'read' }, insecure),
  )
  t.equal(tokens.token_type, 'bearer')
  const seen = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, tokens.access_token, insecure))
  t.equal(seen.active, true)
  t.equal(seen.client_id, alice.client_id)
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, auth, tokens.access_token, insecure))
  const after = await oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, auth, tokens.access_token, insecure))
  t.equal(after.active, false, 'revoked')
})

t.test('every refusal is 401 invalid_client', async (t) => {
  const refused = async (what: string, jwt: string | Promise<string>, form: Record<string, string> = {}) => {
    const r = await srv.post('/token', { ...cc, ...assertionParams(await jwt), ...form })
    assertOAuthError(t, r, 401, 'invalid_client')
    t.pass(what)
  }
  const id = alice.client_id
  await refused('aud as an array', assertion(aliceKey, id, srv.issuer, { aud: [srv.issuer] }))
  await refused('aud as the token endpoint', assertion(aliceKey, id, srv.issuer, { aud: `${srv.issuer}/token` }))
  await refused('aud of another server', assertion(aliceKey, id, srv.issuer, { aud: 'https://elsewhere.example' }))
  await refused("signed by another client's key", assertion(bobKey, id, srv.issuer))
  await refused('alg none', unsigned({ alg: 'none' }, { iss: id, sub: id, aud: srv.issuer, exp: now() + 60, jti: 'none-1' }))
  const hs = new SignJWT({ iss: id, sub: id, aud: srv.issuer, exp: now() + 60, jti: 'hs-1' }).setProtectedHeader({ alg: 'HS256' })
  await refused('HS256', hs.sign(new TextEncoder().encode('a shared secret of thirty-two bytes!')))
  await refused('a key in the JWT header instead of the registered one', (async () => {
    const mallory = await keyPair()
    return new SignJWT({ iss: id, sub: id, aud: srv.issuer, exp: now() + 60, jti: 'jwk-1' }).setProtectedHeader({ alg: 'ES256', jwk: mallory.jwk }).sign(mallory.privateKey)
  })())
  await refused('no exp', assertion(aliceKey, id, srv.issuer, { claims: { exp: undefined } }))
  await refused('exp more than 5 minutes ahead', assertion(aliceKey, id, srv.issuer, { exp: now() + 600 }))
  await refused('expired', assertion(aliceKey, id, srv.issuer, { exp: now() - 60 }))
  await refused('no jti', assertion(aliceKey, id, srv.issuer, { claims: { jti: undefined } }))
  await refused('iss is not sub', assertion(aliceKey, id, srv.issuer, { iss: bob.client_id }))
  await refused('sub of another client, signed by this one', assertion(aliceKey, bob.client_id, srv.issuer))
  await refused('client_id is another client', assertion(aliceKey, id, srv.issuer), { client_id: bob.client_id })
  await refused('a kid the client does not have', assertion(aliceKey, id, srv.issuer, { kid: 'nope' }))
  await refused('another assertion type', assertion(aliceKey, id, srv.issuer), { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' })
  await refused('an unknown client', assertion(aliceKey, 'no-such-client', srv.issuer))
  // A secret client cannot be authenticated by an assertion, even one signed with keys it never had.
  const secretClient = await srv.createClient({ grant_types: ['client_credentials'] })
  await refused('a client that authenticates with a secret', assertion(aliceKey, secretClient.id, srv.issuer))
  // And the same request with client_id equal to the assertion's is fine.
  t.equal((await srv.post('/token', { ...cc, client_id: id, ...assertionParams(await assertion(aliceKey, id, srv.issuer)) })).status, 200)
  const both = await srv.post('/token', { ...cc, ...assertionParams(await assertion(aliceKey, id, srv.issuer)) }, [secretClient.id, secretClient.secret])
  assertOAuthError(t, both, 400, 'invalid_request')
})

t.test('an assertion is accepted once: a replay is refused, at any endpoint', async (t) => {
  const jwt = await assertion(aliceKey, alice.client_id, srv.issuer)
  t.equal((await withAssertion(jwt)).status, 200)
  assertOAuthError(t, await withAssertion(jwt), 401, 'invalid_client')
  assertOAuthError(t, await withAssertion(jwt, '/introspect', { token: 'x' }), 401, 'invalid_client')
  assertOAuthError(t, await withAssertion(jwt, '/revoke', { token: 'x' }), 401, 'invalid_client')
})

t.test('failures are recorded with their method, and throttled like any failed client authentication', async (t) => {
  const strict = await startTestServer(t, { CLIENT_AUTH_FAILURES: '3' })
  const key = await keyPair()
  const c = await registerKeyClient(strict, { jwks: { keys: [key.jwk] } })
  const statuses = []
  for (let i = 0; i < 3; i++) {
    const r = await strict.post('/token', { ...cc, ...assertionParams(await assertion(bobKey, c.client_id, strict.issuer)) })
    statuses.push(r.status)
  }
  t.same(statuses, [401, 401, 429])
  const ok = await strict.post('/token', { ...cc, ...assertionParams(await assertion(key, c.client_id, strict.issuer)) })
  t.equal(ok.status, 200, 'the right key still works')
  const events = await eventually(strict, { type: 'client.authentication_failed', client: c.client_id }, (e) => e.length >= 3)
  t.equal(events.length, 3)
  t.match(events[0].details, { method: 'private_key_jwt', reason: 'invalid_signature' })
})

t.test('the metadata lists private_key_jwt, none, and the algorithms', async (t) => {
  const m = (await srv.get('/.well-known/oauth-authorization-server')).body
  t.same(m.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'])
  t.same(m.token_endpoint_auth_signing_alg_values_supported, ['ES256', 'PS256', 'RS256', 'EdDSA'])
  t.same(m.introspection_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'private_key_jwt'])
  t.same(m.revocation_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'])
  t.notOk(m.token_endpoint_auth_methods_supported.includes('client_secret_jwt'), 'secrets are stored hashed: no client_secret_jwt')
})

/** A local key server: serves whatever `keys` holds, counting requests. */
async function keyServer(t: Test) {
  const state = {
    url: '',
    keys: { keys: [] as unknown[] },
    hits: 0,
    connections: 0,
    respond: undefined as undefined | ((res: ServerResponse) => boolean),
  }
  const server: Server = createServer((_req, res) => {
    state.hits++
    if (state.respond?.(res)) return
    res.setHeader('content-type', 'application/jwk-set+json')
    res.end(JSON.stringify(state.keys))
  })
  server.on('connection', () => state.connections++)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`
  return state
}

t.test('jwks_uri (ALLOW_INSECURE_JWKS_URI, tests only): fetched, cached, fetched again for a new kid at most once per cool-down', async (t) => {
  const insecure = await startTestServer(t, { ALLOW_INSECURE_JWKS_URI: 'true', CLIENT_AUTH_FAILURES: '1000' })
  const keys = await keyServer(t)
  const k1 = await keyPair('ES256', 'k1')
  const k2 = await keyPair('ES256', 'k2')
  keys.keys = { keys: [k1.jwk] }
  const c = await registerKeyClient(insecure, { jwks_uri: keys.url })
  const post = async (key: KeyPair, kid: string) =>
    insecure.post('/token', { ...cc, ...assertionParams(await assertion(key, c.client_id, insecure.issuer, { kid })) })
  t.equal((await post(k1, 'k1')).status, 200)
  t.equal((await post(k1, 'k1')).status, 200)
  t.equal(keys.hits, 1, 'fetched once, then cached')
  keys.keys = { keys: [k1.jwk, k2.jwk] }
  t.equal((await post(k2, 'k2')).status, 200, 'a new kid: fetched again')
  t.equal(keys.hits, 2)
  assertOAuthError(t, await post(k2, 'k3'), 401, 'invalid_client')
  t.equal(keys.hits, 2, 'an unknown kid within the cool-down fetches nothing')

  const redirecting = await keyServer(t)
  redirecting.respond = (res) => {
    res.statusCode = 302
    res.setHeader('location', keys.url)
    res.end()
    return true
  }
  const r = await registerKeyClient(insecure, { jwks_uri: redirecting.url })
  const viaRedirect = await insecure.post('/token', { ...cc, ...assertionParams(await assertion(k1, r.client_id, insecure.issuer, { kid: 'k1' })) })
  assertOAuthError(t, viaRedirect, 401, 'invalid_client')
  t.equal(redirecting.hits, 1, 'the redirect is not followed')

  const huge = await keyServer(t)
  huge.keys = { keys: [k1.jwk, ...Array.from({ length: 2000 }, (_, i) => ({ ...k2.jwk, kid: `pad-${i}` }))] }
  const h = await registerKeyClient(insecure, { jwks_uri: huge.url })
  const tooBig = await insecure.post('/token', { ...cc, ...assertionParams(await assertion(k1, h.client_id, insecure.issuer, { kid: 'k1' })) })
  assertOAuthError(t, tooBig, 401, 'invalid_client')
})

t.test('without ALLOW_INSECURE_JWKS_URI: a jwks_uri on loopback is refused when it is fetched, and never connected to', async (t) => {
  const keys = await keyServer(t)
  const port = new URL(keys.url).port
  for (const host of ['127.0.0.1', 'localhost', '[::ffff:127.0.0.1]']) {
    const c = await registerKeyClient(srv, { jwks_uri: `https://${host}:${port}/jwks` })
    const r = await withAssertion(await assertion(aliceKey, c.client_id, srv.issuer))
    assertOAuthError(t, r, 401, 'invalid_client')
    t.pass(host)
  }
  t.equal(keys.connections, 0, 'no connection reached the key server')
})
