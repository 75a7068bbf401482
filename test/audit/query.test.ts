// GET /admin/audit: who may read it, its filters, its paging, and what it says to bad values.
import t from 'tap'
import { ADMIN_ID, TestClock, assertOAuthError, startTestServer } from '../helpers/server.js'
import { atLeast, auditPage, eventually, freshAdminToken } from './support.js'

const clock = new TestClock(Math.floor(Date.now() / 1000) * 1000)
const srv = await startTestServer(t, {}, { clock })
const start = clock.now()
const at = (secondsAfterStart: number) => new Date(start.getTime() + secondsAfterStart * 1000).toISOString()

// A known history, a minute apart: a client made, three users made, one user's tokens revoked,
// a key rotation started.
const app = await srv.createClient()
clock.advance(60)
const users: string[] = []
for (const name of ['ursula', 'victor', 'wendy']) {
  users.push(await srv.createUser(name, `${name} password`))
  clock.advance(60)
}
async function adminPost(path: string): Promise<void> {
  const r = await srv.admin('POST', path, undefined, await freshAdminToken(srv))
  if (r.status >= 300) throw new Error(`${path}: ${r.status} ${r.text}`)
}
await adminPost(`/admin/users/${users[0]}/revoke-tokens`)
clock.advance(60)
await adminPost('/admin/keys/rotate')
// 5 creations and revoke-tokens, 6 admin changes in all; a token.revoked; a key.rotated; and the
// first key, made at the start.
const everything = await atLeast(srv, {}, 9)

const idsOf = (events: any[]) => events.map((e) => e.id)

t.test('newest first; each event once, with every field', async (t) => {
  t.equal(everything.length, 9)
  const times = everything.map((e) => Date.parse(e.at))
  t.same(times, [...times].sort((a, b) => b - a), 'newest first')
  t.equal(new Set(idsOf(everything)).size, 9)
  for (const e of everything) {
    t.same(Object.keys(e).sort(), ['address', 'admin_client_id', 'at', 'client_id', 'details', 'id', 'type', 'user_id', 'username', 'username_hash'].sort())
  }
  t.same(
    everything.map((e) => e.type),
    ['admin.change', 'key.rotated', 'admin.change', 'token.revoked', 'admin.change', 'admin.change', 'admin.change', 'admin.change', 'key.created'],
    'an admin change is recorded once answered: after what it did, at the same moment',
  )
})

t.test('filters: type, user, client, since and until, alone and together', async (t) => {
  const q = async (query: Record<string, string>) => (await auditPage(srv, query)).events
  t.same((await q({ type: 'token.revoked' })).map((e) => e.user_id), [users[0]])
  t.same(
    (await q({ type: 'key.rotated,token.revoked' })).map((e) => e.type),
    ['key.rotated', 'token.revoked'],
    'several types, comma-separated',
  )
  t.equal((await q({ type: 'admin.change' })).length, 6)

  const ursula = await q({ user: users[0]! })
  t.same(ursula.map((e) => [e.type, e.details.route ?? e.details.via]), [
    ['admin.change', '/admin/users/:id/revoke-tokens'],
    ['token.revoked', 'admin'],
    ['admin.change', '/admin/users'],
  ])
  t.same(idsOf(await q({ user: users[0]!.toUpperCase() })), idsOf(ursula), 'a user id in any case')
  t.same(await q({ user: '00000000-0000-4000-8000-000000000000' }), [], 'a user with no events')
  t.same((await q({ type: 'admin.change', user: users[0]! })).length, 2, 'filters combine')

  t.same((await q({ client: app.id })).map((e) => e.details.route), ['/admin/clients'], 'events about the client')
  t.equal((await q({ client: ADMIN_ID })).length, 7, 'and those it made as an admin')
  t.same(await q({ client: 'nobody' }), [])

  t.same((await q({ since: at(60), until: at(120) })).map((e) => e.user_id), [users[0]], 'since inclusive, until exclusive')
  t.equal((await q({ since: at(60) })).length, 7)
  t.equal((await q({ until: at(60) })).length, 2, 'the client and the first key')
  t.same(await q({ since: at(60), until: at(60) }), [], 'an empty range')
  t.equal((await q({ since: start.toISOString().slice(0, 10) })).length, 9, 'a date alone is midnight UTC')
  t.equal((await q({ since: at(60).replace('Z', '+00:00') })).length, 7, 'an offset')
})

t.test('paging: limit and next walk every event once, filters kept', async (t) => {
  for (const [query, expected] of [
    [{}, everything],
    [{ type: 'admin.change' }, everything.filter((e) => e.type === 'admin.change')],
  ] as const) {
    for (const limit of [1, 2, 4]) {
      const seen: any[] = []
      let after: string | undefined
      for (let pages = 0; pages < 50; pages++) {
        const page = await auditPage(srv, { ...query, limit: String(limit), ...(after !== undefined && { after }) })
        t.ok(page.events.length <= limit)
        seen.push(...page.events)
        if (page.next === undefined) break
        t.type(page.next, 'string')
        after = page.next
      }
      t.same(idsOf(seen), idsOf(expected), `limit ${limit}, ${JSON.stringify(query)}`)
    }
  }
  const r = await srv.admin('GET', '/admin/audit', undefined, await freshAdminToken(srv))
  t.equal(r.status, 200)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.notOk('next' in r.body, 'the default page (100) holds them all')
})

