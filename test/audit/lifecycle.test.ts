// The life of an audit record: kept for AUDIT_RETENTION_DAYS, written even when the server stops
// right after the event, retried when a write fails, and dropped (with a warning and a metric,
// never a failed request) when the database keeps refusing it.
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { sql } from 'kysely'
import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.js'
import { openDatabase } from '../../src/db/connect.js'
import { createLogger } from '../../src/log.js'
import { startServer } from '../../src/server.js'
import { ADMIN_ID, ADMIN_SECRET, TestClock, basic, isolatedDatabase, startTestServer } from '../helpers/server.js'
import { atLeast, auditPage } from './support.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const lines: any[] = []
const sink = new Writable({
  write(chunk, _encoding, done) {
    for (const line of chunk.toString().split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line))
    done()
  },
})
const clock = new TestClock(Math.floor(Date.now() / 1000) * 1000)
const srv = await startTestServer(t, { AUDIT_RETENTION_DAYS: '2' }, { clock, log: createLogger('info', sink) })
const DAY = 86_400

/** An admin change is recorded once its answer is sent, which may be just after the client has it. */
async function recorded(): Promise<void> {
  for (let i = 0; i < 200 && srv.tessera.audit.pending === 0; i++) await sleep(10)
}

async function metric(name: string): Promise<number> {
  const r = await srv.admin('GET', '/metrics')
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(r.text)
  return m === null ? 0 : Number(m[1])
}

t.test('AUDIT_RETENTION_DAYS: 90 by default, a whole number of days from 1', async (t) => {
  t.equal(loadConfig({}).auditRetentionDays, 90)
  t.equal(loadConfig({ AUDIT_RETENTION_DAYS: '7' }).auditRetentionDays, 7)
  t.equal(loadConfig({ AUDIT_RETENTION_DAYS: '' }).auditRetentionDays, 90, 'empty is unset')
  for (const bad of ['0', '-1', '1.5', 'a week', '36501']) {
    t.throws(() => loadConfig({ AUDIT_RETENTION_DAYS: bad }), ConfigError, bad)
  }
})

t.test('events older than the retention are deleted; younger ones stay', async (t) => {
  const old = await srv.createUser('old-news', 'a long enough password')
  await atLeast(srv, { user: old })
  clock.advance(DAY)
  const recent = await srv.createUser('recent-news', 'a long enough password')
  await atLeast(srv, { user: recent })

  clock.advance(DAY - 1)
  t.equal(await srv.tessera.audit.purge(), 0, 'two days less a second: nothing is old enough')
  clock.advance(1)
  t.equal(await srv.tessera.audit.purge(), 0, 'exactly two days: kept')
  clock.advance(1)
  t.equal(await srv.tessera.audit.purge(), 2, 'past two days: the first user and the first key')
  t.same((await auditPage(srv, { user: old })).events, [])
  t.equal((await auditPage(srv, { user: recent })).events.length, 1)
  t.same((await auditPage(srv, { type: 'key.created' })).events, [])
})

t.test('a write that fails is tried again at the next interval', async (t) => {
  await srv.tessera.audit.flush()
  const written = await metric('tessera_audit_events_written_total')
  await sql`alter table audit_events rename to audit_events_away`.execute(srv.tessera.db)
  const id = await srv.createUser('written-late', 'a long enough password')
  await recorded()
  await srv.tessera.audit.flush()
  t.equal(srv.tessera.audit.pending, 1, 'kept after a failed write')
  t.ok(lines.some((l) => l.level === 40 && l.msg === 'audit events not written yet; will retry'))
  await sql`alter table audit_events_away rename to audit_events`.execute(srv.tessera.db)
  const [event] = await atLeast(srv, { user: id })
  t.match(event, { type: 'admin.change', details: { route: '/admin/users', status: 201 } })
  t.equal(await metric('tessera_audit_events_written_total'), written + 1)
})

t.test('a database that keeps refusing costs the events, never a request', async (t) => {
  await srv.tessera.audit.flush()
  const dropped = await metric('tessera_audit_events_dropped_total')
  await sql`alter table audit_events rename to audit_events_away`.execute(srv.tessera.db)
  try {
    const id = await srv.createUser('never-on-record', 'a long enough password')
    t.ok(id, 'the change itself succeeds')
    await recorded()
    // The timer tries too: wait until the retries are used up, however they were spent.
    for (let i = 0; i < 100 && srv.tessera.audit.pending > 0; i++) {
      await srv.tessera.audit.flush()
      await sleep(20)
    }
    t.equal(srv.tessera.audit.pending, 0)
    const warning = lines.find((l) => l.msg === 'audit events dropped: the database did not take them')
    t.match(warning, { level: 40, component: 'audit', dropped: 1 })
    t.match(warning.err, /audit_events/)
    t.equal((await srv.get('/healthz')).status, 200)
    t.equal((await srv.admin('GET', `/admin/users/${id}`)).status, 200)
    t.ok(lines.some((l) => l.msg === 'audit' && l.audit.user_id === id), 'the log still has the event')
  } finally {
    await sql`alter table audit_events_away rename to audit_events`.execute(srv.tessera.db)
  }
  t.equal(await metric('tessera_audit_events_dropped_total'), dropped + 1)
  const later = await srv.createUser('on-record-again', 'a long enough password')
  t.equal((await atLeast(srv, { user: later })).length, 1, 'and the next ones are written again')
})

t.test('events recorded just before a clean shutdown are in the database after it', async (t) => {
  const database = await isolatedDatabase()
  if (database !== undefined) t.teardown(() => database.drop())
  const dataDir = database === undefined ? t.testdir({}) : 'memory://'
  const env = {
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_PORT: '0',
    DATA_DIR: dataDir,
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    LOG_LEVEL: 'silent',
    ...(database !== undefined && { DATABASE_URL: database.url, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }),
  }
  const config = loadConfig(env)
  const running = await startServer(config, { log: createLogger('silent'), announce: () => undefined })
  let closed = false
  t.teardown(() => (closed ? undefined : running.close()))
  const audit = running.tessera.audit
  const token = await fetch(`${running.url}/token`, {
    method: 'POST',
    headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=admin',
  }).then((r) => r.json() as Promise<{ access_token: string }>)
  await audit.flush()
  const created = await fetch(`${running.adminUrl}/admin/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token.access_token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'last-words', password: 'a long enough password' }),
  }).then((r) => r.json() as Promise<{ id: string }>)
  for (let i = 0; i < 3; i++) audit.record({ type: 'key.removed', kids: [`shutdown-${i}`] })
  t.ok(audit.pending >= 3, 'buffered, not written yet')
  await running.close()
  closed = true

  const reopened = await openDatabase({ databaseUrl: config.databaseUrl, dataDir, log: createLogger('silent') })
  try {
    const rows = await reopened.db.selectFrom('audit_events').select('details').where('type', '=', 'key.removed').execute()
    t.same(rows.map((r) => r.details['kids']).sort(), [['shutdown-0'], ['shutdown-1'], ['shutdown-2']])
    const change = await reopened.db.selectFrom('audit_events').selectAll().where('user_id', '=', created.id).execute()
    t.equal(change.length, 1, 'and the admin change answered just before the stop')
  } finally {
    await reopened.close()
  }
})
