// The orders of events in which a write returned and an instance still answered "yes" from its
// memory (docs/freshness.md), each forced rather than hoped for: row locks held from a side
// session, an instance's notification connection stalled behind a TCP proxy, an instance whose
// wall clock runs ahead. Two instances: `a` plain, `b` with its clock 5 s ahead and its
// DATABASE_LISTEN_URL through the proxy. Postgres only (npm run test:pg); needs `npm run build`.
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { bind, Cluster, instanceEnv } from '../helpers/cluster.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { decodeJwt, isolatedDatabase } from '../helpers/server.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['fresh-admin', 'fresh-admin-secret-0123456789']
// src/view/feed.ts: LEASE_MS, and the renewal period (LEASE_MS / 6).
const LEASE_MS = 1500
const RENEW_MS = 250
const SLACK_MS = 1000
const clockOffset = join(import.meta.dirname, '..', 'helpers', 'clock-offset.mjs')

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const proxy = await TcpProxy.forDatabase(database.url)
  const env = instanceEnv(database.url, ADMIN)
  const a = await spawnServer(t, env)
  const b = await spawnServer(t, { ...env, DATABASE_LISTEN_URL: proxy.url(database.url), CLOCK_OFFSET_MS: '5000' }, { nodeArgs: ['--import', clockOffset] })
  t.teardown(async () => {
    proxy.resume()
    b.child.kill('SIGCONT')
    await b.stop()
    await a.stop()
    await proxy.close()
    await database.drop()
  })
  await runTests(database.url, proxy, a, b)
}