t.test('events recorded at the same moment page apart by the order they were stored', async (t) => {
  // Five changes in the same millisecond of the test clock.
  clock.advance(1)
  const made: string[] = []
  for (let i = 0; i < 5; i++) made.push(await srv.createUser(`same-moment-${i}`, 'a long enough password'))
  const since = clock.now().toISOString()
  const all = await atLeast(srv, { since, type: 'admin.change' }, 5)
  t.same(all.map((e) => e.user_id), [...made].reverse())
  const seen: any[] = []
  let after: string | undefined
  do {
    const page = await auditPage(srv, { since, type: 'admin.change', limit: '2', ...(after !== undefined && { after }) })
    seen.push(...page.events)
    after = page.next
  } while (after !== undefined)
  t.same(idsOf(seen), idsOf(all))
})

t.test('the username filter finds login events by the name as typed, in any case', async (t) => {
  // Recorded as the token endpoint records them (src/audit/events.ts).
  const user = { id: users[1]!, username: 'victor' }
  srv.tessera.audit.record({ type: 'login.failed', address: '192.0.2.1', clientId: app.id, username: 'Victor', user, reason: 'invalid_credentials' })
  srv.tessera.audit.record({ type: 'login.succeeded', address: '192.0.2.1', clientId: app.id, user })
  srv.tessera.audit.record({ type: 'login.failed', address: '192.0.2.2', clientId: app.id, username: 'nobody-by-this-name' })
  const victor = await eventually(srv, { username: 'VICTOR' }, (es) => es.length >= 2)
  t.same(victor.map((e) => e.type), ['login.succeeded', 'login.failed'])
  t.match(victor[1], { user_id: users[1], username: 'victor', client_id: app.id, address: '192.0.2.1', details: { reason: 'invalid_credentials' } })
  const unknown = await auditPage(srv, { username: 'Nobody-By-This-Name' })
  t.equal(unknown.events.length, 1)
  t.match(unknown.events[0], { type: 'login.failed', user_id: null, username: null, address: '192.0.2.2' })
  t.match(unknown.events[0].username_hash, /^[\w-]{22}$/, 'a keyed hash of what was typed')
  t.not(unknown.events[0].username_hash, victor[0].username_hash)
  t.same((await auditPage(srv, { username: 'someone-else' })).events, [])
  t.same((await auditPage(srv, { type: 'login.failed', user: users[1]! })).events.length, 1)
})

t.test('bad filter values are 400 invalid_request, never 500', async (t) => {
  const token = await freshAdminToken(srv)
  for (const q of [
    'limit=0',
    'limit=-1',
    'limit=abc',
    'limit=2.5',
    'limit=1001',
    'limit=1&limit=2',
    'after=',
    'after=abc',
    'after=1',
    'after=1.5',
    'after=99999999999999999-1',
    'after=1-99999999999999999999',
    'after=1-9223372036854775808',
    'type=',
    'type=login',
    'type=admin.change,',
    'type=admin.change&type=key.rotated',
    'user=',
    'user=not-a-uuid',
    'user=1%27%20or%20%271%27%3D%271',
    'client=',
    `client=${'x'.repeat(501)}`,
    'username=',
    'since=',
    'since=yesterday',
    'since=2024-13-01',
    'since=2024-01-01T25:00:00Z',
    'since=1714557600',
    'since=2024-05-01T12:00:00',
    `since=${at(60)}&until=${at(0)}`,
    'until=%00',
  ]) {
    assertOAuthError(t, await srv.admin('GET', `/admin/audit?${q}`, undefined, token), 400, 'invalid_request')
  }
  // Odd but valid: answered.
  for (const q of ['after=0-0', 'since=0001-01-01', 'until=9999-12-31T23:59:59.999999999Z', `client=${encodeURIComponent("' or 1=1 --")}`, 'limit=1000']) {
    t.equal((await srv.admin('GET', `/admin/audit?${q}`, undefined, token)).status, 200, q)
  }
})

t.test('only an admin token reads it: 401 without one, 403 without the admin scope', async (t) => {
  assertOAuthError(t, await srv.admin('GET', '/admin/audit', undefined, null), 401, 'invalid_token')
  assertOAuthError(t, await srv.admin('GET', '/admin/audit', undefined, 'not.a.token'), 401, 'invalid_token')
  const reader = await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read', 'metrics'], audiences: [`${srv.issuer}/admin`] })
  for (const scope of ['read', 'metrics']) {
    const token = (await srv.post('/token', { grant_type: 'client_credentials', scope }, reader.auth)).body.access_token
    const r = await srv.admin('GET', '/admin/audit', undefined, token)
    assertOAuthError(t, r, 403, 'insufficient_scope')
    t.notMatch(r.text, /events/)
  }
})
