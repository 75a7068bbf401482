// The replay window's last second (issue 15 item 2). A proof is judged in whole seconds and an
// assertion's exp may be fractional, so each is accepted for up to a second past iat + window (or
// exp + leeway): its jti must be remembered that long too. Each test moves a test clock to that
// second itself, uses a proof or assertion once, and replays it.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { ADMIN_ID, ADMIN_SECRET, TestClock, assertOAuthError, startTestServer } from '../helpers/server.js'
import { assertion, assertionParams, ath, keyPair, proof } from '../helpers/jwt-clients.js'

const WINDOW = 60
const LEEWAY = 30 // ASSERTION_LEEWAY in src/oauth/client-assertion.ts
// A whole second, so that each instant below is the one named.
const T0 = Math.floor(Date.now() / 1000)
const clock = new TestClock(T0 * 1000)
const srv = await startTestServer(t, { DPOP_PROOF_WINDOW: String(WINDOW), CLIENT_AUTH_FAILURES: '1000', CLIENT_AUTH_ADDRESS_FAILURES: '1000' }, { clock })
const svc = await srv.createClient({ grant_types: ['client_credentials'] })
const key = await keyPair()
const cc = { grant_type: 'client_credentials' }

/** Sets the test clock to T0 + s seconds (s may be fractional). */
const at = (s: number) => clock.advance(T0 + s - clock.now().getTime() / 1000)

t.test('DPoP at the token endpoint: a proof used in the last second of its window is not accepted again in it', async (t) => {
  const htu = `${srv.issuer}/token`
  const send = (p: string) => srv.post('/token', cc, svc.auth, { dpop: p })
  for (const [what, iat, first, replay] of [
    ['used early, replayed in the last second', T0, 1, WINDOW + 0.999],
    ['used and replayed in the last second', T0, WINDOW + 0.5, WINDOW + 0.999],
    ['a fractional iat', T0 + 0.5, 1, WINDOW + 0.7],
  ] as const) {
    at(0)
    const p = await proof(key, { htu, iat, jti: randomUUID() })
    at(first)
    t.equal((await send(p)).status, 200, `${what}: first use`)
    at(replay)
    assertOAuthError(t, await send(p), 400, 'invalid_dpop_proof')
  }
  // And the second after it: too old, whatever the replay guard says.
  at(0)
  const late = await proof(key, { htu, iat: T0 })
  at(WINDOW + 1)
  assertOAuthError(t, await send(late), 400, 'invalid_dpop_proof')
  at(WINDOW + 0.999)
  t.equal((await send(late)).status, 200, 'the boundary second itself is inside the window')
})

t.test('DPoP at the admin API: a proof replayed in the last second of its window is refused, whatever the body', async (t) => {
  at(0)
  const htu = `${srv.issuer}/token`
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET], { dpop: await proof(key, { htu }) })
  t.equal(r.body.token_type, 'DPoP')
  const token: string = r.body.access_token
  const url = `${srv.adminUrl}/admin/clients`
  const create = (p: string, name: string) =>
    fetch(url, {
      method: 'POST',
      headers: { authorization: `DPoP ${token}`, dpop: p, 'content-type': 'application/json' },
      body: JSON.stringify({ name, grant_types: ['client_credentials'], scopes: ['read'] }),
    })
  const p = await proof(key, { htm: 'POST', htu: url, ath: ath(token), iat: T0 })
  at(WINDOW + 0.5)
  t.equal((await create(p, 'first')).status, 201, 'first use, in the last second')
  at(WINDOW + 0.999)
  const replay = await create(p, 'replayed with another body')
  t.equal(replay.status, 401, 'the replay is refused')
  t.equal(((await replay.json()) as { error: string }).error, 'invalid_dpop_proof')
})

t.test('private_key_jwt: an assertion with a fractional exp is accepted once, up to its last second', async (t) => {
  const k = await keyPair('ES256')
  const r = await srv.admin('POST', '/admin/clients', {
    name: 'key client',
    grant_types: ['client_credentials'],
    scopes: ['read'],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [k.jwk] },
  })
  t.equal(r.status, 201)
  const id: string = r.body.client_id
  at(0)
  // Accepted while now (whole seconds) < exp + leeway: up to the end of second T0 + 90.
  const jwt = await assertion(k, id, srv.issuer, { iat: T0, exp: T0 + 60.5 })
  at(60 + LEEWAY + 0.6)
  t.equal((await srv.post('/token', { ...cc, ...assertionParams(jwt) })).status, 200, 'first use, in the last second')
  at(60 + LEEWAY + 0.9)
  assertOAuthError(t, await srv.post('/token', { ...cc, ...assertionParams(jwt) }), 401, 'invalid_client')
  const other = await assertion(k, id, srv.issuer, { iat: T0, exp: T0 + 60.5 })
  at(60 + LEEWAY + 1)
  assertOAuthError(t, await srv.post('/token', { ...cc, ...assertionParams(other) }), 401, 'invalid_client')
})
