// GET /metrics as Prometheus scrapes it: each metric an operator's dashboard and alerts read
// (src/metrics.ts; the README's Metrics table) moves when the thing it counts happens.
import t from 'tap'
import { parseMetrics, type Scrape } from '../helpers/metrics.js'
import { ADMIN_ID, TestClock, backend, startTestServer } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(
  t,
  {
    // The bootstrap admin (whose token the helper fetches first) and one more client get series
    // of their own; every other client counts as "other".
    METRICS_CLIENT_SERIES: '2',
    LOGIN_FREE_FAILURES: '1',
    CLIENT_AUTH_FAILURES: '2',
    HASH_CONCURRENCY: '1',
    HASH_QUEUE: '7',
    KEY_ROTATION_INTERVAL: '86400',
  },
  { clock },
)

async function scrape(): Promise<Scrape> {
  const r = await srv.admin('GET', '/metrics')
  if (r.status !== 200) throw new Error(`metrics: ${r.status} ${r.text}`)
  return parseMetrics(r.text)
}

/** How much each of these samples grew while `action` ran (0 for a sample still absent). */
async function growth(samples: Array<[string, Record<string, string>]>, action: () => Promise<unknown>): Promise<number[]> {
  const before = await scrape()
  await action()
  const after = await scrape()
  return samples.map(([name, labels]) => (after.value(name, labels) ?? 0) - (before.value(name, labels) ?? 0))
}

const named = await srv.createClient()
const unnamed = await srv.createClient()
await srv.createUser('marta', 'marta long password')

t.test('requests: a count and a latency histogram per route, method and status', async (t) => {
  const jwks = { method: 'GET', route: '/jwks', status: '200' }
  const missing = { method: 'GET', route: 'unknown', status: '404' }
  const [ok, notFound] = await growth(
    [
      ['tessera_http_request_duration_seconds_count', jwks],
      ['tessera_http_request_duration_seconds_count', missing],
    ],
    async () => {
      await srv.get('/jwks')
      await srv.get('/jwks')
      await srv.get('/no/such/route')
    },
  )
  t.equal(ok, 2, 'two answers of GET /jwks')
  t.equal(notFound, 1, 'an unknown path is one route, "unknown": its paths do not become series')
  const s = await scrape()
  t.equal(s.types.get('tessera_http_request_duration_seconds'), 'histogram')
  t.equal(s.value('tessera_http_request_duration_seconds_bucket', { ...jwks, le: '+Inf' }), s.value('tessera_http_request_duration_seconds_count', jwks))
  t.ok(s.find('tessera_http_request_duration_seconds_bucket', { ...jwks, le: '10' }).length === 1, 'buckets reach 10 s')
})

t.test('tokens: per grant, and per client with the clients past the bound as "other"', async (t) => {
  const cc = { grant_type: 'client_credentials' }
  const [byGrant, byNamed, byOther, byPassword] = await growth(
    [
      ['tessera_tokens_issued_total', cc],
      ['tessera_tokens_issued_by_client_total', { ...cc, client_id: named.id }],
      ['tessera_tokens_issued_by_client_total', { ...cc, client_id: 'other' }],
      ['tessera_tokens_issued_by_client_total', { grant_type: 'password', client_id: named.id }],
    ],
    async () => {
      for (const client of [named, named, unnamed]) {
        t.equal((await srv.post('/token', { grant_type: 'client_credentials' }, client.auth)).status, 200)
      }
      const r = await srv.post('/token', { grant_type: 'password', username: 'marta', password: 'marta long password' }, named.auth)
      t.equal(r.status, 200)
      // A refused request issues nothing.
      t.equal((await srv.post('/token', { grant_type: 'client_credentials', scope: 'nope' }, named.auth)).status, 400)
    },
  )
  t.equal(byGrant, 3)
  t.equal(byNamed, 2, 'the first clients seen have their own series')
  t.equal(byOther, 1, 'one past the bound is counted as other')
  t.equal(byPassword, 1)
  const s = await scrape()
  t.same(s.find('tessera_tokens_issued_by_client_total', { client_id: unnamed.id }), [], 'and has no series of its own')
  t.ok((s.value('tessera_tokens_issued_by_client_total', { client_id: ADMIN_ID, grant_type: 'client_credentials' }) ?? 0) >= 1)
  const clientIds = new Set(s.find('tessera_tokens_issued_by_client_total').map((x) => x.labels['client_id']))
  t.same([...clientIds].sort(), [ADMIN_ID, named.id, 'other'].sort(), 'two client ids and other, whatever comes')
})

t.test('introspections by result, and revocations', async (t) => {
  const token = (await srv.post('/token', { grant_type: 'client_credentials' }, named.auth)).body.access_token as string
  const [active, inactive, revocations] = await growth(
    [
      ['tessera_introspections_total', { active: 'true' }],
      ['tessera_introspections_total', { active: 'false' }],
      ['tessera_revocation_requests_total', {}],
    ],
    async () => {
      await srv.post('/introspect', { token }, named.auth)
      await srv.post('/revoke', { token }, named.auth)
      await srv.post('/introspect', { token }, named.auth)
      await srv.post('/introspect', { token: 'not a token' }, named.auth)
    },
  )
  t.equal(active, 1)
  t.equal(inactive, 2)
  t.equal(revocations, 1)
})

