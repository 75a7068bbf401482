import t from 'tap'
import { decodeJwt, startTestServer, type HttpResult, assertOAuthError } from '../helpers/server.js'

// Not normalised anywhere: the issuer is compared as a string (RFC 8414 §3.3, RFC 9068 §4).
const ISSUER = 'https://Auth.Example.test:8443/tenant'
const srv = await startTestServer(t, { ISSUER })


async function request(method: string, path: string, body?: string, contentType?: string): Promise<HttpResult> {
  const res = await fetch(`${srv.url}${path}`, {
    method,
    ...(body !== undefined && { body }),
    headers: contentType === undefined ? {} : { 'content-type': contentType },
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed, text }
}

t.test('RFC 8414 metadata', async (t) => {
  const r = await srv.get('/.well-known/oauth-authorization-server')
  t.equal(r.status, 200)
  t.match(r.headers.get('content-type'), /^application\/json/)
  t.match(r.headers.get('cache-control'), /^public, max-age=\d+$/)
  const m = r.body
  t.equal(m.issuer, ISSUER, 'issuer is ISSUER exactly')
  t.equal(m.token_endpoint, `${ISSUER}/token`)
  t.equal(m.jwks_uri, `${ISSUER}/jwks`)
  t.equal(m.introspection_endpoint, `${ISSUER}/introspect`)
  t.equal(m.revocation_endpoint, `${ISSUER}/revoke`)
  t.same([...m.grant_types_supported].sort(), ['client_credentials', 'password', 'refresh_token'])
  t.same([...m.token_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'none', 'private_key_jwt'])
  t.ok(Array.isArray(m.response_types_supported), 'response_types_supported is REQUIRED (§2), even if empty')
  t.notOk('authorization_endpoint' in m, 'no authorization endpoint is offered')
  t.same([...m.introspection_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'private_key_jwt'])
  t.same([...m.revocation_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'none', 'private_key_jwt'])
})

t.test('ISSUER is used verbatim as iss', async (t) => {
  const c = await srv.createClient({ grant_types: ['client_credentials'] })
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, c.auth)
  t.equal(r.status, 200)
  const { payload } = decodeJwt(r.body.access_token)
  t.equal(payload.iss, ISSUER)
  t.equal(payload.aud, ISSUER, 'no audiences: the issuer')
  const i = await srv.post('/introspect', { token: r.body.access_token }, c.auth)
  t.equal(i.body.active, true)
  t.equal(i.body.iss, ISSUER)
})

t.test('/healthz and /readyz', async (t) => {
  const live = await srv.get('/healthz')
  t.equal(live.status, 200)
  t.match(live.headers.get('content-type'), /application\/json/)
  const ready = await srv.get('/readyz')
  t.equal(ready.status, 200)
  t.equal(ready.headers.get('cache-control'), 'no-store')
  t.match(ready.body, { database: true, signingKey: true })
})

t.test('an unknown route is a 404 JSON error', async (t) => {
  for (const [method, path] of [
    ['GET', '/'],
    ['GET', '/nope'],
    ['POST', '/nope'],
    ['GET', '/token/extra'],
    ['GET', '/.well-known/openid-configuration'],
    ['GET', `/${'a'.repeat(5000)}`],
    ['GET', '/admin/clients'],
  ] as const) {
    assertOAuthError(t, await request(method, path), 404, 'not_found')
  }
})

// Fastify's router refuses an undecodable URL itself (FST_ERR_BAD_URL); src/app.ts's
// `frameworkErrors` gives that refusal the §5.2 shape.
t.test('an undecodable URL is a §5.2 error', async (t) => {
  assertOAuthError(t, await request('GET', '/%zz'), 400, 'invalid_request')
})

t.test('a wrong method is a JSON error, never a stack', async (t) => {
  for (const [method, path] of [
    ['GET', '/token'],
    ['PUT', '/token'],
    ['DELETE', '/token'],
    ['GET', '/introspect'],
    ['GET', '/revoke'],
    ['POST', '/jwks'],
    ['DELETE', '/jwks'],
    ['POST', '/healthz'],
    ['PATCH', '/readyz'],
    ['POST', '/.well-known/oauth-authorization-server'],
  ] as const) {
    const r = await request(method, path, method === 'GET' || method === 'DELETE' ? undefined : 'x=1', 'application/x-www-form-urlencoded')
    t.test(`${method} ${path}`, async (t) => {
      t.ok(r.status >= 400 && r.status < 500, `status ${r.status}`)
      t.type(r.body.error, 'string')
      t.equal(r.headers.get('cache-control'), 'no-store')
      t.same(Object.keys(r.body).filter((k) => k !== 'error' && k !== 'error_description'), [])
      t.notMatch(r.text, /at .*\.(ts|js):\d+/, 'no stack trace')
    })
  }
})

// src/http/public.ts strips trailing slashes from the metadata's issuer while tokens carry ISSUER
// as given, so a discovery-based resource server would reject every token (RFC 8414 §3.3).
t.test('an ISSUER with a trailing slash is kept as is', async (t) => {
  const slashed = await startTestServer(t, { ISSUER: 'https://auth.example.test/' })
  const m = (await slashed.get('/.well-known/oauth-authorization-server')).body
  t.equal(m.issuer, 'https://auth.example.test/')
  t.equal(m.token_endpoint, 'https://auth.example.test/token')
  const c = await slashed.createClient({ grant_types: ['client_credentials'] })
  const r = await slashed.post('/token', { grant_type: 'client_credentials' }, c.auth)
  t.equal(decodeJwt(r.body.access_token).payload.iss, m.issuer, 'the metadata names the issuer the tokens carry')
})