async function runTests(databaseUrl: string, proxy: TcpProxy, a: ServerProcess, b: ServerProcess) {
  const cluster = new Cluster(ADMIN)
  const { tokens, admin, createClient, introspect, revoke } = bind(cluster)
  const app = await createClient(a, { grant_types: ['password', 'client_credentials', 'refresh_token'], audiences: [API] })
  const rs = await createClient(a, { grant_types: ['client_credentials'], resource_identifiers: [API] })
  const made = await admin(a, 'POST', '/admin/users', { username: 'fay', password: 'fay password' })
  if (made.status !== 201) throw new Error(`creating the user: ${made.status} ${made.text}`)
  const login = (srv: ServerProcess) => tokens(srv, { grant_type: 'password', username: 'fay', password: 'fay password' }, app)
  const cc = { grant_type: 'client_credentials' }

  const side = async () => {
    const client = new pg.Client({ connectionString: databaseUrl })
    await client.connect()
    const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid
    return { client, pid }
  }
  const observer = await side()
  t.teardown(() => observer.client.end())
  /** How many sessions wait for a lock held by one of `pids`. */
  const blockedBy = async (pids: number[]) =>
    (
      await observer.client.query<{ n: number }>(
        'select count(*)::int as n from pg_stat_activity where pg_blocking_pids(pid) && $1::int[]',
        [pids],
      )
    ).rows[0]!.n
  const until = async (what: string, check: () => Promise<boolean> | boolean, ms = 10_000) => {
    const end = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
  const feedPid = async (srv: ServerProcess) =>
    (
      await observer.client.query<{ pid: number }>('select pid from pg_stat_activity where application_name = $1', [
        `tessera feed ${srv.child.pid}`,
      ])
    ).rows[0]?.pid
  const head = async () => Number((await observer.client.query('select seq from change_head')).rows[0].seq)
  const settledFlag = <T>(p: Promise<T>) => {
    const s = { done: false, p: p.finally(() => (s.done = true)) }
    return s
  }

  t.test('both instances answer from memory', async (t) => {
    t.ok(await cluster.leased(a), 'a')
    t.ok(await cluster.leased(b), 'b')
  })

  t.test("a refresh that commits while the client's revoke-tokens waits is revoked on every instance", async (t) => {
    const first = await login(a)
    // b has the user in its view (an introspection offers it), so that it answers from memory.
    t.equal((await introspect(b, first.access_token, rs)).active, true, 'active on b before')
    const locker = await side()
    t.teardown(() => locker.client.end())
    // A login's share lock on the client holds the revocation after it took its time.
    await locker.client.query('begin')
    await locker.client.query('select 1 from clients where client_id = $1 for share', [app[0]])
    const revoking = admin(a, 'POST', `/admin/clients/${app[0]}/revoke-tokens`)
    await until('the revocation to wait for the lock', async () => (await blockedBy([locker.pid])) === 1)
    const refreshed = await tokens(b, { grant_type: 'refresh_token', refresh_token: first.refresh_token }, app)
    await locker.client.query('commit')
    t.equal((await revoking).status, 204)
    for (const [name, srv] of [
      ['a', a],
      ['b', b],
    ] as const) {
      t.same(await introspect(srv, refreshed.access_token, rs), { active: false }, `the refreshed access token, on ${name}`)
      t.same(await introspect(srv, refreshed.refresh_token, app), { active: false }, `the refreshed refresh token, on ${name}`)
    }
  })

  t.test("a client_credentials token from an instance whose clock is ahead falls to the client's revoke-tokens", async (t) => {
    const svc = await createClient(a, { grant_types: ['client_credentials'], audiences: [API] })
    const early = await tokens(b, cc, svc)
    t.ok(decodeJwt(early.access_token).payload.iat * 1000 > Date.now() + 3000, "b's clock is ahead")
    t.equal((await introspect(a, early.access_token, rs)).active, true, 'active before')
    t.equal((await admin(a, 'POST', `/admin/clients/${svc[0]}/revoke-tokens`)).status, 204)
    t.same(await introspect(a, early.access_token, rs), { active: false }, 'inactive on a')
    t.same(await introspect(b, early.access_token, rs), { active: false }, 'inactive on b')
    const later = await tokens(b, cc, svc)
    t.equal((await introspect(a, later.access_token, rs)).active, true, 'a token issued after the revocation is active')
    t.equal((await admin(b, 'POST', `/admin/clients/${svc[0]}/revoke-tokens`)).status, 204)
    t.same(await introspect(a, later.access_token, rs), { active: false }, 'and falls to the next one, made through b')
  })

  t.test('a revocation waits for a leased instance that has not applied it, and then it answers no', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { access_token } = await tokens(a, cc, app)
    t.equal((await introspect(b, access_token, rs)).active, true, 'active on b')
    proxy.stall()
    const stalled = Date.now()
    await revoke(a, access_token, app)
    const waited = Date.now() - stalled
    // b renewed at most one renewal period before the stall; its lease runs a lease length from then.
    t.ok(waited >= LEASE_MS - RENEW_MS - 250, `the revocation waited ${waited} ms: until b's lease ran out`)
    t.ok(waited < LEASE_MS + SLACK_MS, `and no longer than the lease (${waited} ms)`)
    t.same(await introspect(b, access_token, rs), { active: false }, 'b, which never heard of it, answers no')
    proxy.resume()
    t.ok(await cluster.leased(b), 'b takes its lease again')
    t.same(await introspect(b, access_token, rs), { active: false }, 'and answers no from memory')
  })

  t.test('a repeated revocation, which records nothing, still waits for the instances', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { access_token } = await tokens(a, cc, app)
    t.equal((await introspect(b, access_token, rs)).active, true, 'active on b')
    const before = await head()
    proxy.stall()
    const first = settledFlag(revoke(a, access_token, app))
    await until('the first revocation to commit', async () => (await head()) > before)
    const again = Date.now()
    await revoke(a, access_token, app)
    t.ok(Date.now() - again >= 250, `the retry waited ${Date.now() - again} ms`)
    t.same(await introspect(b, access_token, rs), { active: false }, 'b answers no once the retry has its answer')
    await first.p
    proxy.resume()
    t.ok(await cluster.leased(b), 'b takes its lease again')
  })

  t.test('a repeated revocation of a refresh token, which records nothing, still waits for the instances', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const pw = await login(a)
    t.equal((await introspect(b, pw.access_token, rs)).active, true, 'active on b')
    const before = await head()
    proxy.stall()
    const first = settledFlag(revoke(a, pw.refresh_token, app))
    await until('the first revocation to commit', async () => (await head()) > before)
    await revoke(a, pw.refresh_token, app)
    t.same(await introspect(b, pw.access_token, rs), { active: false }, "b answers no for the grant's access token once the retry has its answer")
    await first.p
    proxy.resume()
    t.ok(await cluster.leased(b), 'b takes its lease again')
  })

  t.test("a forward step of the database's clock does not hide a live lease from writers", async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { access_token } = await tokens(a, cc, app)
    t.equal((await introspect(b, access_token, rs)).active, true, 'active on b')
    proxy.stall()
    // What b's row looks like to a writer after the database's clock jumped an hour ahead.
    await observer.client.query(
      "update instances set lease_expires_at = lease_expires_at - interval '1 hour', renewed_at = renewed_at - interval '1 hour' where pid = $1",
      [b.child.pid],
    )
    const stalled = Date.now()
    await revoke(a, access_token, app)
    const waited = Date.now() - stalled
    t.ok(waited >= LEASE_MS - RENEW_MS - 250, `the revocation waited ${waited} ms: by the writer's own clock`)
    t.same(await introspect(b, access_token, rs), { active: false }, 'b answers no')
    proxy.resume()
    t.ok(await cluster.leased(b), 'b takes its lease again')
  })

  t.test('an instance that learns of a change it never heard of stops answering from memory at once', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { access_token } = await tokens(a, cc, app)
    t.equal((await introspect(b, access_token, rs)).active, true, 'active on b')
    const { jti, exp } = decodeJwt(access_token).payload
    // A revocation whose notification is lost: recorded, but never sent.
    const writer = await side()
    const holder = await side()
    t.teardown(() => Promise.all([writer.client.end(), holder.client.end()]))
    await writer.client.query('begin')
    await writer.client.query('insert into revoked_access_tokens (jti, expires_at) values ($1, to_timestamp($2))', [jti, exp])
    await writer.client.query(
      "with h as (update change_head set seq = seq + 1 returning seq) insert into changes (seq, kind, subject, until) select seq, 'access_token', $1, to_timestamp($2) from h",
      [jti, exp],
    )
    await writer.client.query('commit')
    // b learns of it at its next renewal, and cannot read it from the changes table yet.
    await holder.client.query('begin')
    await holder.client.query('lock table changes in access exclusive mode')
    const bFeed = await feedPid(b)
    await until('b to try to catch up', async () => {
      const r = await observer.client.query('select 1 from pg_stat_activity where pid = $1 and $2 = any(pg_blocking_pids(pid))', [bFeed, holder.pid])
      return r.rows.length === 1
    })
    t.same(await introspect(b, access_token, rs), { active: false }, 'b reads the database instead of its stale view')
    await holder.client.query('commit')
    t.ok(await cluster.leased(b), 'b catches up and takes its lease again')
    t.same(await introspect(b, access_token, rs), { active: false }, 'and answers no from memory')
  })

  t.test('a renewal that read the head before a commit cannot grant a lease the writer did not wait for', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { access_token } = await tokens(a, cc, app)
    const pid = await feedPid(b)
    t.ok(pid !== undefined, "b's notification session")
    const id = (await observer.client.query('select id from instances where pid = $1', [b.child.pid])).rows[0].id
    const locker = await side()
    t.teardown(() => locker.client.end())
    await locker.client.query('begin')
    await locker.client.query('select 1 from instances where id = $1 for update', [id])
    const renewedAt = async () => (await observer.client.query('select renewed_at::text as at from instances where id = $1', [id])).rows[0].at as string
    // b's next renewal takes its snapshot, then waits for the row; b hears nothing more after it
    // (its notification session is stalled), so what that renewal writes stays to be read.
    await until("b's renewal to wait for its row", async () => (await blockedBy([locker.pid])) === 1)
    const before = await renewedAt()
    proxy.stall()
    const revoking = settledFlag(revoke(a, access_token, app))
    // Either the revocation returns (it did not wait for b's renewal), or it waits behind it.
    await until('the revocation to return or wait', async () => revoking.done || (await blockedBy([locker.pid, pid!])) >= 2)
    await locker.client.query('commit')
    await revoking.p
    const returned = (await observer.client.query('select now() as at')).rows[0].at as Date
    const seq = await head()
    await until("b's renewal to commit", async () => (await renewedAt()) !== before)
    const row = (
      await observer.client.query<{ acked: number; valid: boolean }>(
        'select acked_seq::float8 as acked, lease_expires_at > $2 as valid from instances where id = $1',
        [id, returned],
      )
    ).rows[0]!
    t.notOk(row.valid && row.acked < seq, `no lease outlives the revocation's return unless it acknowledged it (acked ${row.acked} of ${seq}, valid ${row.valid})`)
    proxy.resume()
    t.ok(await cluster.leased(b), 'b takes its lease again')
    t.same(await introspect(b, access_token, rs), { active: false }, 'b answers no')
  })
}
