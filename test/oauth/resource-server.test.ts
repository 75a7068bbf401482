// A resource server that verifies our access tokens locally, as RFC 9068 §4 describes, with
// nothing but jose and the published JWK Set.
import t from 'tap'
import { createRemoteJWKSet, errors, jwtVerify } from 'jose'
import { startTestServer } from '../helpers/server.js'

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
  t.match(payload, { iss: srv.issuer, aud: API, sub: app.id, client_id: app.id, scope: 'read' })
})

t.test('a password token verifies', async (t) => {
  const token = await accessToken({ grant_type: 'password', username: 'hana', password: 'hana password' })
  const { payload } = await verifyAsApi(token)
  t.match(payload, { iss: srv.issuer, aud: API, sub: userId, client_id: app.id, scope: 'read write' })
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
