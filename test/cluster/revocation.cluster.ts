// Two Tessera processes over one Postgres database: a revocation made through either is seen by
// the other's introspection on the very next request. Postgres only (npm run test:pg); needs
// `npm run build` first.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { basic, isolatedDatabase } from '../helpers/server.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['cluster-admin', 'cluster-admin-secret-0123456789']

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const env = {
    DATABASE_URL: database.url,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN[0],
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN[1],
    // One issuer for both: each would otherwise name itself after its own port.
    ISSUER: 'http://tessera.cluster.test',
  }
  // Started one after the other so that the first has migrated and made the first key.
  const a = await spawnServer(t, env)
  const b = await spawnServer(t, env)
  t.teardown(async () => {
    await a.stop()
    await b.stop()
    await database.drop()
  })
  await runTests(a, b)
}

async function runTests(a: ServerProcess, b: ServerProcess) {
  type Client = [string, string]
  const post = async (srv: ServerProcess, path: string, form: Record<string, string>, auth: Client) => {
    const res = await fetch(`${srv.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(...auth) },
      body: new URLSearchParams(form).toString(),
    })
    const text = await res.text()
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
  }
  const tokens = async (srv: ServerProcess, form: Record<string, string>, auth: Client) => {
    const r = await post(srv, '/token', form, auth)
    if (r.status !== 200) throw new Error(`token: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body as { access_token: string; refresh_token: string }
  }
  const adminToken = (await tokens(a, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN)).access_token
  const admin = async (srv: ServerProcess, method: string, path: string, body?: unknown) => {
    const res = await fetch(`${srv.adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    })
    const text = await res.text()
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
  }
  const createClient = async (srv: ServerProcess, settings: Record<string, unknown>): Promise<Client> => {
    const r = await admin(srv, 'POST', '/admin/clients', { name: 'cluster client', scopes: ['read'], ...settings })
    if (r.status !== 201) throw new Error(`create client: ${r.status} ${JSON.stringify(r.body)}`)
    return [r.body.client_id, r.body.client_secret]
  }
  const introspect = async (srv: ServerProcess, token: string, auth: Client) => {
    const r = await post(srv, '/introspect', { token }, auth)
    if (r.status !== 200) throw new Error(`introspect: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body as { active: boolean }
  }
  const revoke = async (srv: ServerProcess, token: string, auth: Client) => {
    const r = await post(srv, '/revoke', { token }, auth)
    if (r.status !== 200) throw new Error(`revoke: ${r.status} ${JSON.stringify(r.body)}`)
  }

  // Made through different instances on purpose: both read the same tables.
  const app = await createClient(a, { grant_types: ['password', 'client_credentials', 'refresh_token'], audiences: [API] })
  const rs = await createClient(b, { grant_types: ['client_credentials'], resource_identifiers: [API] })
  const user = await admin(a, 'POST', '/admin/users', { username: 'ivy', password: 'ivy password' })
  const login = (srv: ServerProcess) => tokens(srv, { grant_type: 'password', username: 'ivy', password: 'ivy password' }, app)

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
