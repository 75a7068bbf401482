// Two Tessera processes over one Postgres database, each answering from its memory: a revocation
// or an admin change made through either is seen by the other on the very next request.
// Postgres only (npm run test:pg); needs `npm run build` first.
import t from 'tap'
import { bind, Cluster, startInstances } from '../helpers/cluster.js'
import type { ServerProcess } from '../helpers/process.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['cluster-admin', 'cluster-admin-secret-0123456789']

const instances = await startInstances(t, 2, ADMIN)
if (instances !== undefined) await runTests(instances[0]!, instances[1]!)

async function runTests(a: ServerProcess, b: ServerProcess) {
  const cluster = new Cluster(ADMIN)
  const { tokens, admin, createClient, introspect, revoke, post } = bind(cluster)

  // Made through different instances on purpose. (Set up before the first t.test: tap ends the
  // root test, and so tears the servers down, once its queued subtests are done.)
  const app = await createClient(a, { grant_types: ['password', 'client_credentials', 'refresh_token'], audiences: [API] })
  const rs = await createClient(b, { grant_types: ['client_credentials'], resource_identifiers: [API] })
  const user = await admin(a, 'POST', '/admin/users', { username: 'ivy', password: 'ivy password' })
  const login = (srv: ServerProcess) => tokens(srv, { grant_type: 'password', username: 'ivy', password: 'ivy password' }, app)

  t.test('both instances answer from memory (hold a lease)', async (t) => {
    t.ok(await cluster.leased(a), 'a')
    t.ok(await cluster.leased(b), 'b')
  })

  t.test('an access token revoked on one instance is inactive on the other at once', async (t) => {
    for (const [issuing, revoking, checking] of [
      [a, a, b],
      [a, b, a],
      [b, a, b],
      [b, b, a],
    ] as const) {
      const { access_token } = await tokens(issuing, { grant_type: 'client_credentials' }, app)
      t.equal((await introspect(checking, access_token, app)).active, true, 'active on the other instance before')
      await revoke(revoking, access_token, app)
      t.same(await introspect(checking, access_token, app), { active: false }, 'inactive on the other instance right after')
      t.same(await introspect(checking, access_token, rs), { active: false }, 'to the resource server too')
    }
  })

  t.test('a refresh token revoked on one instance takes its family with it on the other at once', async (t) => {
    const first = await login(a)
    const second = await tokens(b, { grant_type: 'refresh_token', refresh_token: first.refresh_token }, app)
    t.equal((await introspect(a, second.refresh_token, app)).active, true, 'rotated on b, active on a')
    await revoke(a, second.refresh_token, app)
    t.same(await introspect(b, second.refresh_token, app), { active: false }, 'the refresh token')
    t.same(await introspect(b, first.access_token, app), { active: false }, 'the first access token of the family')
    t.same(await introspect(b, second.access_token, rs), { active: false }, 'the latest access token of the family')
    const again = await post(b, '/token', { grant_type: 'refresh_token', refresh_token: second.refresh_token }, app)
    t.equal(again.body?.error, 'invalid_grant', 'and it no longer refreshes on the other instance')
  })

  t.test("the admin's revoke-tokens on one instance holds on the other at once", async (t) => {
    const pw = await login(b)
    t.equal((await admin(a, 'POST', `/admin/users/${user.body.id}/revoke-tokens`)).status, 204)
    t.same(await introspect(b, pw.access_token, app), { active: false }, "the user's access token")
    t.same(await introspect(b, pw.refresh_token, app), { active: false }, "the user's refresh token")

    const cc = await tokens(a, { grant_type: 'client_credentials' }, rs)
    t.equal((await admin(b, 'POST', `/admin/clients/${rs[0]}/revoke-tokens`)).status, 204)
    t.same(await introspect(a, cc.access_token, rs), { active: false }, "the client's token")
  })

  t.test("a client's secret, settings and existence, changed on one instance, hold on the other at once", async (t) => {
    for (const [changing, checking] of [
      [a, b],
      [b, a],
    ] as const) {
      const svc = await createClient(changing, { grant_types: ['client_credentials'], audiences: [API] })
      const cc = { grant_type: 'client_credentials' }
      t.equal((await post(checking, '/token', cc, svc)).status, 200, 'a client made on the other instance works at once')
      const { access_token } = await tokens(checking, cc, svc)

      const rotated = await admin(changing, 'POST', `/admin/clients/${svc[0]}/secret`, {})
      t.equal((await post(checking, '/token', cc, svc)).status, 401, 'the old secret is refused right after rotation')
      const renewed: [string, string] = [svc[0], rotated.body.client_secret]
      t.equal((await post(checking, '/token', cc, renewed)).status, 200, 'the new secret works')

      t.equal((await admin(changing, 'PATCH', `/admin/clients/${rs[0]}`, { resource_identifiers: [] })).status, 200)
      t.same(await introspect(checking, access_token, rs), { active: false }, 'a resource server that no longer serves the audience')
      t.equal((await admin(changing, 'PATCH', `/admin/clients/${rs[0]}`, { resource_identifiers: [API] })).status, 200)
      t.equal((await introspect(checking, access_token, rs)).active, true, 'and serves it again')

      t.equal((await admin(changing, 'PATCH', `/admin/clients/${svc[0]}`, { grant_types: ['password'] })).status, 200)
      t.equal((await post(checking, '/token', cc, renewed)).body?.error, 'unauthorized_client', 'a grant type taken away')

      t.equal((await admin(changing, 'DELETE', `/admin/clients/${svc[0]}`)).status, 204)
      t.equal((await post(checking, '/token', cc, renewed)).status, 401, 'a deleted client cannot authenticate')
      t.same(await introspect(checking, access_token, rs), { active: false }, "a deleted client's token")
    }
  })

  t.test("a user disabled, enabled or deleted on one instance: the user's tokens follow on the other at once", async (t) => {
    const made = await admin(b, 'POST', '/admin/users', { username: 'jack', password: 'jack password' })
    const jack = (srv: ServerProcess) => tokens(srv, { grant_type: 'password', username: 'jack', password: 'jack password' }, app)
    const pw = await jack(a)
    t.equal((await introspect(b, pw.access_token, rs)).active, true)
    t.equal((await admin(a, 'PATCH', `/admin/users/${made.body.id}`, { disabled: true })).status, 200)
    t.same(await introspect(b, pw.access_token, rs), { active: false }, 'disabled')
    t.equal((await admin(b, 'PATCH', `/admin/users/${made.body.id}`, { disabled: false })).status, 200)
    t.equal((await introspect(a, pw.access_token, rs)).active, true, 'enabled again')
    t.equal((await admin(b, 'DELETE', `/admin/users/${made.body.id}`)).status, 204)
    t.same(await introspect(a, pw.access_token, rs), { active: false }, 'deleted')
  })

  // Last: the emergency rotation ends the admin token too.
  t.test('an emergency key rotation on one instance holds on the other at once', async (t) => {
    const old = await tokens(a, { grant_type: 'client_credentials' }, app)
    t.equal((await admin(a, 'POST', '/admin/keys/rotate?immediate=true')).status, 200)
    t.same(await introspect(b, old.access_token, app), { active: false }, 'a token of the removed key')

    // b may not have polled the new key yet; its revocation must not miss the token for that.
    const fresh = await tokens(a, { grant_type: 'client_credentials' }, app)
    t.equal((await introspect(a, fresh.access_token, app)).active, true, 'a token of the new key')
    await revoke(b, fresh.access_token, app)
    t.same(await introspect(a, fresh.access_token, app), { active: false }, 'revoked through the instance that had not seen its key')
  })
}
