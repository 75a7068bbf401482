// With the database out of reach, a DPoP proof or a client assertion cannot be recorded as used,
// so it is not accepted: 503 temporarily_unavailable with Retry-After, never a 500 and never a
// token; and once the database is back the same requests work. Postgres only (npm run test:pg);
// needs `npm run build` first.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { Cluster } from '../helpers/cluster.js'
import { spawnServer } from '../helpers/process.js'
import { basic, isolatedDatabase } from '../helpers/server.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'
import { assertion, assertionParams, keyPair, proof } from '../helpers/jwt-clients.js'

const ADMIN: [string, string] = ['replay-admin', 'replay-admin-secret-0123456789']
const ISSUER = 'http://tessera.replay.test'

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const proxy = await TcpProxy.forDatabase(database.url)
  const srv = await spawnServer(t, {
    DATABASE_URL: proxy.url(database.url),
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN[0],
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN[1],
    DATABASE_TIMEOUT_MS: '1000',
    ISSUER,
  })
  t.teardown(async () => {
    await srv.stop()
    await proxy.close()
    await database.drop()
  })

  const cluster = new Cluster(ADMIN)
  const svc = await cluster.createClient(srv, { grant_types: ['client_credentials'] })
  const key = await keyPair()
  const keyed = await cluster.admin(srv, 'POST', '/admin/clients', {
    name: 'keyed',
    grant_types: ['client_credentials'],
    scopes: ['read'],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [key.jwk] },
  })
  const token = (form: Record<string, string>, headers: Record<string, string> = {}) =>
    fetch(`${srv.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams({ grant_type: 'client_credentials', ...form }).toString(),
    }).then(async (res) => ({ status: res.status, headers: res.headers, body: (await res.json()) as { error?: string } }))
  const withProof = async () => token({}, { authorization: basic(...svc), dpop: await proof(key, { htu: `${ISSUER}/token` }) })
  const withAssertion = async () => token(assertionParams(await assertion(key, keyed.body.client_id, ISSUER)))

  t.test('without the database: 503 temporarily_unavailable with Retry-After; with it back, 200', async (t) => {
    t.equal((await withProof()).status, 200)
    t.equal((await withAssertion()).status, 200)
    await proxy.cut()
    for (const [what, send] of [['a DPoP proof', withProof], ['a client assertion', withAssertion]] as const) {
      const r = await send()
      t.equal(r.status, 503, what)
      t.equal(r.body.error, 'temporarily_unavailable', what)
      t.ok(Number(r.headers.get('retry-after')) >= 1, `${what}: Retry-After`)
    }
    await proxy.restore()
    const deadline = Date.now() + 20_000
    let back = { proof: 0, assertion: 0 }
    while (Date.now() < deadline) {
      back = { proof: (await withProof()).status, assertion: (await withAssertion()).status }
      if (back.proof === 200 && back.assertion === 200) break
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    t.same(back, { proof: 200, assertion: 200 }, 'both work again')
  })
}
