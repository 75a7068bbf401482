// The in-memory view of one instance (src/view/), on either backend: it holds a lease once the
// server is ready, answers the hot paths without the database, applies a change whose
// notification never came from the changes table, and reloads everything when even that is gone.
import { sql } from 'kysely'
import t from 'tap'
import { decodeJwt, startTestServer } from '../helpers/server.js'

const API = 'https://api.example'

const srv = await startTestServer(t)
const app = await srv.createClient({ grant_types: ['client_credentials'], audiences: [API] })
const rs = await srv.createClient({ grant_types: ['client_credentials'], resource_identifiers: [API] })

const clientToken = async () => {
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, app.auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token as string
}
const introspect = (token: string) => srv.post('/introspect', { token }, rs.auth)

/** Polls `check` until it holds, for up to `ms`. */
async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return true
    await new Promise((r) => setTimeout(r, 25))
  }
  return check()
}

t.test('a ready instance holds a lease and says so at /readyz', async (t) => {
  const r = await srv.get('/readyz')
  t.equal(r.status, 200)
  t.match(r.body, { status: 'ready', database: true, signingKey: true, view: 'leased' })
})

t.test('client_credentials and introspection are answered without the database', async (t) => {
  const token = await clientToken()
  t.equal((await introspect(token)).body.active, true, 'verified once, before the database is held up')
  // Every table the two paths could read, locked against reading until the transaction ends
  // (embedded, the transaction holds the only connection, which is stricter still).
  await srv.tessera.db.transaction().execute(async (trx) => {
    await sql`lock table clients, users, grants, refresh_tokens, revoked_access_tokens, signing_keys in access exclusive mode`.execute(trx)
    const timeout = AbortSignal.timeout(1000)
    const [issued, answered] = await Promise.all([
      fetch(`${srv.url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(app.auth.join(':')).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials',
        signal: timeout,
      }),
      fetch(`${srv.url}/introspect`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(rs.auth.join(':')).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: `token=${token}`,
        signal: timeout,
      }),
    ])
    t.equal(issued.status, 200, 'a token issued')
    t.equal(((await answered.json()) as { active: boolean }).active, true, 'a token introspected')
  })
})

/** Writes what a revocation writes, but sends no notification: as if it had been lost. */
async function denyWithoutNotification(token: string, opts: { purgeChange: boolean }) {
  const { jti, exp } = decodeJwt(token).payload
  await srv.tessera.db.transaction().execute(async (trx) => {
    await sql`insert into revoked_access_tokens (jti, expires_at) values (${jti}, to_timestamp(${exp}))`.execute(trx)
    const seq = await sql<{ seq: string }>`update change_head set seq = seq + 1 returning seq`.execute(trx)
    if (!opts.purgeChange) {
      await sql`insert into changes (seq, kind, subject, until) values (${seq.rows[0]!.seq}, 'access_token', ${jti}, to_timestamp(${exp}))`.execute(trx)
    }
  })
}

t.test('a change whose notification was lost is read from the changes table', async (t) => {
  const token = await clientToken()
  t.equal((await introspect(token)).body.active, true)
  await denyWithoutNotification(token, { purgeChange: false })
  // The next renewal sees the sequence move on and catches up from the table.
  t.ok(await eventually(async () => (await introspect(token)).body.active === false, 3000), 'inactive once caught up')
  t.ok(await eventually(async () => srv.tessera.feed.state === 'leased', 3000), 'and leased again')
})

t.test('an instance that cannot find a change it missed reloads its whole view', async (t) => {
  const token = await clientToken()
  t.equal((await introspect(token)).body.active, true)
  await denyWithoutNotification(token, { purgeChange: true })
  t.ok(await eventually(async () => (await introspect(token)).body.active === false, 3000), 'inactive once reloaded')
  t.ok(await eventually(async () => srv.tessera.feed.state === 'leased', 3000), 'and leased again')
  const fresh = await clientToken()
  t.equal((await introspect(fresh)).body.active, true, 'and serving as before')
})

t.test('a client created a moment ago is usable at once, and its changes hold at once', async (t) => {
  const made = await srv.createClient({ grant_types: ['client_credentials'] })
  t.equal((await srv.post('/token', { grant_type: 'client_credentials' }, made.auth)).status, 200, 'new client')
  const rotated = await srv.admin('POST', `/admin/clients/${made.id}/secret`, {})
  t.equal(rotated.status, 200)
  t.equal((await srv.post('/token', { grant_type: 'client_credentials' }, made.auth)).status, 401, 'old secret refused')
  t.equal(
    (await srv.post('/token', { grant_type: 'client_credentials' }, [made.id, rotated.body.client_secret])).status,
    200,
    'new secret accepted',
  )
  t.equal((await srv.admin('PATCH', `/admin/clients/${made.id}`, { grant_types: ['password'] })).status, 200)
  const refused = await srv.post('/token', { grant_type: 'client_credentials' }, [made.id, rotated.body.client_secret])
  t.equal(refused.body?.error, 'unauthorized_client', 'a grant type taken away')
  t.equal((await srv.admin('DELETE', `/admin/clients/${made.id}`)).status, 204)
  t.equal((await srv.post('/token', { grant_type: 'client_credentials' }, [made.id, rotated.body.client_secret])).status, 401, 'deleted')
})
