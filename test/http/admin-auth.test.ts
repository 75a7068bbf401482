import { readFileSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { SignJWT, generateKeyPair } from 'jose'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { startServer, type RunningServer } from '../../src/server.js'
import { TestClock, backend, basic, decodeJwt, isolatedDatabase, startTestServer, toResult, type HttpResult, assertOAuthError } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(t, {}, { clock })


function assertUnauthorized(t: Test, r: HttpResult) {
  assertOAuthError(t, r, 401, 'invalid_token')
  t.match(r.headers.get('www-authenticate'), /^Bearer /, 'RFC 6750 §3 challenge')
}

async function adminGet(path: string, authorization: string | undefined, base = srv.adminUrl): Promise<HttpResult> {
  return toResult(await fetch(`${base}${path}`, { headers: authorization === undefined ? {} : { authorization } }))
}

async function tokenFor(auth: [string, string], scope?: string): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials', ...(scope !== undefined && { scope }) }, auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token
}

// The admin API's resource identifier (src/oauth/audience.ts): the only aud it accepts.
const ADMIN_RESOURCE = `${srv.issuer}/admin`
// With a scope of its own beside the admin API's, a client names the admin resource to call it.
const adminClient = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['admin', 'metrics', 'read'], audiences: [ADMIN_RESOURCE] })

t.test('a valid admin token is accepted, with the scheme in any case', async (t) => {
  const token = await tokenFor(adminClient.auth, 'admin')
  t.equal((await adminGet('/admin/clients', `Bearer ${token}`)).status, 200)
  t.equal((await adminGet('/admin/clients', `bearer ${token}`)).status, 200, 'RFC 9110 §11.1: the scheme is case-insensitive')
})

t.test('no token, a malformed header or a bad token is 401 with a Bearer challenge', async (t) => {
  const token = await tokenFor(adminClient.auth, 'admin')
  const [h, p, s] = token.split('.')
  const otherPayload = Buffer.from(JSON.stringify({ ...decodeJwt(token).payload, client_id: srv.env['BOOTSTRAP_ADMIN_CLIENT_ID'] })).toString('base64url')
  const headers: Array<[string, string | undefined]> = [
    ['no header', undefined],
    ['empty', ''],
    ['scheme only', 'Bearer'],
    ['scheme and space', 'Bearer '],
    ['Basic credentials', basic(adminClient.id, adminClient.secret)],
    ['two tokens', `Bearer ${token} ${token}`],
    ['token without scheme', token],
    ['garbage', 'Bearer not-a-token'],
    ['illegal characters', 'Bearer ###'],
    ['truncated signature', `Bearer ${h}.${p}.${s!.slice(0, -4)}`],
    ['payload swapped under the signature', `Bearer ${h}.${otherPayload}.${s}`],
    ['unsigned (alg none)', `Bearer ${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${p}.`],
    ['client secret as a bearer token', `Bearer ${adminClient.secret}`],
  ]
  for (const [label, header] of headers) {
    t.test(label, async (t) => {
      for (const path of ['/admin/clients', '/admin/users', '/admin/keys', '/metrics', '/admin/no-such-route']) {
        assertUnauthorized(t, await adminGet(path, header))
      }
    })
  }
})

t.test('a forged token, signed by a key that is not ours under our kid and issuer, is 401', async (t) => {
  const genuine = decodeJwt(await tokenFor(adminClient.auth, 'admin'))
  const { privateKey } = await generateKeyPair('ES256')
  const forged = await new SignJWT({ ...genuine.payload, jti: genuine.payload.jti })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: genuine.header.kid })
    .sign(privateKey)
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${forged}`))
  const hs = await new SignJWT({ ...genuine.payload })
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: genuine.header.kid })
    .sign(randomBytes(32))
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${hs}`))
})

t.test('a refresh token is not an access token', async (t) => {
  const app = await srv.createClient({ scopes: ['admin'] })
  await srv.createUser('root-user', 'root password')
  const r = await srv.post('/token', { grant_type: 'password', username: 'root-user', password: 'root password' }, app.auth)
  t.equal(r.status, 200)
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${r.body.refresh_token}`))
})

t.test('an expired token is 401', async (t) => {
  const shortLived = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['admin'], access_token_ttl: 1 })
  const token = await tokenFor(shortLived.auth)
  t.equal((await adminGet('/admin/clients', `Bearer ${token}`)).status, 200, 'works while fresh')
  clock.advance(5)
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${token}`))
  assertUnauthorized(t, await adminGet('/metrics', `Bearer ${token}`))
})

