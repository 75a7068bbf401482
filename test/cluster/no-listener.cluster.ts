// Instances whose DATABASE_LISTEN_URL leads nowhere (a pooler that cannot LISTEN, a firewall):
// they never take a lease, read the database on every call, and are just as correct.
// Postgres only (npm run test:pg); needs `npm run build` first.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { bind, Cluster } from '../helpers/cluster.js'
import { spawnServer } from '../helpers/process.js'
import { isolatedDatabase } from '../helpers/server.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['nolisten-admin', 'nolisten-admin-secret-0123456789']

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const env = {
    DATABASE_URL: database.url,
    // Port 1: nothing listens there.
    DATABASE_LISTEN_URL: 'postgres://postgres@127.0.0.1:1/test',
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN[0],
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN[1],
    ISSUER: 'http://tessera.cluster.test',
  }
  const c = await spawnServer(t, env)
  const d = await spawnServer(t, env)
  t.teardown(async () => {
    await c.stop()
    await d.stop()
    await database.drop()
  })

  const cluster = new Cluster(ADMIN)
  const { tokens, admin, createClient, introspect, revoke, post } = bind(cluster)

  t.test('without a listener an instance holds no lease, and is ready', async (t) => {
    for (const srv of [c, d]) {
      const ready = await fetch(`${srv.url}/readyz`)
      t.equal(ready.status, 200)
      t.match(await ready.json(), { status: 'ready', view: 'disconnected' })
    }
  })

  t.test('revocations and admin changes on one instance hold on the other at once', async (t) => {
    const app = await createClient(c, { grant_types: ['client_credentials', 'password'], audiences: [API] })
    const rs = await createClient(d, { grant_types: ['client_credentials'], resource_identifiers: [API] })
    for (const [changing, checking] of [
      [c, d],
      [d, c],
    ] as const) {
      const { access_token } = await tokens(checking, { grant_type: 'client_credentials' }, app)
      t.equal((await introspect(checking, access_token, rs)).active, true)
      await revoke(changing, access_token, app)
      t.same(await introspect(checking, access_token, rs), { active: false }, 'revoked')

      const svc = await createClient(changing, { grant_types: ['client_credentials'] })
      t.equal((await post(checking, '/token', { grant_type: 'client_credentials' }, svc)).status, 200, 'a new client')
      t.equal((await admin(changing, 'POST', `/admin/clients/${svc[0]}/secret`, {})).status, 200)
      t.equal((await post(checking, '/token', { grant_type: 'client_credentials' }, svc)).status, 401, 'its old secret, refused')
    }
    t.equal(await cluster.viewState(c), 'disconnected', 'still no lease')
  })
}
