import t from 'tap'
import { TestClock, startTestServer, type HttpResult, assertOAuthError } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(t, {}, { clock })


/** An admin request with a body sent exactly as given. */
async function raw(method: string, path: string, body: string | undefined, contentType?: string): Promise<HttpResult> {
  const res = await fetch(`${srv.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${await srv.adminToken()}`, ...(contentType !== undefined && { 'content-type': contentType }) },
    ...(body !== undefined && { body }),
  })
  const text = await res.text()
  let parsed: unknown
  try {
    parsed = text === '' ? undefined : JSON.parse(text)
  } catch {
    parsed = text
  }
  return { status: res.status, headers: res.headers, body: parsed, text }
}

const clientCredentials = (auth: [string, string], scope?: string) =>
  srv.post('/token', { grant_type: 'client_credentials', ...(scope !== undefined && { scope }) }, auth)

async function allClients(): Promise<any[]> {
  const r = await srv.admin('GET', '/admin/clients?limit=1000')
  return r.body.clients
}

t.test('create: 201 with an id and a 256-bit secret that works at /token', async (t) => {
  const settings = {
    name: 'billing',
    grant_types: ['client_credentials'],
    scopes: ['read', 'write'],
    audiences: ['https://billing.example'],
    resource_identifiers: ['https://billing.example'],
    access_token_ttl: 120,
    refresh_token_ttl: 3600,
  }
  const r = await srv.admin('POST', '/admin/clients', settings)
  t.equal(r.status, 201)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.type(r.body.client_id, 'string')
  t.match(r.body.client_secret, /^[A-Za-z0-9_-]{43}$/, 'base64url, no padding')
  t.equal(Buffer.from(r.body.client_secret, 'base64url').length, 32, '256 bits')
  t.match(r.body, settings)
  const token = await clientCredentials([r.body.client_id, r.body.client_secret], 'read')
  t.equal(token.status, 200)
  t.equal(token.body.expires_in, 120, 'the client override applies')

  const defaults = await srv.admin('POST', '/admin/clients', { name: 'minimal', grant_types: ['password'], scopes: [] })
  t.equal(defaults.status, 201)
  t.match(defaults.body, { audiences: [], resource_identifiers: [], access_token_ttl: null, refresh_token_ttl: null })
  t.not(defaults.body.client_secret, r.body.client_secret)
  t.not(defaults.body.client_id, r.body.client_id)
})

