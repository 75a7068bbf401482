// Group commit of revocations (src/tokens/revocation-batch.ts): concurrent /revoke calls on one
// instance share transactions, and still each caller returns only once every leased instance has
// applied its revocation. Two instances: `a` plain, `b` with its DATABASE_LISTEN_URL through a
// stalling proxy. The first batch is held at the change_head row lock from a side session, so the
// calls behind it queue. Postgres only; needs `npm run build`.
import pg from 'pg'
import t, { type Test } from 'tap'
import { bind, Cluster, instanceEnv } from '../helpers/cluster.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { decodeJwt, isolatedDatabase } from '../helpers/server.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['batch-admin', 'batch-admin-secret-0123456789']
// src/view/feed.ts: LEASE_MS.
const LEASE_MS = 1500
const N = 20

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const proxy = await TcpProxy.forDatabase(database.url)
  const env = instanceEnv(database.url, ADMIN)
  const a = await spawnServer(t, env)
  const b = await spawnServer(t, { ...env, DATABASE_LISTEN_URL: proxy.url(database.url) })
  t.teardown(async () => {
    proxy.resume()
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
  const app = await createClient(a, { grant_types: ['client_credentials', 'password', 'refresh_token'], audiences: [API] })
  const rs = await createClient(a, { grant_types: ['client_credentials'], resource_identifiers: [API] })

  const made = await admin(a, 'POST', '/admin/users', { username: 'ida', password: 'ida password' })
  if (made.status !== 201) throw new Error(`creating the user: ${made.status} ${made.text}`)
  const login = () => tokens(a, { grant_type: 'password', username: 'ida', password: 'ida password' }, app)

  const session = async () => {
    const client = new pg.Client({ connectionString: databaseUrl })
    await client.connect()
    const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid
    t.teardown(() => client.end())
    return { client, pid }
  }
  const side = (await session()).client
  const observer = (await session()).client
  const waitingFor = async (pid: number) =>
    (await observer.query<{ n: number }>('select count(*)::int as n from pg_stat_activity where $1 = any(pg_blocking_pids(pid))', [pid])).rows[0]!.n > 0
  const until = async (what: string, check: () => Promise<boolean>, ms = 10_000) => {
    const end = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  /** A batch of a's, waiting to record its changes behind the side session's lock on the head. */
  const batchWaits = async () =>
    (
      await observer.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
         where query like '%update change_head set seq = seq +%' and wait_event_type = 'Lock'`,
      )
    ).rows[0]!.n > 0
  /** How many transactions recorded the changes of these jtis. */
  const commits = async (jtis: string[]) =>
    (
      await observer.query<{ n: number }>('select count(distinct xmin::text)::int as n from changes where subject = any($1::text[])', [jtis])
    ).rows[0]!.n

  /**
   * N concurrent revocations at a, the first held at the head lock until the rest have been sent;
   * each caller's return time, and b's answer for its token asked right after it returned.
   */
  const storm = async (t: Test, whileHeld: () => void) => {
    const issued = await Promise.all(Array.from({ length: N }, () => tokens(a, { grant_type: 'client_credentials' }, app)))
    const all = issued.map((i) => i.access_token)
    for (const token of all.slice(0, 3)) t.equal((await introspect(b, token, rs)).active, true, 'active on b before')
    await side.query('begin')
    await side.query('select seq from change_head for update')
    const answers: { returned: number; active: unknown }[] = []
    const calls = all.map(async (token) => {
      await revoke(a, token, app)
      const returned = Date.now()
      const { active } = await introspect(b, token, rs)
      answers.push({ returned, active })
    })
    await until('the first batch to wait for the head', batchWaits)
    // The other calls are on their way already; give them a moment to reach a's queue.
    await new Promise((r) => setTimeout(r, 200))
    whileHeld()
    const released = Date.now()
    await side.query('commit')
    await Promise.all(calls)
    return { jtis: all.map((tk) => decodeJwt(tk).payload.jti as string), answers, released }
  }

  t.test('concurrent revocations share commits, and each returns once b, live, has applied it', async (t) => {
    t.ok(await cluster.leased(a), 'a answers from memory')
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { jtis, answers } = await storm(t, () => undefined)
    const n = await commits(jtis)
    t.equal(answers.length, N, 'every call returned')
    t.ok(n > 0 && n < N, `${N} revocations in ${n} commits`)
    t.ok(n <= 3, `the queued calls went together (${n} commits)`)
    t.same(
      answers.filter((x) => x.active !== false),
      [],
      'b answered no for each token right after its revocation returned',
    )
    t.ok(await cluster.leased(b), 'b still answers from memory')
  })

  t.test("a batch's callers wait for a leased instance that has not applied it", async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { jtis, answers, released } = await storm(t, () => proxy.stall())
    const n = await commits(jtis)
    t.ok(n > 0 && n < N, `${N} revocations in ${n} commits`)
    const earliest = Math.min(...answers.map((x) => x.returned)) - released
    // b cannot acknowledge: every batch committed after the release waits out a lease length.
    t.ok(earliest >= LEASE_MS, `the first caller returned ${earliest} ms after the release: once b's lease had run out`)
    t.same(
      answers.filter((x) => x.active !== false),
      [],
      'b, which never heard of them, answered no for each',
    )
    proxy.resume()
    t.ok(await cluster.leased(b), 'b takes its lease again')
    t.same(answers.length, N, 'every call returned')
  })

  t.test('a batch that fails (here: a deadlock with another writer) is retried one by one, and no caller fails', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const [first, one, two] = [await login(), await login(), await login()]
    const grant = (x: { access_token: string }) => decodeJwt(x.access_token).payload.sid as string
    // The batch locks grants in id order: it holds the lower one while it waits for the higher.
    const [lower, higher] = [grant(one), grant(two)].sort()
    const s0 = await session()
    const s2 = await session()
    await s0.client.query('begin')
    await s0.client.query('select id from grants where id = $1 for update', [grant(first)])
    await s2.client.query('begin')
    await s2.client.query('select id from grants where id = $1 for update', [higher])
    // The first call's batch waits for s0; the next two queue behind it and go together.
    const calls = [first, one, two].map((x) => revoke(a, x.refresh_token!, app).then(() => 'ok', (err: Error) => err.message))
    await until('the first batch to wait for s0', () => waitingFor(s0.pid))
    await new Promise((r) => setTimeout(r, 200))
    await s0.client.query('commit')
    // The second batch has locked the lower grant and waits for the higher, which s2 holds; s2
    // now asks for the lower: a cycle, and Postgres aborts the batch, which began waiting first.
    await until('the second batch to wait for s2', () => waitingFor(s2.pid))
    const s2got = await s2.client.query('select id from grants where id = $1 for update', [lower]).then(
      () => 'locked',
      (err: Error) => err.message,
    )
    t.equal(s2got, 'locked', 'the batch, not s2, was chosen to abort')
    await s2.client.query(s2got === 'locked' ? 'commit' : 'rollback')
    t.same(await Promise.all(calls), ['ok', 'ok', 'ok'], 'every call succeeded')
    for (const x of [first, one, two]) t.same(await introspect(b, x.access_token, rs), { active: false }, 'b answers no')
  })
}
