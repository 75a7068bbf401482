// Instances whose DATABASE_LISTEN_URL leads nowhere (a pooler that cannot LISTEN, a firewall):
// they never take a lease, read the database on every call, and are just as correct.
// Postgres only (npm run test:pg); needs `npm run build` first.
import t from 'tap'
import { bind, Cluster, startInstances } from '../helpers/cluster.js'
import type { ServerProcess } from '../helpers/process.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['nolisten-admin', 'nolisten-admin-secret-0123456789']

// Port 1: nothing listens there.
const instances = await startInstances(t, 2, ADMIN, { DATABASE_LISTEN_URL: 'postgres://postgres@127.0.0.1:1/test' })
if (instances !== undefined) {
  const [c, d] = instances as [ServerProcess, ServerProcess]
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
