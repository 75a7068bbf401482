// The life of a signing key, driven by a TestClock: next (published, not signing) -> active ->
// retired (published until its tokens expire) -> removed. `keys.tick()` is the step the timer
// runs; calling it after moving the clock runs the schedule without waiting for it.
import t from 'tap'
import { errors as joseErrors } from 'jose'
import { TestClock, decodeJwt, startTestServer } from '../helpers/server.js'
import { activeKeys, adminToken, jwks, kidsOf, listKeys, privateMembersIn, rotate, storedPrivateKey, verifyAgainstJwks } from './support.js'

const JWKS_MAX_AGE = 5
const ACCESS_TOKEN_TTL = 300
const ROTATION_INTERVAL = 3600
const CLIENT_TTL = 120

const clock = new TestClock(Math.floor(Date.now() / 1000) * 1000)
const srv = await startTestServer(
  t,
  {
    JWKS_MAX_AGE: String(JWKS_MAX_AGE),
    KEY_POLL_INTERVAL_MS: '200',
    KEY_ROTATION_INTERVAL: String(ROTATION_INTERVAL),
    ACCESS_TOKEN_TTL: String(ACCESS_TOKEN_TTL),
  },
  { clock },
)
const keys = srv.tessera.keys
// jwksMaxAge plus two poll intervals, rounded up to whole seconds.
const PREPUBLISH = JWKS_MAX_AGE + 1
// The longest token lifetime (the default, above the client's), the margin and one poll interval.
const RETIRED_FOR = ACCESS_TOKEN_TTL + 60 + 1
const app = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'], access_token_ttl: CLIENT_TTL })

async function token(): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, app.auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token as string
}
const kidOf = (jwt: string): string => decodeJwt(jwt).header.kid
const signingKid = async () => kidOf(await token())
const introspect = async (jwt: string) => (await srv.post('/introspect', { token: jwt }, app.auth)).body
const seconds = (later: string | null, earlier: string | null) => (Date.parse(later!) - Date.parse(earlier!)) / 1000

async function advance(s: number) {
  clock.advance(s)
  await keys.tick()
}

t.test('the first start makes exactly one active key, which signs and is published', async (t) => {
  const list = await listKeys(srv)
  t.equal(list.length, 1)
  const [first] = list
  t.equal(first!.state, 'active')
  t.equal(first!.alg, 'ES256')
  t.equal(first!.activated_at, first!.created_at, 'nothing to pre-publish for: no cache knows this issuer yet')
  t.equal(await signingKid(), first!.kid)
  const set = await jwks(srv)
  t.same(kidsOf(set), [first!.kid])
  t.match(set.keys[0], { kid: first!.kid, alg: 'ES256', use: 'sig', kty: 'EC', crv: 'P-256' })
  t.equal(await activeKeys(srv), 1)
})

