// DPoP (RFC 9449) at the token endpoint, in introspection and at the admin API: the flows through
// oauth4webapi (an independent client, nonce retry included), and every refusal with a proof made
// by hand.
import { connect } from 'node:net'
import t from 'tap'
import { calculateJwkThumbprint, SignJWT } from 'jose'
import * as oauth from 'oauth4webapi'
import { ADMIN_ID, ADMIN_SECRET, TestClock, assertOAuthError, decodeJwt, startTestServer, type HttpResult } from '../helpers/server.js'
import { ath, keyPair, now, oauthClient, proof, unsigned, withNonceRetry, type KeyPair } from '../helpers/jwt-clients.js'

const srv = await startTestServer(t)
const svc = await srv.createClient({ grant_types: ['client_credentials', 'password', 'refresh_token'] })
const app = await srv.admin('POST', '/admin/clients', {
  name: 'mobile app',
  token_endpoint_auth_method: 'none',
  grant_types: ['password', 'refresh_token'],
  scopes: ['read', 'write'],
})
const appId: string = app.body.client_id
await srv.createUser('dora', 'dora password 1')
const htu = `${srv.issuer}/token`
const key = await keyPair()
const jkt = await calculateJwkThumbprint(key.jwk)
const cc = { grant_type: 'client_credentials' }

const withProof = (p: string, form: Record<string, string> = cc, auth: [string, string] | undefined = svc.auth) =>
  srv.post('/token', form, auth, { dpop: p })

/** A proof for the token endpoint with `key`, the nonce filled in when `nonce` is true. */
async function tokenProof(k: KeyPair = key, extra: Partial<Parameters<typeof proof>[1]> = {}): Promise<string> {
  return proof(k, { htu, ...extra })
}

async function nonceNow(): Promise<string> {
  const r = await withProof(await tokenProof())
  return r.headers.get('dpop-nonce')!
}

t.test('oauth4webapi: a confidential client gets a DPoP-bound client_credentials token', async (t) => {
  const { as, insecure } = await oauthClient(srv.issuer)
  const client: oauth.Client = { client_id: svc.id }
  const handle = oauth.DPoP(client, key)
  const { result: response, retried } = await withNonceRetry(async () => {
    const res = await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic(svc.secret), { scope: 'read' }, { DPoP: handle, ...insecure })
    return { headers: res.headers, body: await oauth.processClientCredentialsResponse(as, client, res) }
  })
  t.notOk(retried, 'a confidential client needs no nonce by default (DPOP_NONCE=public)')
  t.equal(response.body.token_type, 'dpop')
  t.ok(response.headers.get('dpop-nonce'), 'a nonce for next time comes with the answer')
  const { header, payload } = decodeJwt(response.body.access_token)
  t.equal(header.typ, 'at+jwt')
  t.same(payload.cnf, { jkt }, 'cnf.jkt is the RFC 7638 thumbprint of the proof key')
})

t.test('oauth4webapi: a public client logs in with DPoP (nonce retry), refreshes with the same key, and stays bound', async (t) => {
  const { as, insecure } = await oauthClient(srv.issuer)
  const client: oauth.Client = { client_id: appId }
  const handle = oauth.DPoP(client, key)
  const login = await withNonceRetry(async () => {
    const res = await oauth.genericTokenEndpointRequest(as, client, oauth.None(), 'password', { username: 'dora', password: 'dora password 1' }, { DPoP: handle, ...insecure })
    return oauth.processGenericTokenEndpointResponse(as, client, res)
  })
  t.ok(login.retried, 'a public client must use a server nonce: the first try is answered use_dpop_nonce')
  t.equal(login.result.token_type, 'dpop')
  t.same(decodeJwt(login.result.access_token).payload.cnf, { jkt })
  const refreshed = await withNonceRetry(async () => {
    const res = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), login.result.refresh_token!, { DPoP: handle, ...insecure })
    return oauth.processRefreshTokenResponse(as, client, res)
  })
  t.notOk(refreshed.retried, 'the nonce of the last answer is still good')
  t.equal(refreshed.result.token_type, 'dpop')
  t.same(decodeJwt(refreshed.result.access_token).payload.cnf, { jkt }, 'the refreshed access token is bound to the same key')
  t.not(refreshed.result.refresh_token, login.result.refresh_token, 'rotated')
})

