// RFC 9449 §5: a public client's refresh token is bound to the key of the DPoP proof it was issued
// with. A grant that began without a proof is bound at its first refresh with one; from then on a
// refresh without a proof, or with another key, is refused, and the refresh token is not spent.
import t from 'tap'
import { calculateJwkThumbprint } from 'jose'
import { assertOAuthError, decodeJwt, startTestServer } from '../helpers/server.js'
import { keyPair, proof } from '../helpers/jwt-clients.js'

const srv = await startTestServer(t)
const htu = `${srv.issuer}/token`
await srv.createUser('erin', 'erin password 1')
const login = { grant_type: 'password', username: 'erin', password: 'erin password 1' }

/** The current DPoP nonce, which a public client's proof must carry (DPOP_NONCE=public): asked for without one. */
async function nonce(client_id: string): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: 'unused', client_id }, undefined, { dpop: await proof(await keyPair(), { htu }) })
  if (r.body.error !== 'use_dpop_nonce') throw new Error(`nonce: ${r.status} ${r.text}`)
  return r.headers.get('dpop-nonce')!
}

t.test("a public client's grant begun without a proof is bound at its first refresh with one", async (t) => {
  const created = await srv.admin('POST', '/admin/clients', {
    name: 'spa',
    token_endpoint_auth_method: 'none',
    grant_types: ['password', 'refresh_token'],
    scopes: ['read'],
  })
  const client_id: string = created.body.client_id
  const key = await keyPair()
  const jkt = await calculateJwkThumbprint(key.jwk)

  const started = await srv.post('/token', { ...login, client_id })
  t.equal(started.status, 200)
  t.equal(started.body.token_type, 'Bearer', 'begun without a proof: bearer')
  const refresh = (token: string) => ({ grant_type: 'refresh_token', refresh_token: token, client_id })

  const bound = await srv.post('/token', refresh(started.body.refresh_token), undefined, { dpop: await proof(key, { htu, nonce: await nonce(client_id) }) })
  t.equal(bound.status, 200)
  t.equal(bound.body.token_type, 'DPoP')
  t.same(decodeJwt(bound.body.access_token).payload.cnf, { jkt })

  const next = refresh(bound.body.refresh_token)
  const without = await srv.post('/token', next)
  assertOAuthError(t, without, 400, 'invalid_grant')
  t.equal(without.body.error_description, 'this refresh token is bound to a DPoP key: send a DPoP proof')
  const otherKey = await srv.post('/token', next, undefined, { dpop: await proof(await keyPair(), { htu, nonce: await nonce(client_id) }) })
  assertOAuthError(t, otherKey, 400, 'invalid_grant')
  t.equal(otherKey.body.error_description, 'this refresh token is bound to another DPoP key')

  const again = await srv.post('/token', next, undefined, { dpop: await proof(key, { htu, nonce: await nonce(client_id) }) })
  t.equal(again.status, 200, 'the refusals did not spend it: its key still refreshes')
  t.equal(again.body.token_type, 'DPoP')
  t.same(decodeJwt(again.body.access_token).payload.cnf, { jkt })
})

t.test("a confidential client's grant begun without a proof stays unbound (its authentication binds it)", async (t) => {
  const app = await srv.createClient({ grant_types: ['password', 'refresh_token'], scopes: ['read'] })
  const key = await keyPair()
  const started = await srv.post('/token', login, app.auth)
  t.equal(started.body.token_type, 'Bearer')
  const withProof = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: started.body.refresh_token }, app.auth, { dpop: await proof(key, { htu }) })
  t.equal(withProof.status, 200)
  t.equal(withProof.body.token_type, 'DPoP', 'a bound access token')
  const seen = await srv.post('/introspect', { token: withProof.body.refresh_token }, app.auth)
  t.equal(seen.body.active, true)
  t.equal(seen.body.cnf, undefined, 'the grant itself stays unbound')
  const without = await srv.post('/token', { grant_type: 'refresh_token', refresh_token: withProof.body.refresh_token }, app.auth)
  t.equal(without.status, 200)
  t.equal(without.body.token_type, 'Bearer')
})