t.test('scheduled rotation: published first, active after the window, the old key retired then removed', async (t) => {
  const old = await signingKid()
  const before = await srv.get('/jwks')

  await advance(ROTATION_INTERVAL - 1)
  t.equal((await listKeys(srv)).length, 1, 'not due yet')

  await advance(1)
  const next = (await listKeys(srv)).find((k) => k.state === 'next')
  t.ok(next, 'due: a next key is made')
  t.equal(next!.alg, 'ES256')
  t.equal(seconds(next!.activate_at, next!.created_at), PREPUBLISH, 'activates one cache lifetime and two polls later')
  t.ok(seconds(next!.activate_at, next!.created_at) >= JWKS_MAX_AGE)
  t.same(kidsOf(await jwks(srv)), [old, next!.kid].sort(), 'the next key is in /jwks before it signs')
  t.not((await srv.get('/jwks')).headers.get('etag'), before.headers.get('etag'), 'a new key is a new ETag')
  t.equal(await signingKid(), old, 'the old key still signs')
  t.equal(await activeKeys(srv), 1)

  await advance(PREPUBLISH - 1)
  t.equal(await signingKid(), old, 'still inside the pre-publication window')
  t.equal(await activeKeys(srv), 1)
  // Signed by the old key a second before it retires: the token a resource server must still accept.
  const late = await token()
  t.equal(kidOf(late), old)

  await advance(1)
  const list = await listKeys(srv)
  const retired = list.find((k) => k.kid === old)!
  const active = list.find((k) => k.kid === next!.kid)!
  t.equal(active.state, 'active')
  t.equal(active.activated_at, clock.now().toISOString())
  t.equal(retired.state, 'retired')
  t.equal(retired.retired_at, clock.now().toISOString())
  t.equal(seconds(retired.remove_at, retired.retired_at), RETIRED_FOR, 'published until the longest token lifetime and a margin have passed')
  t.equal(await signingKid(), next!.kid, 'the new key signs')
  t.equal(await activeKeys(srv), 1)
  t.equal(await storedPrivateKey(srv, old), null, 'a retired key never signs again: its private key is erased')
  t.same(kidsOf(await jwks(srv)), [old, next!.kid].sort(), 'the retired key stays published')

  // The token signed before the rotation verifies against /jwks and introspects active until it expires.
  const { protectedHeader } = await verifyAgainstJwks(srv, late, clock.now())
  t.equal(protectedHeader.kid, old)
  t.match(await introspect(late), { active: true, client_id: app.id })
  await advance(CLIENT_TTL - 2)
  await t.resolves(verifyAgainstJwks(srv, late, clock.now()), 'a second before it expires it still verifies')
  t.match(await introspect(late), { active: true })
  await advance(2)
  await t.rejects(verifyAgainstJwks(srv, late, clock.now()), joseErrors.JWTExpired)
  t.same(await introspect(late), { active: false }, 'expired: inactive')

  const removeIn = RETIRED_FOR - CLIENT_TTL
  await advance(removeIn - 1)
  t.equal((await listKeys(srv)).find((k) => k.kid === old)!.state, 'retired', 'a second before remove_at')
  t.ok(kidsOf(await jwks(srv)).includes(old))
  await advance(1)
  const removed = (await listKeys(srv)).find((k) => k.kid === old)!
  t.equal(removed.state, 'removed')
  t.equal(removed.removed_at, clock.now().toISOString())
  t.same(kidsOf(await jwks(srv)), [next!.kid], 'gone from /jwks')
  t.equal(await storedPrivateKey(srv, old), null)
  t.equal(await activeKeys(srv), 1)
  t.equal(await signingKid(), next!.kid)
})

t.test('rotation on demand publishes first, and asking again does not delay it', async (t) => {
  const old = await signingKid()
  const started = await rotate(srv)
  t.equal(started.state, 'next')
  t.equal(seconds(started.activate_at, started.created_at), PREPUBLISH)
  t.ok(kidsOf(await jwks(srv)).includes(started.kid), 'published at once')
  t.equal(await signingKid(), old, 'not signing yet')

  await advance(2)
  const again = await rotate(srv)
  t.equal(again.kid, started.kid, 'the rotation under way is the answer')
  t.equal(again.activate_at, started.activate_at, 'on its original schedule')
  t.equal((await listKeys(srv)).filter((k) => k.state === 'next').length, 1)

  await advance(PREPUBLISH - 2)
  t.equal(await signingKid(), started.kid)
  t.equal((await listKeys(srv)).find((k) => k.kid === old)!.state, 'retired')
  t.equal(await activeKeys(srv), 1)
})

t.test('the schedule counts from the last activation, on-demand ones included', async (t) => {
  const current = await signingKid()
  await advance(ROTATION_INTERVAL - 1)
  t.notOk((await listKeys(srv)).some((k) => k.state === 'next'))
  await advance(1)
  t.ok((await listKeys(srv)).some((k) => k.state === 'next'))
  await advance(PREPUBLISH)
  t.not(await signingKid(), current)
  t.equal(await activeKeys(srv), 1)
})

