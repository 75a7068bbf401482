// What `npm run bench` measures: one entry per scenario. Adding a scenario is adding an entry.
//
// An entry:
//   id        the name in BENCH_SCENARIOS and in the report
//   title     one line for the report
//   peer      what Tessera's ratio is taken against: 'oidc-provider' (then `reference` is
//             required), 'argon2' (the argon2.verify ceiling, bench/argon2-ceiling.mjs), or
//             undefined: no peer, the rows show "n/a, no peer"
//   peerNote  (optional) what the peer does differently, printed under the table
//   tessera   async (t) => Load, given one Tessera (see `tesseraSetup` in bench/run.mjs: its
//             url and issuer, `client({ grant_types, ...settings })` → { client_id, client_secret,
//             auth } (no secret or auth for a private_key_jwt client), `user()` → { username,
//             password }, `token(auth, params)` → the token endpoint's JSON answer)
//   reference async (p) => Load, given oidc-provider (see `referenceSetup`: url, tokenPath,
//             introspectionPath, jwksPath, `auth` of its one client, `token(params)`)
//
// A Load is the request every autocannon connection sends, and what a good answer contains:
//   { method, path, headers, body, expect }
// A 2xx answer whose body does not contain `expect` counts as an error ("bad body"), as do
// non-2xx answers, connection errors and timeouts. For a request that changes from one call to the
// next (same method and path), add
//   perRequest(state) => { headers?, body? }   the next request's headers and body (either one
//                                               left out: the Load's); called for every request
//   onResponse(status, body, state)            (optional) sees each answer of the connection,
//                                               before its next request is built
//   seeds(n)                                   (optional) async, called before every run for one
//                                               starting state per connection; else {}
// `state` belongs to one connection and lasts for the whole run (warm-up and measured window).
//
// `client_credentials_dpop` and `client_credentials_private_key_jwt` sign a fresh proof or
// assertion for every request in the load generator (perRequest is synchronous: fast-jwt over
// node:crypto, ES256, a key made once), so their rows include that work on the generator's side.

import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { createSigner } from 'fast-jwt'

export const SCOPE = 'api:read'
export const RESOURCE = 'https://api.example'
export const FORM = 'application/x-www-form-urlencoded'