t.test('a token revoked by its client (RFC 7009) is 401 at once', async (t) => {
  const token = await tokenFor(adminClient.auth, 'admin')
  const other = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'] })
  t.equal((await srv.post('/revoke', { token }, other.auth)).status, 200)
  t.equal((await adminGet('/admin/clients', `Bearer ${token}`)).status, 200, 'another client cannot revoke it')
  t.equal((await srv.post('/revoke', { token }, adminClient.auth)).status, 200)
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${token}`))
})

t.test("a client's tokens stop when the client is deleted or its tokens revoked", async (t) => {
  const doomed = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['admin'] })
  const token = await tokenFor(doomed.auth)
  t.equal((await srv.admin('POST', `/admin/clients/${doomed.id}/revoke-tokens`)).status, 204)
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${token}`))
  // A millisecond later, so that the new token is issued after the revocation instant.
  clock.advance(0.01)
  const fresh = await tokenFor(doomed.auth)
  t.equal((await adminGet('/admin/clients', `Bearer ${fresh}`)).status, 200, 'new tokens work again')
  t.equal((await srv.admin('DELETE', `/admin/clients/${doomed.id}`)).status, 204)
  assertUnauthorized(t, await adminGet('/admin/clients', `Bearer ${fresh}`))
})

t.test('a token without the admin scope is 403 insufficient_scope', async (t) => {
  const reader = await tokenFor(adminClient.auth, 'read')
  const metrics = await tokenFor(adminClient.auth, 'metrics')
  for (const token of [reader, metrics]) {
    for (const [method, path] of [
      ['GET', '/admin/clients'],
      ['POST', '/admin/clients'],
      ['GET', '/admin/users'],
      ['DELETE', `/admin/clients/${adminClient.id}`],
      ['GET', '/admin/keys'],
      ['POST', '/admin/keys/rotate'],
    ] as const) {
      const r = await srv.admin(method, path, method === 'POST' ? { name: 'x' } : undefined, token)
      assertOAuthError(t, r, 403, 'insufficient_scope')
      t.match(r.headers.get('www-authenticate'), /^Bearer .*error="insufficient_scope"/)
    }
  }
  t.equal((await srv.admin('GET', `/admin/clients/${adminClient.id}`)).status, 200, 'nothing was deleted')
  assertOAuthError(t, await adminGet('/metrics', `Bearer ${reader}`), 403, 'insufficient_scope')
})