t.test('list and read never show a secret or its hash', async (t) => {
  const c = await srv.createClient({ name: 'listed' })
  const list = await srv.admin('GET', '/admin/clients')
  t.equal(list.status, 200)
  t.equal(list.headers.get('cache-control'), 'no-store')
  t.ok(Array.isArray(list.body.clients))
  const listed = list.body.clients.find((x: any) => x.client_id === c.id)
  t.ok(listed, 'the new client is listed')
  t.equal(listed.name, 'listed')
  t.notMatch(list.text, /"client_secret"|"(?:previous_)?secret|hash/i, 'no secret field anywhere')
  t.notOk(list.text.includes(c.secret))

  const one = await srv.admin('GET', `/admin/clients/${encodeURIComponent(c.id)}`)
  t.equal(one.status, 200)
  t.same(one.body, listed, 'read shows what the list shows')
  t.notMatch(one.text, /"client_secret"|"(?:previous_)?secret|hash/i)
})

t.test('list pages with limit and after', async (t) => {
  for (let i = 0; i < 3; i++) await srv.createClient({ name: `paged ${i}` })
  const everything = (await allClients()).map((c) => c.client_id)
  t.ok(everything.length >= 4)
  const seen: string[] = []
  let after: string | undefined
  for (let pages = 0; pages < 100; pages++) {
    const r = await srv.admin('GET', `/admin/clients?limit=2${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`)
    t.equal(r.status, 200)
    t.ok(r.body.clients.length <= 2)
    seen.push(...r.body.clients.map((c: any) => c.client_id))
    if (r.body.next === undefined) break
    after = r.body.next
  }
  t.same(seen, everything, 'the pages walk every client once, in order')
  for (const bad of ['0', '-1', '1.5', 'x', '1001']) {
    assertOAuthError(t, await srv.admin('GET', `/admin/clients?limit=${bad}`), 400, 'invalid_request')
  }
  assertOAuthError(t, await srv.admin('GET', '/admin/clients?limit=1&limit=2'), 400, 'invalid_request')
})

t.test('PATCH changes the fields given and only those', async (t) => {
  const c = await srv.createClient({ name: 'before', audiences: ['https://a.example'], access_token_ttl: 300 })
  const before = (await srv.admin('GET', `/admin/clients/${c.id}`)).body
  clock.advance(2)
  const renamed = await srv.admin('PATCH', `/admin/clients/${c.id}`, { name: 'after' })
  t.equal(renamed.status, 200)
  t.equal(renamed.headers.get('cache-control'), 'no-store')
  t.same({ ...renamed.body, name: undefined, updated_at: undefined }, { ...before, name: undefined, updated_at: undefined })
  t.equal(renamed.body.name, 'after')
  t.ok(renamed.body.updated_at > before.updated_at, 'updated_at moves')
  t.equal(renamed.body.created_at, before.created_at)
  t.notMatch(renamed.text, /"client_secret"|"(?:previous_)?secret|hash/i)

  const narrowed = await srv.admin('PATCH', `/admin/clients/${c.id}`, { scopes: ['read'], access_token_ttl: 60 })
  t.equal(narrowed.status, 200)
  t.same(narrowed.body.scopes, ['read'])
  t.equal(narrowed.body.access_token_ttl, 60)
  t.same(narrowed.body.audiences, ['https://a.example'], 'untouched')
  t.equal((await srv.admin('GET', `/admin/clients/${c.id}`)).body.name, 'after', 'stored')
  const token = await clientCredentials(c.auth)
  t.equal(token.status, 200)
  t.equal(token.body.scope, 'read')
  t.equal(token.body.expires_in, 60)
  t.equal((await clientCredentials(c.auth, 'write')).body.error, 'invalid_scope', 'a withdrawn scope is refused')

  const reset = await srv.admin('PATCH', `/admin/clients/${c.id}`, { access_token_ttl: null })
  t.equal(reset.body.access_token_ttl, null, 'null returns to the server default')
  t.equal((await clientCredentials(c.auth)).body.expires_in, 600)

  const noGrant = await srv.admin('PATCH', `/admin/clients/${c.id}`, { grant_types: ['password'] })
  t.same(noGrant.body.grant_types, ['password'])
  t.equal((await clientCredentials(c.auth)).body.error, 'unauthorized_client')
})

t.test('DELETE: 204, then 404, and the secret stops working', async (t) => {
  const c = await srv.createClient()
  const del = await srv.admin('DELETE', `/admin/clients/${c.id}`)
  t.equal(del.status, 204)
  t.equal(del.text, '')
  assertOAuthError(t, await srv.admin('GET', `/admin/clients/${c.id}`), 404, 'not_found')
  assertOAuthError(t, await srv.admin('DELETE', `/admin/clients/${c.id}`), 404, 'not_found')
  t.notOk((await allClients()).some((x) => x.client_id === c.id))
  assertOAuthError(t, await clientCredentials(c.auth), 401, 'invalid_client')
})

t.test('an unknown client id is 404 not_found everywhere', async (t) => {
  for (const id of ['no-such-client', '00000000-0000-4000-8000-000000000000', '%E2%9C%93', 'x'.repeat(100)]) {
    assertOAuthError(t, await srv.admin('GET', `/admin/clients/${id}`), 404, 'not_found')
    assertOAuthError(t, await srv.admin('PATCH', `/admin/clients/${id}`, { name: 'x' }), 404, 'not_found')
    assertOAuthError(t, await srv.admin('DELETE', `/admin/clients/${id}`), 404, 'not_found')
    assertOAuthError(t, await srv.admin('POST', `/admin/clients/${id}/secret`, {}), 404, 'not_found')
  }
})

// Fastify's router refuses an undecodable parameter itself (FST_ERR_BAD_URL); src/app.ts's
// `frameworkErrors` gives that refusal the §5.2 shape. An overlong one is refused by the admin
// API's own check of path parameters (at most 256 bytes for a client id).
t.test('an overlong or undecodable id is still a §5.2 error', async (t) => {
  assertOAuthError(t, await srv.admin('GET', `/admin/clients/${'x'.repeat(300)}`), 400, 'invalid_request')
  assertOAuthError(t, await srv.admin('GET', '/admin/clients/%zz'), 400, 'invalid_request')
})

t.test('rotating the secret without grace stops the old one at once', async (t) => {
  for (const body of [undefined, {}, { grace_seconds: 0 }]) {
    const c = await srv.createClient({ grant_types: ['client_credentials'] })
    const r = await srv.admin('POST', `/admin/clients/${c.id}/secret`, body)
    t.equal(r.status, 200, `body ${JSON.stringify(body)}`)
    t.equal(r.headers.get('cache-control'), 'no-store')
    t.same(Object.keys(r.body), ['client_secret'])
    t.match(r.body.client_secret, /^[A-Za-z0-9_-]{43}$/)
    t.not(r.body.client_secret, c.secret)
    assertOAuthError(t, await clientCredentials(c.auth), 401, 'invalid_client')
    t.equal((await clientCredentials([c.id, r.body.client_secret])).status, 200)
  }
})

t.test('rotating with grace keeps the old secret working until the grace ends', async (t) => {
  const c = await srv.createClient({ grant_types: ['client_credentials'] })
  const r = await srv.admin('POST', `/admin/clients/${c.id}/secret`, { grace_seconds: 60 })
  t.equal(r.status, 200)
  const fresh: [string, string] = [c.id, r.body.client_secret]
  t.equal((await clientCredentials(c.auth)).status, 200, 'old secret in the grace period')
  t.equal((await clientCredentials(fresh)).status, 200, 'new secret')
  clock.advance(30)
  t.equal((await clientCredentials(c.auth)).status, 200, 'still within the grace period')
  clock.advance(31)
  assertOAuthError(t, await clientCredentials(c.auth), 401, 'invalid_client')
  t.equal((await clientCredentials(fresh)).status, 200, 'the new secret outlives the grace period')

  // A second rotation replaces the grace secret: only the latest two secrets ever live.
  const second = await srv.admin('POST', `/admin/clients/${c.id}/secret`, { grace_seconds: 60 })
  const third = await srv.admin('POST', `/admin/clients/${c.id}/secret`, { grace_seconds: 60 })
  assertOAuthError(t, await clientCredentials(fresh), 401, 'invalid_client')
  t.equal((await clientCredentials([c.id, second.body.client_secret])).status, 200)
  t.equal((await clientCredentials([c.id, third.body.client_secret])).status, 200)
})

t.test('bad bodies are 400 invalid_request and write nothing', async (t) => {
  const valid = { name: 'n', grant_types: ['client_credentials'], scopes: ['read'] }
  const before = await allClients()
  const bad: Array<[string, unknown]> = [
    ['missing name', { grant_types: ['password'], scopes: [] }],
    ['missing grant_types', { name: 'n', scopes: [] }],
    ['missing scopes', { name: 'n', grant_types: ['password'] }],
    ['empty name', { ...valid, name: '' }],
    ['name not a string', { ...valid, name: 7 }],
    ['grant_types not an array', { ...valid, grant_types: 'password' }],
    ['no grant types', { ...valid, grant_types: [] }],
    ['unknown grant type', { ...valid, grant_types: ['authorization_code'] }],
    ['repeated grant type', { ...valid, grant_types: ['password', 'password'] }],
    ['scopes not an array', { ...valid, scopes: 'read write' }],
    ['scope with a space', { ...valid, scopes: ['read write'] }],
    ['scope with a quote', { ...valid, scopes: ['"read"'] }],
    ['empty scope', { ...valid, scopes: [''] }],
    ['scope not a string', { ...valid, scopes: [1] }],
    ['audiences not an array', { ...valid, audiences: 'https://a.example' }],
    ['audience with a space', { ...valid, audiences: ['https://a.example x'] }],
    ['ttl 0', { ...valid, access_token_ttl: 0 }],
    ['negative ttl', { ...valid, refresh_token_ttl: -5 }],
    ['fractional ttl', { ...valid, access_token_ttl: 1.5 }],
    ['ttl as a string', { ...valid, access_token_ttl: '60' }],
    ['huge ttl', { ...valid, access_token_ttl: 1e20 }],
    ['unknown property', { ...valid, client_secret: 'mine' }],
    ['an array', [valid]],
    ['a string', 'client'],
    ['null', null],
  ]
  for (const [label, body] of bad) {
    const r = await srv.admin('POST', '/admin/clients', body)
    t.test(label, async (t) => {
      assertOAuthError(t, r, 400, 'invalid_request')
      t.type(r.body.error_description, 'string')
    })
  }
  for (const [label, r] of [
    ['not JSON', await raw('POST', '/admin/clients', '{"name":', 'application/json')],
    ['empty JSON body', await raw('POST', '/admin/clients', '', 'application/json')],
    ['no body', await raw('POST', '/admin/clients', undefined)],
    ['a form', await raw('POST', '/admin/clients', 'name=n&scopes=read', 'application/x-www-form-urlencoded')],
    ['text', await raw('POST', '/admin/clients', JSON.stringify(valid), 'text/plain')],
    ['prototype pollution', await raw('POST', '/admin/clients', '{"__proto__":{"x":1},"name":"n"}', 'application/json')],
  ] as const) {
    t.test(label, async (t) => assertOAuthError(t, r, 400, 'invalid_request'))
  }
  t.same(await allClients(), before, 'nothing was written')
})

t.test('bad PATCH and rotation bodies are 400 and change nothing', async (t) => {
  const c = await srv.createClient({ grant_types: ['client_credentials'] })
  const before = (await srv.admin('GET', `/admin/clients/${c.id}`)).body
  const patches: unknown[] = [
    {},
    { name: '' },
    { grant_types: ['implicit'] },
    { scopes: 'read' },
    { access_token_ttl: 0 },
    { refresh_token_ttl: 2.5 },
    { client_id: 'renamed' },
    { name: 'ok', unknown: true },
    [],
    null,
  ]
  for (const body of patches) {
    assertOAuthError(t, await srv.admin('PATCH', `/admin/clients/${c.id}`, body), 400, 'invalid_request')
  }
  assertOAuthError(t, await raw('PATCH', `/admin/clients/${c.id}`, 'nope', 'application/json'), 400, 'invalid_request')
  t.same((await srv.admin('GET', `/admin/clients/${c.id}`)).body, before, 'unchanged')

  for (const body of [{ grace_seconds: -1 }, { grace_seconds: 1.5 }, { grace_seconds: '60' }, { grace: 60 }, [], 'x']) {
    assertOAuthError(t, await srv.admin('POST', `/admin/clients/${c.id}/secret`, body), 400, 'invalid_request')
  }
  assertOAuthError(t, await raw('POST', `/admin/clients/${c.id}/secret`, '{', 'application/json'), 400, 'invalid_request')
  t.equal((await clientCredentials(c.auth)).status, 200, 'the secret was not rotated')
})