t.test('introspection shows token_type DPoP and cnf.jkt for a bound token, Bearer and no cnf otherwise', async (t) => {
  const bound = await withProof(await tokenProof())
  t.equal(bound.status, 200)
  t.equal(bound.body.token_type, 'DPoP')
  const seen = await srv.post('/introspect', { token: bound.body.access_token }, svc.auth)
  t.match(seen.body, { active: true, token_type: 'DPoP', cnf: { jkt } })
  const plain = await srv.post('/token', cc, svc.auth)
  t.equal(plain.body.token_type, 'Bearer')
  t.notOk('dpop-nonce' in Object.fromEntries(plain.headers), 'no nonce for a request without a proof')
  const seenPlain = await srv.post('/introspect', { token: plain.body.access_token }, svc.auth)
  t.match(seenPlain.body, { active: true, token_type: 'Bearer' })
  t.notOk('cnf' in seenPlain.body)
})

t.test('every check of RFC 9449 §4.3 refuses a proof that fails it', async (t) => {
  const refused = async (what: string, p: string | Promise<string>) => {
    const r = await withProof(await p)
    assertOAuthError(t, r, 400, 'invalid_dpop_proof')
    t.pass(what)
  }
  const other = await keyPair()
  await refused('wrong htm', tokenProof(key, { htm: 'GET' }))
  await refused('wrong htu: another path', tokenProof(key, { htu: `${srv.issuer}/introspect` }))
  await refused('wrong htu: a trailing slash', tokenProof(key, { htu: `${htu}/` }))
  await refused('wrong htu: another host', tokenProof(key, { htu: htu.replace('localhost', '127.0.0.1') }))
  await refused('an old iat', tokenProof(key, { iat: now() - 301 }))
  await refused('an iat in the future', tokenProof(key, { iat: now() + 301 }))
  await refused('no jti', tokenProof(key, { claims: { jti: undefined } }))
  await refused('no iat', tokenProof(key, { claims: { iat: undefined } }))
  await refused('typ is not dpop+jwt', tokenProof(key, { header: { typ: 'JWT' } }))
  await refused('no jwk', tokenProof(key, { header: { jwk: undefined } }))
  await refused('alg none', Promise.resolve(unsigned({ typ: 'dpop+jwt', alg: 'none', jwk: key.jwk }, { jti: 'n1', htm: 'POST', htu, iat: now() })))
  const hs = new SignJWT({ jti: 'h1', htm: 'POST', htu, iat: now() }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256', jwk: key.jwk } as never)
  await refused('an HS256 proof', hs.sign(new TextEncoder().encode('a shared secret of thirty-two bytes!')))
  const { exportJWK } = await import('jose')
  const privateJwk = await exportJWK(key.privateKey)
  await refused('a private jwk', tokenProof(key, { header: { jwk: privateJwk } }))
  await refused('signed by another key than its jwk', tokenProof({ ...other, jwk: key.jwk }))
  await refused('not a JWT at all', Promise.resolve('not-a-jwt'))
  await refused('two proofs joined in one header', Promise.all([tokenProof(), tokenProof()]).then((ps) => ps.join(', ')))
  // A query string is no part of htu: this one is accepted.
  t.equal((await withProof(await tokenProof(key, { htu: `${htu}?x=1#y` }))).status, 200, 'query and fragment are ignored')
})

t.test('a proof is accepted once: a replayed jti is refused', async (t) => {
  const p = await tokenProof()
  t.equal((await withProof(p)).status, 200)
  assertOAuthError(t, await withProof(p), 400, 'invalid_dpop_proof')
  // The same jti with another key is another proof.
  const same = await tokenProof(await keyPair(), { jti: decodeJwt(p).payload.jti })
  t.equal((await withProof(same)).status, 200, 'jtis are per key')
})

t.test('two DPoP headers are refused (counted in the raw headers, not joined)', async (t) => {
  const [a, b] = await Promise.all([tokenProof(), tokenProof()])
  // Written on a socket by hand: fetch would join the two into one header.
  const url = new URL(srv.url)
  const body = 'grant_type=client_credentials'
  const text = await new Promise<string>((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.end(
        [
          'POST /token HTTP/1.1',
          `Host: ${url.host}`,
          'Content-Type: application/x-www-form-urlencoded',
          `Authorization: Basic ${Buffer.from(`${svc.id}:${svc.secret}`).toString('base64')}`,
          `DPoP: ${a}`,
          `DPoP: ${b}`,
          `Content-Length: ${body.length}`,
          'Connection: close',
          '',
          body,
        ].join('\r\n'),
      )
    })
    let received = ''
    socket.on('data', (d) => (received += d))
    socket.on('end', () => resolve(received))
    socket.on('error', reject)
  })
  const [head, json] = text.split('\r\n\r\n') as [string, string]
  const r: HttpResult = {
    status: Number(head.split(' ')[1]),
    headers: new Headers(head.split('\r\n').slice(1).map((l) => l.split(/: (.*)/s).slice(0, 2) as [string, string])),
    body: JSON.parse(json),
    text: json,
  }
  assertOAuthError(t, r, 400, 'invalid_dpop_proof')
  t.match(r.body.error_description, /exactly one/)
})

