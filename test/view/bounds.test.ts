// The view's bounds (VIEW_CLIENTS, VIEW_REVOCATIONS; src/view/view.ts, src/view/revocations.ts),
// set tiny so that every lookup crosses them: a client that fell out of the cache, a deny-list
// entry or a revoked grant that a full set dropped, on a change applied or on a full reload, is
// still answered exactly over HTTP (inactive for what was revoked, active for what is live),
// because the view answers UNKNOWN for it and the database is read.
import { sql } from 'kysely'
import t from 'tap'
import { parseMetrics } from '../helpers/metrics.js'
import { TestClock, decodeJwt, startTestServer } from '../helpers/server.js'

const API = 'https://api.example'

const clock = new TestClock()
const srv = await startTestServer(t, { VIEW_CLIENTS: '2', VIEW_REVOCATIONS: '2' }, { clock })
const view = srv.tessera.view
const rs = await srv.createClient({ grant_types: ['client_credentials'], resource_identifiers: [API] })
const app = await srv.createClient({ grant_types: ['password', 'client_credentials', 'refresh_token'], audiences: [API] })

async function clientToken(auth: [string, string]): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token as string
}
const active = async (token: string) => {
  const r = await srv.post('/introspect', { token }, rs.auth)
  if (r.status !== 200) throw new Error(`introspect: ${r.status} ${r.text}`)
  return r.body.active as boolean
}
const revoke = async (token: string) => {
  const r = await srv.post('/revoke', { token }, app.auth)
  if (r.status !== 200) throw new Error(`revoke: ${r.status} ${r.text}`)
}
const expMs = (token: string) => (decodeJwt(token).payload.exp as number) * 1000

/** Polls `check` until it holds, for up to `ms`. */
async function eventually(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return true
    await new Promise((r) => setTimeout(r, 25))
  }
  return check()
}

t.beforeEach(async () => {
  // Every subtest starts leased, so that what it checks is the memory path and its misses.
  if (!(await eventually(() => srv.tessera.feed.state === 'leased', 5000))) throw new Error('not leased')
})

t.test('a deny-list entry the full set dropped: its token is still inactive, and live tokens active', async (t) => {
  // Distinct expiries, one second of clock apart at least; the first ends soonest.
  const tokens: string[] = []
  for (let i = 0; i < 3; i++) {
    tokens.push(await clientToken(app.auth))
    clock.advance(10)
  }
  const [first, second, third] = tokens as [string, string, string]
  const liveNewer = await clientToken(app.auth)
  clock.advance(-25)
  const liveOlder = await clientToken(app.auth)
  clock.advance(25)
  for (const token of tokens) await revoke(token)

  t.equal(view.size.deniedJtis, 1, 'three revoked, bound 2: dropped to 90% of it, rounded down')
  t.equal(view.spilledUntil.deniedJtis, expMs(second), 'up to the second expiry dropped')
  t.equal(await active(first), false, 'dropped entry: read from the database')
  t.equal(await active(second), false, 'dropped entry: read from the database')
  t.equal(await active(third), false, 'kept entry')
  t.equal(await active(liveOlder), true, 'live, expiring before what was dropped: the database says active')
  t.equal(await active(liveNewer), true, 'live, expiring after: memory says active')
  t.equal(srv.tessera.feed.state, 'leased', 'all of it while leased')
})

t.test('a revoked grant the full set dropped: its access token is still inactive, a live grant active', async (t) => {
  await srv.createUser('bounded', 'a long enough password 1')
  const logins = []
  for (let i = 0; i < 4; i++) {
    const r = await srv.post('/token', { grant_type: 'password', username: 'bounded', password: 'a long enough password 1', scope: 'read' }, app.auth)
    t.equal(r.status, 200)
    logins.push(r.body as { access_token: string; refresh_token: string })
    clock.advance(10)
  }
  for (const l of logins.slice(0, 3)) await revoke(l.refresh_token)
  t.equal(view.size.revokedGrants, 1, 'three revoked, bound 2')
  t.ok(view.spilledUntil.revokedGrants > expMs(logins[3]!.access_token), 'every access token of a grant now expires before what was dropped')
  for (const [i, l] of logins.slice(0, 3).entries()) t.equal(await active(l.access_token), false, `revoked grant ${i + 1}`)
  t.equal(await active(logins[3]!.access_token), true, 'live grant')
})

t.test('a client that fell out of the cache is read again: its revoke-all holds, a live client answers', async (t) => {
  const other = await srv.createClient({ grant_types: ['client_credentials'], audiences: [API] })
  const third = await srv.createClient({ grant_types: ['client_credentials'], audiences: [API] })
  const revokedToken = await clientToken(other.auth)
  clock.advance(1)
  t.equal((await srv.admin('POST', `/admin/clients/${other.id}/revoke-tokens`)).status, 204)
  // Two other clients (and the admin's) pass through a cache of two.
  const live = await clientToken(third.auth)
  t.equal(await active(live), true, 'live token of a third client')
  t.equal(await active(await clientToken(app.auth)), true)
  t.ok(view.size.clients <= 2, 'the cache holds two clients at most')
  t.equal(view.client(other.id), undefined, 'the revoked client is not cached')
  t.equal(await active(revokedToken), false, 'its token is inactive: read from the database')
  t.equal(await active(live), true, 'and the live one still active')
  clock.advance(1)
  const fresh = await clientToken(other.auth)
  t.equal(await active(fresh), true, 'a token issued after the revoke-all is active')
})

t.test('a reload that finds more revocations than the bound keeps the latest-ending, and the rest reads the database', async (t) => {
  const tokens: string[] = []
  for (let i = 0; i < 3; i++) {
    tokens.push(await clientToken(app.auth))
    clock.advance(10)
  }
  const live = await clientToken(app.auth)
  // Written as revocations write them, but with the change left out of the table: the feed
  // cannot catch up and lists everything again.
  await srv.tessera.db.transaction().execute(async (trx) => {
    for (const token of tokens) {
      const { jti, exp } = decodeJwt(token).payload
      await sql`insert into revoked_access_tokens (jti, expires_at) values (${jti}, to_timestamp(${exp}))`.execute(trx)
    }
    await sql`update change_head set seq = seq + 1`.execute(trx)
  })
  t.ok(await eventually(() => view.spilledUntil.deniedJtis === expMs(tokens[0]!), 5000), 'reloaded: the soonest ending one left out')
  t.ok(await eventually(() => srv.tessera.feed.state === 'leased', 5000), 'and leased again')
  t.ok(view.size.deniedJtis <= 2)
  for (const [i, token] of tokens.entries()) t.equal(await active(token), false, `revoked token ${i + 1}`)
  t.equal(await active(live), true, 'live token')
})

t.test('the metrics show each set against its limit', async (t) => {
  const r = await srv.admin('GET', '/metrics')
  t.equal(r.status, 200)
  const m = parseMetrics(r.text)
  t.same(
    Object.fromEntries(['clients', 'users', 'denied_jtis', 'revoked_grants'].map((set) => [set, m.value('tessera_view_entries_limit', { set })])),
    { clients: 2, users: 50_000, denied_jtis: 2, revoked_grants: 2 },
  )
  t.equal(m.value('tessera_view_entries', { set: 'denied_jtis' }), view.size.deniedJtis)
  t.equal(m.value('tessera_view_entries', { set: 'revoked_grants' }), view.size.revokedGrants)
  t.ok(m.value('tessera_view_entries', { set: 'clients' })! <= 2)
})