export const form = (params) => new URLSearchParams(params).toString()
export const basic = (id, secret) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`

/** Runs `task` for 0..n-1, at most `limit` at a time, in order of the results. */
async function inBatches(n, limit, task) {
  const results = new Array(n)
  let next = 0
  const worker = async () => {
    while (next < n) {
      const i = next++
      results[i] = await task(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker))
  return results
}

const ccBody = form({ grant_type: 'client_credentials', scope: SCOPE, resource: RESOURCE })

/** An ES256 key pair made once, its public JWK, and a synchronous JWS signer with these header fields. */
function es256(header) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench' }
  const sign = createSigner({
    key: privateKey.export({ format: 'pem', type: 'pkcs8' }),
    algorithm: 'ES256',
    // fast-jwt sets iat itself.
    header: typeof header === 'function' ? header(jwk) : header,
  })
  return { jwk, sign }
}

const nowSeconds = () => Math.floor(Date.now() / 1000)

export const scenarios = [
  {
    id: 'client_credentials',
    title: 'client_credentials token issuance: POST token endpoint, Basic auth, scope + resource → ES256 JWT',
    peer: 'oidc-provider',
    async tessera(t) {
      const c = await t.client({ grant_types: ['client_credentials'] })
      return { method: 'POST', path: '/token', headers: { authorization: c.auth, 'content-type': FORM }, body: ccBody, expect: '"access_token":"eyJ' }
    },
    async reference(p) {
      // `resource` makes oidc-provider issue an ES256 JWT too (accessTokenFormat 'jwt').
      return { method: 'POST', path: p.tokenPath, headers: { authorization: p.auth, 'content-type': FORM }, body: ccBody, expect: '"access_token":"eyJ' }
    },
  },
  {
    id: 'client_credentials_dpop',
    title: 'client_credentials with a DPoP proof (ES256, a fresh one per request) → a DPoP-bound ES256 JWT',
    peerNote:
      'No peer row: compare with client_credentials in the same report. The proof costs the server one ES256 verify and ' +
      'one replay-store insert (batched per event-loop turn); the load generator signs a proof per request.',
    async tessera(t) {
      const c = await t.client({ grant_types: ['client_credentials'] })
      const { sign } = es256((jwk) => ({ typ: 'dpop+jwt', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } }))
      const htu = `${t.issuer.replace(/\/+$/, '')}/token`
      const headers = { authorization: c.auth, 'content-type': FORM }
      return {
        method: 'POST',
        path: '/token',
        headers,
        body: ccBody,
        expect: '"token_type":"DPoP"',
        perRequest: () => ({ headers: { ...headers, dpop: sign({ jti: randomUUID(), htm: 'POST', htu }) } }),
      }
    },
  },
  {
    id: 'client_credentials_private_key_jwt',
    title: 'client_credentials authenticated by private_key_jwt (ES256 assertion, a fresh jti per request) → ES256 JWT',
    peerNote:
      'No peer row: compare with client_credentials in the same report. The assertion costs the server one ES256 verify and ' +
      'one replay-store insert; the load generator signs an assertion per request.',
    async tessera(t) {
      const { jwk, sign } = es256({ kid: 'bench' })
      const c = await t.client({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] } })
      const id = c.client_id
      return {
        method: 'POST',
        path: '/token',
        headers: { 'content-type': FORM },
        body: undefined,
        expect: '"access_token":"eyJ',
        perRequest: () => {
          const assertion = sign({ iss: id, sub: id, aud: t.issuer, exp: nowSeconds() + 60, jti: randomUUID() })
          return {
            body: form({
              grant_type: 'client_credentials',
              scope: SCOPE,
              resource: RESOURCE,
              client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
              client_assertion: assertion,
            }),
          }
        },
      }
    },
  },
  {
    id: 'introspection',
    title: 'introspection of a live access token by its own client',
    peer: 'oidc-provider',
    peerNote:
      'oidc-provider introspects an opaque token (an in-memory lookup): it refuses to introspect JWTs. ' +
      "Tessera verifies its JWT (once per token string) and checks the caller's client record and the token's revocation state in its in-memory view, held exact by the change feed under a lease (README: How requests are served from memory).",
    async tessera(t) {
      const c = await t.client({ grant_types: ['client_credentials'] })
      const { access_token: jwt } = await t.token(c.auth, { grant_type: 'client_credentials', scope: SCOPE, resource: RESOURCE })
      return {
        method: 'POST',
        path: '/introspect',
        headers: { authorization: c.auth, 'content-type': FORM },
        body: form({ token: jwt }),
        expect: '"active":true',
      }
    },
    async reference(p) {
      // Without `resource` oidc-provider issues an opaque token: the only kind it introspects.
      const { access_token: opaque } = await p.token({ grant_type: 'client_credentials', scope: SCOPE })
      return {
        method: 'POST',
        path: p.introspectionPath,
        headers: { authorization: p.auth, 'content-type': FORM },
        body: form({ token: opaque }),
        expect: '"active":true',
      }
    },
  },
  {
    id: 'password',
    title: 'password grant (argon2id verification), a user per connection, client also allowed refresh_token',
    peer: 'argon2',
    peerNote:
      'oidc-provider has no password grant. The peer row is argon2.verify alone, with the parameters Tessera uses, ' +
      'as fast as this machine allows (a separate process, no HTTP): the ratio is the fraction of that ceiling Tessera reaches.',
    async tessera(t) {
      const c = await t.client({ grant_types: ['password', 'refresh_token'] })
      const login = (user) => form({ grant_type: 'password', username: user.username, password: user.password, scope: SCOPE })
      const first = await t.user()
      // 50 connections are 50 people: one user's concurrent logins beyond LOGIN_FREE_FAILURES
      // are refused for a second, since each counts as a guess until its password checks out.
      const users = [first]
      return {
        method: 'POST',
        path: '/token',
        headers: { authorization: c.auth, 'content-type': FORM },
        body: login(first),
        expect: '"access_token":"eyJ',
        seeds: async (n) => {
          if (users.length < n) users.push(...(await inBatches(n - users.length, 4, () => t.user())))
          return users.slice(0, n).map((user) => ({ body: login(user) }))
        },
        perRequest: (state) => ({ body: state.body }),
      }
    },
  },
  {
    id: 'refresh_token',
    title: 'refresh_token grant: each connection chains its own refresh token through the rotations',
    peerNote: 'No peer: oidc-provider issues refresh tokens only from an authorization code, which needs a browser flow.',
    async tessera(t) {
      const user = await t.user()
      const c = await t.client({ grant_types: ['password', 'refresh_token'] })
      const login = form({ grant_type: 'password', username: user.username, password: user.password, scope: SCOPE })
      return {
        method: 'POST',
        path: '/token',
        headers: { authorization: c.auth, 'content-type': FORM },
        body: undefined,
        expect: '"refresh_token"',
        // A refresh token rotates on every use and a spent one revokes its family: every
        // connection starts from a refresh token of its own, got by a login before the run
        // (outside the measured time; four at a time, as argon2 has four threads), and sends the
        // refresh token of each answer in its next request.
        seeds: (n) => inBatches(n, 4, async () => ({ refreshToken: (await t.token(c.auth, login)).refresh_token })),
        perRequest: (state) => ({ body: form({ grant_type: 'refresh_token', refresh_token: state.refreshToken }) }),
        onResponse(status, body, state) {
          if (status !== 200) return // counted by the harness; the chain is broken from here on
          try {
            state.refreshToken = JSON.parse(body).refresh_token ?? state.refreshToken
          } catch {
            // counted as a bad body by the harness
          }
        },
      }
    },
  },
  {
    id: 'jwks',
    title: 'GET JWK Set',
    peer: 'oidc-provider',
    async tessera() {
      return { method: 'GET', path: '/jwks', headers: {}, expect: '"keys"' }
    },
    async reference(p) {
      return { method: 'GET', path: p.jwksPath, headers: {}, expect: '"keys"' }
    },
  },
]