t.test('a public client: no nonce or a wrong one is use_dpop_nonce with DPoP-Nonce; the right one works', async (t) => {
  const login = { grant_type: 'password', username: 'dora', password: 'dora password 1', client_id: appId }
  const missing = await srv.post('/token', login, undefined, { dpop: await tokenProof() })
  assertOAuthError(t, missing, 400, 'use_dpop_nonce')
  const nonce = missing.headers.get('dpop-nonce')
  t.ok(nonce, 'with the nonce to use')
  const wrong = await srv.post('/token', login, undefined, { dpop: await tokenProof(key, { nonce: 'made-up' }) })
  assertOAuthError(t, wrong, 400, 'use_dpop_nonce')
  t.equal(wrong.headers.get('dpop-nonce'), nonce)
  const right = await srv.post('/token', login, undefined, { dpop: await tokenProof(key, { nonce: nonce! }) })
  t.equal(right.status, 200)
  t.equal(right.body.token_type, 'DPoP')
  t.equal(right.headers.get('dpop-nonce'), nonce, 'and a current nonce again')
  // Without DPoP at all, a public client gets bearer tokens (unless it is registered DPoP-bound).
  const bearer = await srv.post('/token', login)
  t.equal(bearer.body.token_type, 'Bearer')
})

t.test('a client registered dpop_bound_access_tokens is refused without a proof', async (t) => {
  const strict = await srv.createClient({ grant_types: ['client_credentials'], dpop_bound_access_tokens: true })
  assertOAuthError(t, await srv.post('/token', cc, strict.auth), 400, 'invalid_dpop_proof')
  const r = await srv.post('/token', cc, strict.auth, { dpop: await tokenProof() })
  t.equal(r.status, 200)
  t.equal(r.body.token_type, 'DPoP')
})

t.test("a bound refresh token is refused without a proof or with another key, and stays usable by its owner", async (t) => {
  for (const [who, auth, extra] of [
    ['a public client', undefined, { client_id: appId }],
    ['a confidential client', svc.auth, {}],
  ] as const) {
    const nonce = await nonceNow()
    const login = await srv.post('/token', { grant_type: 'password', username: 'dora', password: 'dora password 1', ...extra }, auth, {
      dpop: await tokenProof(key, { nonce }),
    })
    t.equal(login.status, 200, who)
    const refresh = { grant_type: 'refresh_token', refresh_token: login.body.refresh_token, ...extra }
    assertOAuthError(t, await srv.post('/token', refresh, auth), 400, 'invalid_grant')
    const other = await keyPair()
    assertOAuthError(t, await srv.post('/token', refresh, auth, { dpop: await tokenProof(other, { nonce }) }), 400, 'invalid_grant')
    const r = await srv.post('/token', refresh, auth, { dpop: await tokenProof(key, { nonce }) })
    t.equal(r.status, 200, `${who}: the refresh token was not spent by the refusals`)
    t.equal(r.body.token_type, 'DPoP')
    t.same(decodeJwt(r.body.access_token).payload.cnf, { jkt })
  }
  // The refresh token of a confidential client's grant shows its binding to the client.
  const login = await srv.post('/token', { grant_type: 'password', username: 'dora', password: 'dora password 1' }, svc.auth, { dpop: await tokenProof() })
  t.match((await srv.post('/introspect', { token: login.body.refresh_token }, svc.auth)).body, { active: true, cnf: { jkt } })
})