t.test('/metrics: Prometheus text for scope metrics or admin', async (t) => {
  for (const scope of ['metrics', 'admin', 'admin metrics']) {
    const r = await adminGet('/metrics', `Bearer ${await tokenFor(adminClient.auth, scope)}`)
    t.equal(r.status, 200, scope)
    t.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
    t.match(r.text, /^# HELP tessera_tokens_issued_total /m)
    t.match(r.text, /^tessera_tokens_issued_total\{grant_type="client_credentials"\} \d+$/m)
  }
})

t.test('the admin listener serves the metadata without a token; the public one has no admin API', async (t) => {
  const r = await adminGet('/.well-known/oauth-authorization-server', undefined)
  t.equal(r.status, 200)
  t.equal(r.body.issuer, srv.issuer)
  t.equal(r.body.token_endpoint, `${srv.issuer}/token`)
  t.equal((await adminGet('/.well-known/oauth-authorization-server?x=1', undefined)).status, 200)
  const token = await srv.adminToken()
  assertOAuthError(t, await adminGet('/admin/clients', `Bearer ${token}`, srv.url), 404, 'not_found')
  assertOAuthError(t, await adminGet('/metrics', `Bearer ${token}`, srv.url), 404, 'not_found')
  assertOAuthError(t, await adminGet('/admin/no-such-route', `Bearer ${token}`), 404, 'not_found')
})

t.test('ensureAdminClient restores the secret, grant and scope, keeping the rest', async (t) => {
  const c = await srv.createClient({ grant_types: ['password'], scopes: ['read'] })
  await srv.tessera.clients.ensureAdminClient(c.id, 'a-secret-of-the-operators-choosing')
  const after = (await srv.admin('GET', `/admin/clients/${c.id}`)).body
  t.same(after.grant_types, ['password', 'client_credentials'])
  t.same(after.scopes, ['read', 'admin'])
  assertOAuthError(t, await srv.post('/token', { grant_type: 'client_credentials' }, c.auth), 401, 'invalid_client')
  t.equal((await tokenFor([c.id, 'a-secret-of-the-operators-choosing'], 'admin')).split('.').length, 3)
  clock.advance(1)
  await srv.tessera.clients.ensureAdminClient(c.id, 'a-secret-of-the-operators-choosing')
  t.equal((await srv.admin('GET', `/admin/clients/${c.id}`)).body.updated_at, after.updated_at, 'nothing to do: nothing written')
})

// Restarts over one database: a fixed schema on Postgres; on PGlite a directory that the next
// server opens once the previous one has closed.
t.test('bootstrap across restarts', async (t) => {
  const dataDir = t.testdir({})
  const database = await isolatedDatabase()
  t.teardown(() => database?.drop())
  const baseEnv: Record<string, string> = {
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'silent',
    ...(database !== undefined && { DATABASE_URL: database.url, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }),
  }
  const start = async (env: Record<string, string>): Promise<{ server: RunningServer; announced: string }> => {
    let announced = ''
    const config = loadConfig({ ...baseEnv, ...env })
    const server = await startServer(config, { log: createLogger('silent'), announce: (text) => (announced += text) })
    return { server, announced }
  }
  const token = async (server: RunningServer, id: string, secret: string) => {
    const res = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(id, secret) },
      body: 'grant_type=client_credentials&scope=admin',
    })
    return { status: res.status, body: (await res.json()) as any }
  }
  const clients = async (server: RunningServer, bearer: string): Promise<any[]> => {
    const res = await fetch(`${server.adminUrl}/admin/clients`, { headers: { authorization: `Bearer ${bearer}` } })
    return ((await res.json()) as any).clients
  }

  // No bootstrap variables and no admin client: one is made and announced once. Where there is
  // a file for it (embedded), the secret is written there only: stderr is what log pipelines keep.
  const first = await start({})
  let created: { client_id: string; client_secret: string }
  try {
    const file = join(dataDir, 'admin-client.json')
    if (backend === 'pglite') {
      created = JSON.parse(readFileSync(file, 'utf8'))
      t.same(Object.keys(created), ['client_id', 'client_secret'], 'written to DATA_DIR/admin-client.json')
      t.equal(statSync(file).mode & 0o777, 0o600, 'readable by the owner only')
      t.equal(
        first.announced,
        `\nTessera created an admin client, ${created.client_id}. Its id and secret are in ${file}\n(readable by this user only); the secret is written nowhere else.\n\n`,
        'the announcement names the client and the file, and holds no secret',
      )
      t.notOk(first.announced.includes(created.client_secret), 'the secret is not announced')
    } else {
      t.notOk(existsSync(file), 'with Postgres nothing is written to DATA_DIR')
      const id = /client_id:\s+(\S+)/.exec(first.announced)?.[1]
      const secret = /client_secret:\s+(\S+)/.exec(first.announced)?.[1]
      t.ok(id !== undefined && secret !== undefined, 'with no file for it, id and secret are announced')
      created = { client_id: id!, client_secret: secret! }
    }
    t.match(created.client_secret, /^[A-Za-z0-9_-]{43}$/)
    const r = await token(first.server, created.client_id, created.client_secret)
    t.equal(r.status, 200)
    const listed = await clients(first.server, r.body.access_token)
    t.equal(listed.length, 1)
    t.match(listed[0], { client_id: created.client_id, grant_types: ['client_credentials'], scopes: ['admin'] })
  } finally {
    await first.server.close()
  }

  const second = await start({})
  try {
    t.equal(second.announced, '', 'a second start creates nothing')
    const r = await token(second.server, created.client_id, created.client_secret)
    t.equal(r.status, 200, 'the announced secret still works')
    t.equal((await clients(second.server, r.body.access_token)).length, 1)
  } finally {
    await second.server.close()
  }

  // With the variables, that client is made sure of, idempotently.
  const bootstrap = { BOOTSTRAP_ADMIN_CLIENT_ID: 'ops-admin', BOOTSTRAP_ADMIN_CLIENT_SECRET: 'ops-admin-secret-0123456789' }
  let before: any
  const third = await start(bootstrap)
  try {
    t.equal(third.announced, '')
    const r = await token(third.server, 'ops-admin', 'ops-admin-secret-0123456789')
    t.equal(r.status, 200)
    t.equal(r.body.scope, 'admin')
    const listed = await clients(third.server, r.body.access_token)
    t.equal(listed.length, 2)
    before = listed.find((c) => c.client_id === 'ops-admin')
    t.match(before, { grant_types: ['client_credentials'], scopes: ['admin'] })
  } finally {
    await third.server.close()
  }

  const fourth = await start(bootstrap)
  try {
    t.equal(fourth.announced, '')
    const r = await token(fourth.server, 'ops-admin', 'ops-admin-secret-0123456789')
    t.equal(r.status, 200)
    const listed = await clients(fourth.server, r.body.access_token)
    t.equal(listed.length, 2, 'no second client')
    t.same(listed.find((c) => c.client_id === 'ops-admin'), before, 'unchanged by the second start')
    t.equal((await token(fourth.server, created.client_id, created.client_secret)).status, 200)
  } finally {
    await fourth.server.close()
  }
})

t.test('a first-start secret that cannot be written to its file is shown once on stderr instead, and the start fails', { skip: backend !== 'pglite' && 'the file is written in embedded mode only' }, async (t) => {
  // A directory where the file goes: the client is made, its file cannot be.
  const dataDir = t.testdir({ 'admin-client.json': {} })
  let announced = ''
  const config = loadConfig({ HOST: '127.0.0.1', PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_PORT: '0', DATA_DIR: dataDir, LOG_LEVEL: 'silent' })
  await t.rejects(startServer(config, { log: createLogger('silent'), announce: (text) => (announced += text) }))
  t.match(announced, /^\nTessera created an admin client\. Its secret is shown only now:\n {2}client_id: {5}\S+\n {2}client_secret: [A-Za-z0-9_-]{43}\n/)
  t.match(announced, /\(could not be written to \S+admin-client\.json: /, 'and why it is here')
})
