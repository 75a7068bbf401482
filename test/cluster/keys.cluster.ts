// Two `tessera serve` processes over one Postgres schema: a rotation made through either is seen
// by the other within seconds, and a scheduled rotation is done once, not once per instance.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, basic, decodeJwt, isolatedDatabase } from '../helpers/server.js'

const ISSUER = 'https://issuer.cluster.test'
const SEEN_WITHIN_MS = 5000

if (process.env['DATABASE_URL'] === undefined) {
  t.pass('Postgres only')
} else {
  await cluster()
}

interface KeyView {
  kid: string
  alg: string
  state: string
  created_at: string
  activated_at: string | null
}

async function cluster() {
  async function tokenFrom(srv: ServerProcess, scope?: string): Promise<string> {
    const res = await fetch(`${srv.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(ADMIN_ID, ADMIN_SECRET) },
      body: new URLSearchParams({ grant_type: 'client_credentials', ...(scope !== undefined && { scope }) }).toString(),
    })
    const body = (await res.json()) as { access_token?: string }
    if (res.status !== 200 || body.access_token === undefined) throw new Error(`token: ${res.status} ${JSON.stringify(body)}`)
    return body.access_token
  }

  async function jwksOf(srv: ServerProcess): Promise<{ text: string; set: JSONWebKeySet; etag: string | null }> {
    const res = await fetch(`${srv.url}/jwks`)
    const text = await res.text()
    return { text, set: JSON.parse(text) as JSONWebKeySet, etag: res.headers.get('etag') }
  }

  async function admin<T>(srv: ServerProcess, method: string, path: string): Promise<T> {
    const res = await fetch(`${srv.adminUrl}${path}`, { method, headers: { authorization: `Bearer ${await tokenFrom(srv, 'admin')}` } })
    const text = await res.text()
    if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${text}`)
    return JSON.parse(text) as T
  }

  async function introspect(srv: ServerProcess, token: string): Promise<unknown> {
    const res = await fetch(`${srv.url}/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(ADMIN_ID, ADMIN_SECRET) },
      body: new URLSearchParams({ token }).toString(),
    })
    return res.json()
  }

  const kidOf = (jwt: string): string => decodeJwt(jwt).header.kid
  const kids = (set: JSONWebKeySet) => set.keys.map((k) => k.kid!).sort()
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

  /** Starts two instances together on a fresh schema (so they race for the first key too). */
  async function pair(env: Record<string, string>): Promise<[ServerProcess, ServerProcess]> {
    const database = (await isolatedDatabase())!
    t.teardown(() => database.drop())
    const shared = {
      DATABASE_URL: database.url,
      KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
      BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
      ISSUER,
      ...env,
    }
    const [a, b] = await Promise.all([spawnServer(t, shared), spawnServer(t, shared)])
    return [a, b]
  }

  /**
   * Polls both instances until their /jwks agree and both sign with `kid`, checking on the way
   * that no token carries the new kid before both /jwks publish it. Resolves to the time it took.
   */
  async function untilBothSignWith(a: ServerProcess, b: ServerProcess, kid: string, since: number, problems: string[]): Promise<number> {
    for (;;) {
      const [ja, jb] = await Promise.all([jwksOf(a), jwksOf(b)])
      const [ta, tb] = await Promise.all([tokenFrom(a), tokenFrom(b)])
      const published = kids(ja.set).includes(kid) && kids(jb.set).includes(kid)
      if ((kidOf(ta) === kid || kidOf(tb) === kid) && !published) problems.push('a token carried the new kid before both /jwks published it')
      if (kidOf(ta) === kid && kidOf(tb) === kid && ja.text === jb.text) {
        // Each instance's token verifies against the other's /jwks.
        await jwtVerify(ta, createLocalJWKSet(jb.set), { issuer: ISSUER, typ: 'at+jwt' })
        await jwtVerify(tb, createLocalJWKSet(ja.set), { issuer: ISSUER, typ: 'at+jwt' })
        return Date.now() - since
      }
      if (Date.now() - since > SEEN_WITHIN_MS) throw new Error(`not seen by both within ${SEEN_WITHIN_MS} ms`)
      await sleep(100)
    }
  }

  const [a, b] = await pair({ JWKS_MAX_AGE: '1', KEY_POLL_INTERVAL_MS: '200' })

  t.test('two instances started together share one active key and serve the same /jwks', async (t) => {
    const keys = await admin<{ keys: KeyView[] }>(a, 'GET', '/admin/keys')
    t.same(keys.keys.map((k) => k.state), ['active'], 'one key, made once')
    const [ja, jb] = await Promise.all([jwksOf(a), jwksOf(b)])
    t.equal(ja.text, jb.text)
    t.equal(ja.etag, jb.etag, 'the same bytes, so the same ETag')
    t.equal(kidOf(await tokenFrom(a)), keys.keys[0]!.kid)
    t.equal(kidOf(await tokenFrom(b)), keys.keys[0]!.kid)
  })

  t.test('a rotation through one instance is seen by the other within 5 seconds', async (t) => {
    const before = await tokenFrom(b)
    const since = Date.now()
    const next = await admin<KeyView>(a, 'POST', '/admin/keys/rotate')
    t.equal(next.state, 'next')
    const problems: string[] = []
    const took = await untilBothSignWith(a, b, next.kid, since, problems)
    t.same(problems, [], 'published everywhere before it signed anywhere')
    t.ok(took <= SEEN_WITHIN_MS, `both sign with the new key after ${took} ms`)
    const [ja, jb] = await Promise.all([jwksOf(a), jwksOf(b)])
    t.same(kids(ja.set), kids(jb.set))
    t.equal(kids(ja.set).length, 2, 'the retired key is still published')
    await t.resolves(jwtVerify(before, createLocalJWKSet(ja.set), { issuer: ISSUER, typ: 'at+jwt' }), 'an older token still verifies')
    t.match(await introspect(a, before), { active: true })
  })

  t.test('an emergency rotation through one instance is seen by the other within 5 seconds', async (t) => {
    const before = await tokenFrom(a)
    const since = Date.now()
    const fresh = await admin<KeyView>(b, 'POST', '/admin/keys/rotate?immediate=true')
    t.equal(fresh.state, 'active')
    t.same(await introspect(a, before), { active: false }, 'tokens of removed keys are inactive everywhere at once')
    const problems: string[] = []
    const took = await untilBothSignWith(a, b, fresh.kid, since, problems)
    t.ok(took <= SEEN_WITHIN_MS, `both sign with the new key after ${took} ms`)
    const [ja, jb] = await Promise.all([jwksOf(a), jwksOf(b)])
    t.same(kids(ja.set), [fresh.kid], 'every other key has left /jwks')
    t.same(kids(jb.set), [fresh.kid])
    await t.rejects(jwtVerify(before, createLocalJWKSet(ja.set), { issuer: ISSUER, typ: 'at+jwt' }))
  })

  t.test('a scheduled rotation due on both instances is done once', async (t) => {
    const interval = 2
    const [c, d] = await pair({ KEY_ROTATION_INTERVAL: String(interval), JWKS_MAX_AGE: '0', KEY_POLL_INTERVAL_MS: '100' })
    // Long enough for a few rotations: each takes the interval plus a one-second pre-publication.
    await sleep(8000)
    const { keys } = await admin<{ keys: KeyView[] }>(c, 'GET', '/admin/keys')
    const created = keys.map((k) => Date.parse(k.created_at)).sort((x, y) => x - y)
    t.ok(created.length >= 3, `${created.length} keys: the schedule ran`)
    const gaps = created.slice(1).map((at, i) => (at - created[i]!) / 1000)
    t.ok(
      gaps.every((gap) => gap >= interval),
      `each key made one rotation interval after the previous one, never twice for one due date (gaps ${gaps.join(', ')} s)`,
    )
    t.ok(keys.filter((k) => k.state === 'next').length <= 1)
    t.equal(keys.filter((k) => k.state === 'active').length, 1)
    const madeBy = [c, d].map((s) => s.logs.filter((l) => l.msg === 'next signing key published' || l.msg === 'first signing key created').length)
    t.equal(madeBy[0]! + madeBy[1]!, keys.length, `every key made by exactly one instance (${madeBy.join(' + ')})`)
  })

  t.test('no key material in any log line', async (t) => {
    for (const srv of [a, b]) {
      const text = JSON.stringify(srv.logs)
      t.notMatch(text, /PRIVATE KEY|"d":"|private_key/)
    }
  })
}