t.test('a revocation is a change the feed applies: the applied sequence moves, the lag returns to 0', async (t) => {
  const before = await scrape()
  const token = (await srv.post('/token', { grant_type: 'client_credentials' }, named.auth)).body.access_token as string
  t.equal((await srv.post('/revoke', { token }, named.auth)).status, 200)
  const after = await scrape()
  t.ok(after.value('tessera_change_feed_applied_sequence')! > before.value('tessera_change_feed_applied_sequence')!, 'one more change applied')
  t.equal(after.value('tessera_change_feed_lag'), 0)
  const view = (await srv.get('/readyz')).body.view as string
  t.equal(after.value('tessera_view_state', { state: view }), 1, `the state /readyz names (${view}) is 1`)
  t.equal(
    after.find('tessera_view_state').reduce((sum, x) => sum + x.value, 0),
    1,
    'and every other state 0',
  )
})

t.test('security events by type and reason: failed logins, throttling, client authentication', async (t) => {
  const event = (type: string, reason: string): [string, Record<string, string>] => ['tessera_security_events_total', { type, reason }]
  const password = (username: string, pw: string, auth = named.auth) => srv.post('/token', { grant_type: 'password', username, password: pw }, auth)
  const [unknownUser, wrongPassword, throttled, badClient, clientThrottled, succeeded] = await growth(
    [
      event('login.failed', 'unknown_user'),
      event('login.failed', 'invalid_password'),
      event('login.throttled', 'username'),
      event('client.authentication_failed', 'invalid_credentials'),
      event('client.throttled', 'client'),
      event('login.succeeded', 'none'),
    ],
    async () => {
      t.equal((await password('nobody', 'some long password')).status, 400)
      t.equal((await password('marta', 'not her password')).status, 400)
      // LOGIN_FREE_FAILURES=1: marta's one failure delays the next attempt, which is not checked.
      t.equal((await password('marta', 'marta long password')).status, 429)
      clock.advance(5)
      t.equal((await password('marta', 'marta long password')).status, 200)
      t.equal((await srv.post('/token', { grant_type: 'client_credentials' }, [unnamed.id, 'wrong secret'])).status, 401)
      // CLIENT_AUTH_FAILURES=2: the second failure for the client id is answered 429.
      t.equal((await srv.post('/token', { grant_type: 'client_credentials' }, [unnamed.id, 'wrong secret'])).status, 429)
    },
  )
  t.equal(unknownUser, 1, 'login.failed unknown_user')
  t.equal(wrongPassword, 1, 'login.failed invalid_password')
  t.equal(throttled, 1, 'login.throttled by username')
  t.equal(badClient, 2, 'client.authentication_failed, both times')
  t.equal(clientThrottled, 1, 'client.throttled by client id')
  t.equal(succeeded, 1)
})

t.test('signing keys: counts by state, ages, and the rotation interval they are held to', async (t) => {
  let s = await scrape()
  t.equal(s.value('tessera_signing_keys', { state: 'active' }), 1)
  t.equal(s.value('tessera_signing_keys', { state: 'next' }), 0)
  t.equal(s.value('tessera_signing_key_rotation_interval_seconds'), 86400)
  t.equal(s.value('tessera_signing_key_prepublish_seconds'), srv.tessera.keys.prepublishSeconds)
  const age = s.value('tessera_signing_key_age_seconds', { state: 'active' })!
  t.ok(age >= 0, 'the active key has an age')
  t.same(s.find('tessera_signing_key_age_seconds', { state: 'next' }), [], 'no next key, no age')
  clock.advance(3600)
  s = await scrape()
  t.ok(Math.abs(s.value('tessera_signing_key_age_seconds', { state: 'active' })! - (age + 3600)) < 5, 'an hour older by the server clock')

  t.equal((await srv.admin('POST', '/admin/keys/rotate')).status, 200)
  s = await scrape()
  t.equal(s.value('tessera_signing_keys', { state: 'next' }), 1, 'a rotation publishes a next key')
  t.ok(s.value('tessera_signing_key_age_seconds', { state: 'next' })! < 5, 'published just now')
})

t.test('readiness, the database pool, the hash queue, the audit buffer, the event loop', async (t) => {
  const s = await scrape()
  t.equal(s.value('tessera_ready'), 1, 'ready, as /readyz says')
  t.equal((await srv.get('/readyz')).status, 200)
  t.equal(s.value('tessera_password_hash_queue_limit', { state: 'running' }), 1, 'HASH_CONCURRENCY')
  t.equal(s.value('tessera_password_hash_queue_limit', { state: 'waiting' }), 7, 'HASH_QUEUE')
  t.equal(s.value('tessera_password_hash_queue', { state: 'waiting' }), 0)
  t.type(s.value('tessera_audit_events_pending'), 'number')
  t.type(s.value('tessera_nodejs_eventloop_lag_seconds'), 'number', 'event-loop lag (prom-client default metrics)')
  for (const name of ['tessera_db_pool_connections', 'tessera_db_pool_max_connections', 'tessera_db_pool_waiting_queries']) {
    t.equal(s.types.get(name), 'gauge', `${name} is declared on every backend`)
  }
  if (backend === 'postgres') {
    t.equal(s.value('tessera_db_pool_max_connections'), 10)
    const idle = s.value('tessera_db_pool_connections', { state: 'idle' })!
    const inUse = s.value('tessera_db_pool_connections', { state: 'in_use' })!
    t.ok(idle + inUse >= 1 && idle + inUse <= 10, 'connections open, within the pool size')
    t.equal(s.value('tessera_db_pool_waiting_queries'), 0)
  } else {
    t.same(s.find('tessera_db_pool_connections'), [], 'the embedded database has no pool to report')
  }
})
