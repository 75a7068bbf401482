// A resource server that verifies our access tokens locally, as RFC 9068 §4 describes, with
// nothing but jose and the published JWK Set; a DPoP-bound one also with its proof (and, beside it,
// oauth4webapi's own resource-server check).
import { createHash } from 'node:crypto'
import t from 'tap'
import { EmbeddedJWK, calculateJwkThumbprint, createRemoteJWKSet, errors, jwtVerify } from 'jose'
import * as oauth from 'oauth4webapi'
import { startTestServer } from '../helpers/server.js'
import { ath, keyPair, oauthClient, proof } from '../helpers/jwt-clients.js'

const API = 'https://api.example'
const BILLING = 'https://billing.example'

const srv = await startTestServer(t)
const app = await srv.createClient({ audiences: [API, BILLING] })
const userId = await srv.createUser('hana', 'hana password')

const jwks = createRemoteJWKSet(new URL(`${srv.url}/jwks`))
const verifyAsApi = (token: string) => jwtVerify(token, jwks, { typ: 'at+jwt', issuer: srv.issuer, audience: API })

const audRejected = { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' }

async function accessToken(form: Record<string, string | string[]>): Promise<string> {
  const r = await srv.post('/token', form, app.auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token
}

t.test('a client_credentials token verifies', async (t) => {
  const token = await accessToken({ grant_type: 'client_credentials', scope: 'read' })
  const { payload, protectedHeader } = await verifyAsApi(token)
  t.equal(protectedHeader.typ, 'at+jwt')
  t.match(payload, { iss: srv.issuer, aud: API, sub: app.id, client_id: app.id })
  t.equal(payload.scope, 'read', 'exactly the scope granted')
})

t.test('a password token verifies', async (t) => {
  const token = await accessToken({ grant_type: 'password', username: 'hana', password: 'hana password' })
  const { payload } = await verifyAsApi(token)
  t.match(payload, { iss: srv.issuer, aud: API, sub: userId, client_id: app.id })
  t.equal(payload.scope, 'read write', 'exactly the scope granted')
})

t.test('a token for several resources verifies at each', async (t) => {
  const token = await accessToken({ grant_type: 'client_credentials', resource: [API, BILLING] })
  t.same((await verifyAsApi(token)).payload.aud, [API, BILLING])
  await t.resolves(jwtVerify(token, jwks, { typ: 'at+jwt', issuer: srv.issuer, audience: BILLING }))
})

t.test('a token for another audience is rejected', async (t) => {
  const token = await accessToken({ grant_type: 'client_credentials', resource: BILLING })
  await t.rejects(verifyAsApi(token), audRejected)
  const bare = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'] })
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, bare.auth)
  await t.rejects(verifyAsApi(r.body.access_token), audRejected, 'a client without audiences: aud is the issuer')
})

t.test('a tampered token is rejected', async (t) => {
  const token = await accessToken({ grant_type: 'client_credentials', scope: 'read' })
  const [h, p, s] = token.split('.')
  const claims = JSON.parse(Buffer.from(p!, 'base64url').toString())
  const widened = Buffer.from(JSON.stringify({ ...claims, scope: 'read write' })).toString('base64url')
  await t.rejects(verifyAsApi(`${h}.${widened}.${s}`), errors.JWSSignatureVerificationFailed)
})

/**
 * What a resource server does with a DPoP-bound token (RFC 9449 §7.1), with nothing but jose: the
 * token verifies as any other; the proof verifies with the key it carries, names this request
 * (htm, htu), is recent, and is bound to this token (ath); and its key is the one the token is
 * bound to (cnf.jkt). A resource server also remembers proof jtis for a while, as §11.1 asks.
 */
async function verifyDpopRequest(req: { method: string; url: string; authorization: string; dpop: string }) {
  const [scheme, token] = req.authorization.split(' ') as [string, string]
  if (scheme !== 'DPoP') throw new Error('a DPoP-bound token comes with the DPoP scheme')
  const { payload: claims } = await verifyAsApi(token)
  const { payload: p, protectedHeader } = await jwtVerify(req.dpop, EmbeddedJWK, {
    typ: 'dpop+jwt',
    algorithms: ['ES256', 'PS256', 'RS256', 'EdDSA'],
    maxTokenAge: 300,
  })
  if (p['htm'] !== req.method || p['htu'] !== req.url) throw new Error('the proof is for another request')
  if (p['ath'] !== createHash('sha256').update(token).digest('base64url')) throw new Error('the proof is for another token (ath)')
  const jkt = await calculateJwkThumbprint(protectedHeader.jwk!)
  if ((claims['cnf'] as { jkt?: string } | undefined)?.jkt !== jkt) throw new Error('the proof is made with another key (cnf.jkt)')
  return claims
}

t.test('a DPoP-bound token verifies with a proof of its key, for this request and this token', async (t) => {
  const key = await keyPair()
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'read' }, app.auth, { dpop: await proof(key, { htu: `${srv.issuer}/token` }) })
  t.equal(r.body.token_type, 'DPoP')
  const token: string = r.body.access_token
  const url = `${API}/orders`
  const request = async (signer = key, overrides: Record<string, unknown> = {}) => ({
    method: 'GET',
    url,
    authorization: `DPoP ${token}`,
    dpop: await proof(signer, { htm: 'GET', htu: url, ath: ath(token), ...overrides }),
  })
  t.match(await verifyDpopRequest(await request()), { cnf: { jkt: await calculateJwkThumbprint(key.jwk) } })
  await t.rejects(verifyDpopRequest(await request(await keyPair())), /another key/, "a thief's own key")
  await t.rejects(verifyDpopRequest(await request(key, { ath: ath(`${token}.`) })), /another token/)
  await t.rejects(verifyDpopRequest(await request(key, { htu: `${API}/admin` })), /another request/)
  await t.rejects(verifyDpopRequest({ ...(await request()), authorization: `Bearer ${token}` }), /DPoP scheme/)

  // oauth4webapi's resource-server check, an independent implementation, agrees.
  const { as, insecure } = await oauthClient(srv.issuer)
  const asApi = (headers: Record<string, string>) =>
    oauth.validateJwtAccessToken(as, new Request(url, { headers }), API, { requireDPoP: true, ...insecure })
  const good = await request()
  t.match(await asApi({ authorization: good.authorization, dpop: good.dpop }), { cnf: { jkt: await calculateJwkThumbprint(key.jwk) } })
  const stolen = await request(await keyPair())
  await t.rejects(asApi({ authorization: stolen.authorization, dpop: stolen.dpop }))
})
