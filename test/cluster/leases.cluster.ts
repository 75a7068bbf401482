// What keeps an instance's memory honest when the instance itself is not (src/view/feed.ts): a
// paused instance neither holds a revocation up for longer than its lease nor answers from its
// stale view when it wakes; one whose notification connection is killed stops answering from
// memory and comes back by itself. Postgres only (npm run test:pg); needs `npm run build` first.
import pg from 'pg'
import t from 'tap'
import { bind, Cluster, startInstances } from '../helpers/cluster.js'
import type { ServerProcess } from '../helpers/process.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['lease-admin', 'lease-admin-secret-0123456789']
// src/view/feed.ts LEASE_MS, plus room for a busy machine.
const LEASE_MS = 1500
const SLACK_MS = 1000
// src/view/feed.ts renews six times per lease: b renewed at most this long before it was paused.
const RENEW_MS = 250

const instances = await startInstances(t, 2, ADMIN)
if (instances !== undefined) await runTests(instances[0]!, instances[1]!)

async function runTests(a: ServerProcess, b: ServerProcess) {
  const cluster = new Cluster(ADMIN)
  const { tokens, admin, createClient, introspect, revoke, post } = bind(cluster)
  const app = await createClient(a, { grant_types: ['client_credentials'], audiences: [API] })
  const rs = await createClient(a, { grant_types: ['client_credentials'], resource_identifiers: [API] })
  const cc = { grant_type: 'client_credentials' }

  t.test('an instance paused past its lease holds no revocation up and wakes up knowing its view is stale', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    const { access_token } = await tokens(a, cc, app)
    t.equal((await introspect(b, access_token, rs)).active, true, 'active on b')

    b.child.kill('SIGSTOP')
    const started = Date.now()
    await revoke(a, access_token, app)
    const revokeMs = Date.now() - started
    t.ok(revokeMs < LEASE_MS + SLACK_MS, `the revocation waited ${revokeMs} ms for the paused instance: at most its lease`)
    // And at least what was left of it: b's lease, renewed before the pause, outlives the commit.
    t.ok(revokeMs >= LEASE_MS - RENEW_MS - 250, `the revocation waited ${revokeMs} ms for the paused instance: what was left of its lease`)
    const svc = await createClient(a, { grant_types: ['client_credentials'] })
    const rotated = await admin(a, 'POST', `/admin/clients/${svc[0]}/secret`, {})
    t.equal(rotated.status, 200, 'an admin change is answered while b sleeps too')
    b.child.kill('SIGCONT')

    t.same(await introspect(b, access_token, rs), { active: false }, 'the first answer after waking is not stale')
    t.equal((await post(b, '/token', cc, svc)).status, 401, 'nor is the client secret it had in memory')
    t.ok(await cluster.leased(b), 'b takes a lease again by itself')
    t.same(await introspect(b, access_token, rs), { active: false }, 'and answers from memory correctly')
  })

  t.test('a killed notification connection never leaves an instance answering from a stale view', async (t) => {
    t.ok(await cluster.leased(b), 'b answers from memory')
    for (let round = 0; round < 3; round++) {
      const { access_token } = await tokens(a, cc, app)
      t.equal((await introspect(b, access_token, rs)).active, true, 'active on b')
      const killed = await terminateFeedConnection(b)
      t.equal(killed, 1, "b's notification connection terminated")
      await revoke(a, access_token, app)
      t.same(await introspect(b, access_token, rs), { active: false }, 'inactive on b right after')
      t.ok(await cluster.leased(b), 'b reconnects and takes a lease again by itself')
      const fresh = await tokens(a, cc, app)
      t.equal((await introspect(b, fresh.access_token, rs)).active, true, 'and serves')
    }
  })
}

/** pg_terminate_backend on the instance's notification session; returns how many it ended. */
async function terminateFeedConnection(srv: ServerProcess): Promise<number> {
  const client = new pg.Client({ connectionString: process.env['DATABASE_URL'] })
  await client.connect()
  try {
    const r = await client.query<{ ended: boolean }>(
      'select pg_terminate_backend(pid) as ended from pg_stat_activity where application_name = $1',
      [`tessera feed ${srv.child.pid}`],
    )
    return r.rows.filter((row) => row.ended).length
  } finally {
    await client.end()
  }
}