t.test('/jwks: cacheable no longer than the pre-publication window, with an ETag honoured with 304', async (t) => {
  const r = await srv.get('/jwks')
  t.equal(r.status, 200)
  t.equal(r.headers.get('cache-control'), `public, max-age=${JWKS_MAX_AGE}`)
  const maxAge = Number(/max-age=(\d+)/.exec(r.headers.get('cache-control')!)![1])
  t.ok(maxAge <= keys.prepublishSeconds, 'a cache refreshes before a published key can sign')
  t.match(r.headers.get('content-type'), /^application\/jwk-set\+json/)
  const etag = r.headers.get('etag')!
  t.match(etag, /^"[^"]+"$/, 'a strong ETag')

  const same = await srv.get('/jwks', { 'if-none-match': etag })
  t.equal(same.status, 304)
  t.equal(same.text, '')
  t.equal(same.headers.get('etag'), etag)
  t.equal(same.headers.get('cache-control'), `public, max-age=${JWKS_MAX_AGE}`, 'RFC 9111 §4.3.4: a 304 refreshes the cache lifetime')
  t.equal((await srv.get('/jwks', { 'if-none-match': `W/${etag}` })).status, 304, 'weak comparison (RFC 9110 §13.1.2)')
  t.equal((await srv.get('/jwks', { 'if-none-match': `"other", ${etag}` })).status, 304, 'a list of tags')
  t.equal((await srv.get('/jwks', { 'if-none-match': '"other"' })).status, 200)

  const added = await rotate(srv)
  const changed = await srv.get('/jwks', { 'if-none-match': etag })
  t.equal(changed.status, 200, 'a key was added: the old ETag no longer matches')
  t.not(changed.headers.get('etag'), etag)
  t.ok(kidsOf(changed.body).includes(added.kid))
  await advance(PREPUBLISH)
})

t.test('no private key material in /jwks, /admin/keys or a rotation answer', async (t) => {
  const set = await jwks(srv)
  t.ok(set.keys.length >= 2)
  t.same(privateMembersIn(set), [])
  for (const jwk of set.keys) {
    t.same(Object.keys(jwk).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'], 'the public members of a P-256 key only')
  }
  const list = await srv.admin('GET', '/admin/keys', undefined, await adminToken(srv))
  t.same(privateMembersIn(list.body), [])
  for (const key of list.body.keys) {
    t.same(Object.keys(key).sort(), ['activate_at', 'activated_at', 'alg', 'created_at', 'kid', 'remove_at', 'removed_at', 'retired_at', 'state'])
  }
  const started = await rotate(srv)
  t.same(privateMembersIn(started), [])
  t.notMatch(JSON.stringify(started), /private|BEGIN|sealed/i)
  await advance(PREPUBLISH)
})

t.test('emergency rotation: a new key signs at once, every other key leaves /jwks, their tokens die', async (t) => {
  const before = await token()
  const oldAdmin = await adminToken(srv)
  // A rotation under way, so that a next key is there to be removed too.
  const pending = await rotate(srv)
  const live = (await listKeys(srv)).filter((k) => k.state !== 'removed').map((k) => k.kid)
  t.ok(live.length >= 3, 'active, next and retired keys before')
  t.match(await introspect(before), { active: true })

  const fresh = await rotate(srv, true)
  t.equal(fresh.state, 'active')
  t.equal(fresh.activated_at, clock.now().toISOString())
  t.not(fresh.kid, pending.kid)

  t.same(kidsOf(await jwks(srv)), [fresh.kid], 'only the new key is published')
  const after = await token()
  t.equal(kidOf(after), fresh.kid, 'the new key signs at once')
  await t.resolves(verifyAgainstJwks(srv, after, clock.now()))

  await t.rejects(verifyAgainstJwks(srv, before, clock.now()), joseErrors.JWKSNoMatchingKey, 'no longer verifies')
  t.same(await introspect(before), { active: false }, 'no longer introspects active')
  t.equal((await srv.admin('GET', '/admin/keys', undefined, oldAdmin)).status, 401, 'nor authenticates to the admin API')

  const list = await listKeys(srv)
  for (const kid of live) {
    const key = list.find((k) => k.kid === kid)!
    t.equal(key.state, 'removed', `${key.kid} removed`)
    t.equal(key.removed_at, clock.now().toISOString())
    t.equal(await storedPrivateKey(srv, kid), null, 'private key erased')
  }
  t.equal(await activeKeys(srv), 1)
  t.equal(list.filter((k) => k.state === 'next').length, 0)
})