t.test('the admin API: a bound token needs Authorization: DPoP and a proof for this request (ath); as Bearer it is refused', async (t) => {
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET], { dpop: await tokenProof() })
  t.equal(r.body.token_type, 'DPoP')
  const token: string = r.body.access_token
  const url = `${srv.adminUrl}/admin/clients`
  const call = (authorization: string, dpop?: string) =>
    fetch(url, { headers: { authorization, ...(dpop !== undefined && { dpop }) } }).then(async (res) => ({
      status: res.status,
      headers: res.headers,
      body: (await res.json()) as { error?: string },
    }))
  const asBearer = await call(`Bearer ${token}`)
  t.equal(asBearer.status, 401)
  t.equal(asBearer.body.error, 'invalid_token', 'a bound token sent as Bearer')
  t.match(asBearer.headers.get('www-authenticate'), /^DPoP /)
  const good = await proof(key, { htm: 'GET', htu: url, ath: ath(token) })
  t.equal((await call(`DPoP ${token}`, good)).status, 200, 'with a proof of the key')
  t.equal((await call(`DPoP ${token}`, good)).status, 401, 'the same proof twice')
  const failures = {
    'no proof': undefined,
    'no ath': await proof(key, { htm: 'GET', htu: url }),
    'the ath of another token': await proof(key, { htm: 'GET', htu: url, ath: ath(`${token}x`) }),
    'another key': await proof(await keyPair(), { htm: 'GET', htu: url, ath: ath(token) }),
    'another URL': await proof(key, { htm: 'GET', htu: `${srv.adminUrl}/admin/users`, ath: ath(token) }),
    'another method': await proof(key, { htm: 'POST', htu: url, ath: ath(token) }),
  }
  for (const [what, p] of Object.entries(failures)) {
    const res = await call(`DPoP ${token}`, p)
    t.equal(res.status, 401, what)
    t.equal(res.body.error, 'invalid_dpop_proof', what)
    t.match(res.headers.get('www-authenticate'), /^DPoP .*error="invalid_dpop_proof"/, what)
  }
  const plain = await srv.adminToken()
  const unbound = await call(`DPoP ${plain}`, await proof(key, { htm: 'GET', htu: url, ath: ath(plain) }))
  t.equal(unbound.status, 401, 'an unbound token sent as DPoP')
  t.equal(unbound.body.error, 'invalid_token')
})

t.test('the metadata lists the DPoP algorithms', async (t) => {
  const m = await srv.get('/.well-known/oauth-authorization-server')
  t.same(m.body.dpop_signing_alg_values_supported, ['ES256', 'PS256', 'RS256', 'EdDSA'])
})

t.test('nonces: one step old still works, two steps old is stale; DPOP_NONCE=always and never', async (t) => {
  const clock = new TestClock()
  const always = await startTestServer(t, { DPOP_NONCE: 'always' }, { clock })
  const c = await always.createClient({ grant_types: ['client_credentials'] })
  const u = `${always.issuer}/token`
  const first = await always.post('/token', cc, c.auth, { dpop: await proof(key, { htu: u }) })
  assertOAuthError(t, first, 400, 'use_dpop_nonce')
  const nonce = first.headers.get('dpop-nonce')!
  const iat = () => Math.floor(clock.now().getTime() / 1000)
  clock.advance(60)
  t.equal((await always.post('/token', cc, c.auth, { dpop: await proof(key, { htu: u, nonce, iat: iat() }) })).status, 200, 'a step later')
  clock.advance(60)
  const stale = await always.post('/token', cc, c.auth, { dpop: await proof(key, { htu: u, nonce, iat: iat() }) })
  assertOAuthError(t, stale, 400, 'use_dpop_nonce')
  t.not(stale.headers.get('dpop-nonce'), nonce, 'a fresh nonce replaces it')

  const never = await startTestServer(t, { DPOP_NONCE: 'never' })
  const pub = await never.admin('POST', '/admin/clients', { name: 'p', token_endpoint_auth_method: 'none', grant_types: ['password'], scopes: ['read'] })
  await never.createUser('eve', 'eve password 1')
  const r = await never.post('/token', { grant_type: 'password', username: 'eve', password: 'eve password 1', client_id: pub.body.client_id }, undefined, {
    dpop: await proof(key, { htu: `${never.issuer}/token` }),
  })
  t.equal(r.status, 200, 'no nonce needed')
  t.equal(r.headers.get('dpop-nonce'), null, 'and none handed out')
})
