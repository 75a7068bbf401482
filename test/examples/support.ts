// What both resource-server examples must do, checked the same way: a real Tessera (this test
// file's backend), the example as a process of its own on an ephemeral port in each mode, and
// requests as an API client sends them.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Test } from 'tap'
import { packageRoot } from '../../src/paths.js'
import { neutralCwd } from '../helpers/process.js'
import { ath, keyPair, proof } from '../helpers/jwt-clients.js'
import { decodeJwt, startTestServer, type TestServer } from '../helpers/server.js'

const AUDIENCE = 'https://orders.example.com'
const OTHER_AUDIENCE = 'https://billing.example.com'
const CACHE_SECONDS = 2

interface Example {
  url: string
  get(path: string, token?: string, headers?: Record<string, string>): Promise<{ status: number; challenge: string | null; body: any }>
}

/** Starts examples/<name>/server.js with this environment; resolves once it listens. */
async function startExample(t: Test, name: string, env: Record<string, string>): Promise<Example> {
  const child = spawn(process.execPath, [join(packageRoot, 'examples', name, 'server.js')], {
    env: { PATH: process.env['PATH'] ?? '', PORT: '0', ...env },
    cwd: neutralCwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  t.teardown(() => {
    child.kill('SIGTERM')
  })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start\n${stderr}`)), 30_000)
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code}\n${stderr}`)))
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^listening on (\S+)/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
  })
  return {
    url,
    async get(path, token, headers = {}) {
      const res = await fetch(`${url}${path}`, { headers: { ...(token !== undefined && { authorization: `Bearer ${token}` }), ...headers } })
      return { status: res.status, challenge: res.headers.get('www-authenticate'), body: await res.json() }
    },
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The checks every example passes, in both modes. */
export async function exampleSuite(t: Test, name: string): Promise<void> {
  const srv: TestServer = await startTestServer(t)
  // The API, registered as the resource server for its audience: it may introspect those tokens.
  const api = await srv.createClient({ name: 'orders api', grant_types: ['client_credentials'], scopes: [], resource_identifiers: [AUDIENCE] })
  // A caller of the API, and one whose tokens live one second.
  const caller = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['orders:read', 'profile'], audiences: [AUDIENCE, OTHER_AUDIENCE] })
  const brief = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['orders:read'], audiences: [AUDIENCE], access_token_ttl: 1 })

  const token = async (client: { auth: [string, string] }, form: Record<string, string> = {}) => {
    const r = await srv.post('/token', { grant_type: 'client_credentials', ...form }, client.auth)
    if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
    return r.body.access_token as string
  }
  const revoke = async (client: { auth: [string, string] }, value: string) => {
    const r = await srv.post('/revoke', { token: value }, client.auth)
    if (r.status !== 200) throw new Error(`revoke: ${r.status} ${r.text}`)
  }

  const examples = {
    local: await startExample(t, name, { TESSERA_ISSUER: srv.issuer, API_AUDIENCE: AUDIENCE, TOKEN_CHECK: 'local' }),
    introspection: await startExample(t, name, {
      TESSERA_ISSUER: srv.issuer,
      API_AUDIENCE: AUDIENCE,
      TOKEN_CHECK: 'introspection',
      API_CLIENT_ID: api.id,
      API_CLIENT_SECRET: api.secret,
      INTROSPECTION_CACHE_SECONDS: String(CACHE_SECONDS),
    }),
  }

  for (const [mode, example] of Object.entries(examples)) {
    t.test(`${mode}: no token is 401 with a bare Bearer challenge (RFC 6750 §3.1)`, async (t) => {
      const r = await example.get('/orders')
      t.equal(r.status, 401)
      t.equal(r.challenge, 'Bearer realm="orders-api"')
      t.equal((await example.get('/health')).status, 200, 'an open route needs none')
      const basic = await fetch(`${example.url}/orders`, { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } })
      t.equal(basic.status, 401, 'another scheme is no bearer token')
    })

    t.test(`${mode}: a valid token with the scope is accepted`, async (t) => {
      const access = await token(caller, { scope: 'orders:read profile' })
      const orders = await example.get('/orders', access)
      t.equal(orders.status, 200)
      t.equal(orders.body.for, caller.id, 'sub: the client, for client_credentials')
      const me = await example.get('/me', access)
      t.same(me.body, { sub: caller.id, client_id: caller.id, scopes: ['orders:read', 'profile'] })
    })

    t.test(`${mode}: a token for another audience is refused`, async (t) => {
      const access = await token(caller, { scope: 'orders:read', resource: OTHER_AUDIENCE })
      t.equal(decodeJwt(access).payload.aud, OTHER_AUDIENCE)
      const r = await example.get('/orders', access)
      t.equal(r.status, 401)
      t.match(r.challenge, /^Bearer realm="orders-api", error="invalid_token", error_description="[^"]+"$/)
      t.equal(r.body.error, 'invalid_token')
    })

    t.test(`${mode}: a token without the route's scope is 403 insufficient_scope`, async (t) => {
      const access = await token(caller, { scope: 'profile' })
      const r = await example.get('/orders', access)
      t.equal(r.status, 403)
      t.equal(r.challenge, 'Bearer realm="orders-api", error="insufficient_scope", error_description="this needs the scope orders:read", scope="orders:read"')
      t.equal((await example.get('/me', access)).status, 200, 'the same token is fine where no scope is needed')
    })

    t.test(`${mode}: garbage, a forged signature and an expired token are refused`, async (t) => {
      t.equal((await example.get('/orders', 'not-a-token')).status, 401)
      const valid = await token(caller, { scope: 'orders:read' })
      const [h, p] = valid.split('.')
      const forged = `${h}.${p}.${Buffer.from('x'.repeat(64)).toString('base64url')}`
      t.equal((await example.get('/orders', forged)).status, 401, 'a bad signature')
      const claims = JSON.parse(Buffer.from(p!, 'base64url').toString())
      const widened = `${h}.${Buffer.from(JSON.stringify({ ...claims, scope: 'orders:read orders:write' })).toString('base64url')}.${valid.split('.')[2]}`
      t.equal((await example.get('/orders', widened)).status, 401, 'changed claims')

      const short = await token(brief)
      t.equal((await example.get('/orders', short)).status, 200, 'accepted while it lives')
      const exp = decodeJwt(short).payload.exp as number
      await sleep(Math.max(0, exp * 1000 - Date.now()) + 100)
      const r = await example.get('/orders', short)
      t.equal(r.status, 401, 'refused once expired, cached answer or not')
      t.equal(r.body.error, 'invalid_token')
    })
  }

  t.test('local: a revoked token is still accepted until it expires (it never asks Tessera)', async (t) => {
    const access = await token(caller, { scope: 'orders:read' })
    t.equal((await examples.local.get('/orders', access)).status, 200)
    await revoke(caller, access)
    t.same((await srv.post('/introspect', { token: access }, caller.auth)).body, { active: false }, 'Tessera has revoked it')
    t.equal((await examples.local.get('/orders', access)).status, 200, 'what local verification cannot see')
  })

  t.test(`introspection: a revocation is seen within the cache bound (${CACHE_SECONDS} s)`, async (t) => {
    const access = await token(caller, { scope: 'orders:read' })
    t.equal((await examples.introspection.get('/orders', access)).status, 200)
    await revoke(caller, access)
    // From the moment the revocation returned (it may itself wait up to a lease for every instance):
    // within the bound the cached answer may still stand; past it, never.
    const revokedAt = Date.now()
    let status = 200
    while (status === 200 && Date.now() - revokedAt < CACHE_SECONDS * 1000 + 1500) {
      await sleep(100)
      status = (await examples.introspection.get('/orders', access)).status
    }
    t.equal(status, 401, 'refused')
    t.ok(Date.now() - revokedAt <= CACHE_SECONDS * 1000 + 500, 'within the cache bound')
  })

  for (const [mode, example] of Object.entries(examples)) {
    t.test(`${mode}: a DPoP-bound token needs the DPoP scheme and a proof by its key, for this request and token`, async (t) => {
      const key = await keyPair()
      const bound = await srv.post('/token', { grant_type: 'client_credentials', scope: 'orders:read' }, caller.auth, {
        dpop: await proof(key, { htu: `${srv.issuer}/token` }),
      })
      t.equal(bound.status, 200)
      t.equal(bound.body.token_type, 'DPoP')
      const access = bound.body.access_token as string
      const url = `${example.url}/orders`
      const dpop = async (o: Parameters<typeof proof>[1], signer = key) => ({ authorization: `DPoP ${access}`, dpop: await proof(signer, o) })
      const ok = await example.get('/orders', undefined, await dpop({ htm: 'GET', htu: url, ath: ath(access) }))
      t.equal(ok.status, 200, 'with a proof for GET /orders naming the token')

      const asBearer = await example.get('/orders', access)
      t.equal(asBearer.status, 401, 'sent as Bearer: refused')
      t.match(asBearer.challenge, /^DPoP algs="[^"]+", realm="orders-api", error="invalid_token"/)
      t.equal((await example.get('/orders', undefined, { authorization: `DPoP ${access}` })).status, 401, 'no proof')
      const noAth = await example.get('/orders', undefined, await dpop({ htm: 'GET', htu: url }))
      t.equal(noAth.status, 401, 'no ath')
      t.match(noAth.challenge, /^DPoP algs="[^"]+", realm="orders-api", error="invalid_dpop_proof"/)
      t.equal((await example.get('/orders', undefined, await dpop({ htm: 'GET', htu: url, ath: ath('another token') }))).status, 401, 'the ath of another token')
      t.equal((await example.get('/orders', undefined, await dpop({ htm: 'POST', htu: url, ath: ath(access) }))).status, 401, 'another method')
      t.equal((await example.get('/orders', undefined, await dpop({ htm: 'GET', htu: `${example.url}/me`, ath: ath(access) }))).status, 401, 'another URL')
      const other = await keyPair()
      t.equal((await example.get('/orders', undefined, await dpop({ htm: 'GET', htu: url, ath: ath(access) }, other))).status, 401, 'signed by another key')
      const once = await dpop({ htm: 'GET', htu: url, ath: ath(access) })
      t.equal((await example.get('/orders', undefined, once)).status, 200)
      t.equal((await example.get('/orders', undefined, once)).status, 401, 'a proof used twice')

      const unbound = await token(caller, { scope: 'orders:read' })
      t.equal((await example.get('/orders', undefined, { authorization: `DPoP ${unbound}`, dpop: await proof(key, { htm: 'GET', htu: url, ath: ath(unbound) }) })).status, 401, 'an unbound token with the DPoP scheme')
    })
  }

  t.test('introspection: a token issued to the API client itself for another audience does not pass', async (t) => {
    // Tessera shows a client its own tokens whatever their audience: the example checks aud too.
    const own = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['orders:read'], audiences: [OTHER_AUDIENCE], resource_identifiers: [AUDIENCE] })
    const ex = await startExample(t, name, {
      TESSERA_ISSUER: srv.issuer,
      API_AUDIENCE: AUDIENCE,
      TOKEN_CHECK: 'introspection',
      API_CLIENT_ID: own.id,
      API_CLIENT_SECRET: own.secret,
    })
    const access = await token(own, { scope: 'orders:read' })
    t.same((await srv.post('/introspect', { token: access }, own.auth)).body.active, true, 'Tessera says active to its own client')
    t.equal((await ex.get('/orders', access)).status, 401, 'but it is not a token for this API')
  })
}
