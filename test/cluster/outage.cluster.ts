// Postgres cut away under load, then restored, through a TCP proxy the test owns: never a 500;
// what cannot be answered is a 503 temporarily_unavailable with Retry-After; a revocation answered
// 200 took effect; and the instance comes back (database, view, lease) by itself, without a
// restart. Postgres only (npm run test:pg); needs `npm run build` first.
import t from 'tap'
import { bind, Cluster, instanceEnv, type Answer } from '../helpers/cluster.js'
import { spawnServer } from '../helpers/process.js'
import { isolatedDatabase } from '../helpers/server.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['outage-admin', 'outage-admin-secret-0123456789']

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const proxy = await TcpProxy.forDatabase(database.url)
  // A short timeout, so that requests that need the database fail fast while it is gone.
  const srv = await spawnServer(t, instanceEnv(proxy.url(database.url), ADMIN, { DATABASE_TIMEOUT_MS: '1000' }))
  t.teardown(async () => {
    await srv.stop()
    await proxy.close()
    await database.drop()
  })

  const cluster = new Cluster(ADMIN)
  const { tokens, admin, createClient, introspect, post } = bind(cluster)
  const app = await createClient(srv, { grant_types: ['password', 'client_credentials', 'refresh_token'], audiences: [API] })
  const rs = await createClient(srv, { grant_types: ['client_credentials'], resource_identifiers: [API] })
  // Set-up checks throw rather than assert: a root-level assertion followed by more awaiting lets
  // tap end the root test before the subtest below is created.
  const created = await admin(srv, 'POST', '/admin/users', { username: 'olga', password: 'olga password' })
  if (created.status !== 201) throw new Error(`creating the user: ${created.status} ${created.text}`)
  const login = { grant_type: 'password', username: 'olga', password: 'olga password' }
  const live = await tokens(srv, { grant_type: 'client_credentials' }, app)

  t.test('under load, the database cut away and restored: no 500, and revocations answered 200 hold', async (t) => {
    const statuses = new Map<string, Map<number, number>>()
    const unavailable: Answer[] = []
    const revokedOk: string[] = []
    const count = (what: string, r: Answer) => {
      const byStatus = statuses.get(what) ?? new Map<number, number>()
      byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1)
      statuses.set(what, byStatus)
      if (r.status === 503) unavailable.push(r)
    }
    let refresh = (await tokens(srv, login, app)).refresh_token
    let running = true
    const loop = async (what: string, step: () => Promise<void>) => {
      while (running) {
        try {
          await step()
        } catch (err) {
          count(`${what}: ${(err as Error).message}`, { status: 0, headers: new Headers(), body: undefined, text: '' })
        }
      }
    }
    const loops = [
      loop('client_credentials', async () => count('client_credentials', await post(srv, '/token', { grant_type: 'client_credentials' }, app))),
      loop('introspection', async () => count('introspection', await post(srv, '/introspect', { token: live.access_token }, rs))),
      loop('password', async () => count('password', await post(srv, '/token', login, app))),
      loop('refresh_token', async () => {
        const r = await post(srv, '/token', { grant_type: 'refresh_token', refresh_token: refresh }, app)
        count('refresh_token', r)
        if (r.status === 200) refresh = r.body.refresh_token
        // A refresh whose answer was lost to the outage may have rotated: start a new family.
        else if (r.status === 400) refresh = (await post(srv, '/token', login, app)).body?.refresh_token ?? refresh
      }),
      loop('revoke', async () => {
        const issued = await post(srv, '/token', { grant_type: 'client_credentials' }, app)
        if (issued.status !== 200) return
        const r = await post(srv, '/revoke', { token: issued.body.access_token }, app)
        count('revoke', r)
        if (r.status === 200) revokedOk.push(issued.body.access_token)
      }),
    ]
    await sleep(1000)
    await proxy.cut()
    await sleep(3000)
    await proxy.restore()
    await sleep(2000)
    running = false
    await Promise.all(loops)

    const report = Object.fromEntries([...statuses].map(([k, v]) => [k, Object.fromEntries(v)]))
    t.comment(JSON.stringify(report))
    for (const [what, byStatus] of statuses) {
      for (const status of byStatus.keys()) {
        t.ok([200, 503].includes(status) || (what === 'refresh_token' && status === 400), `${what}: only 200 or 503, saw ${status}`)
      }
    }
    t.ok(unavailable.length > 0, 'the outage was noticed')
    for (const r of unavailable.slice(0, 20)) {
      t.same(r.body, { error: 'temporarily_unavailable', error_description: r.body?.error_description }, '503 is §5.2 JSON')
      t.equal(r.headers.get('cache-control'), 'no-store')
      t.ok(Number(r.headers.get('retry-after')) > 0, 'with Retry-After')
    }

    t.ok(await cluster.leased(srv, 15_000), 'the instance holds its lease again, without a restart')
    const ready = await fetch(`${srv.url}/readyz`)
    t.equal(ready.status, 200, 'and is ready')
    for (const token of revokedOk) {
      t.same(await introspect(srv, token, app), { active: false }, 'a revocation answered 200 took effect')
    }
    t.ok(revokedOk.length > 0, 'some revocations were answered 200')
    t.equal((await post(srv, '/token', login, app)).status, 200, 'a password login works again')
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
