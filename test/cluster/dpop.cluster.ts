// Two Tessera processes over one Postgres database: a DPoP proof or a client assertion accepted by
// one instance is refused by the other (the replay store is the database's), even when both get
// it at the same moment; and a nonce one instance hands out, the other accepts. Postgres only (npm
// run test:pg); needs `npm run build` first.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { Cluster } from '../helpers/cluster.js'
import { basic, isolatedDatabase } from '../helpers/server.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { assertion, assertionParams, keyPair, proof } from '../helpers/jwt-clients.js'

const ADMIN: [string, string] = ['cluster-admin', 'cluster-admin-secret-0123456789']
const ISSUER = 'http://tessera.cluster.test'

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const env = {
    DATABASE_URL: database.url,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN[0],
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN[1],
    // One issuer for both: a proof names it (htu) and an assertion is addressed to it (aud).
    ISSUER,
  }
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
  const cluster = new Cluster(ADMIN)
  const svc = await cluster.createClient(a, { grant_types: ['client_credentials'] })
  const key = await keyPair()
  const made = await cluster.admin(b, 'POST', '/admin/clients', {
    name: 'keyed',
    grant_types: ['client_credentials'],
    scopes: ['read'],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [key.jwk] },
  })
  const keyed: string = made.body.client_id
  const app = await cluster.admin(a, 'POST', '/admin/clients', {
    name: 'app',
    grant_types: ['password'],
    scopes: ['read'],
    token_endpoint_auth_method: 'none',
  })
  await cluster.admin(a, 'POST', '/admin/users', { username: 'kim', password: 'kim password 1' })

  const token = (srv: ServerProcess, form: Record<string, string>, headers: Record<string, string> = {}) =>
    fetch(`${srv.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(form).toString(),
    }).then(async (res) => ({ status: res.status, headers: res.headers, body: (await res.json()) as { error?: string } }))
  const dpopToken = (srv: ServerProcess, p: string) => token(srv, { grant_type: 'client_credentials' }, { authorization: basic(...svc), dpop: p })
  const keyedToken = (srv: ServerProcess, jwt: string) => token(srv, { grant_type: 'client_credentials', ...assertionParams(jwt) })
  const htu = `${ISSUER}/token`

  t.test('both instances hold a lease', async (t) => {
    t.ok(await cluster.leased(a))
    t.ok(await cluster.leased(b))
  })

  t.test('a DPoP proof accepted by one instance is refused by the other', async (t) => {
    for (const [first, second] of [[a, b], [b, a]] as const) {
      const p = await proof(key, { htu })
      t.equal((await dpopToken(first, p)).status, 200)
      const again = await dpopToken(second, p)
      t.equal(again.status, 400)
      t.equal(again.body.error, 'invalid_dpop_proof')
    }
  })

  t.test('a client assertion accepted by one instance is refused by the other', async (t) => {
    for (const [first, second] of [[a, b], [b, a]] as const) {
      const jwt = await assertion(key, keyed, ISSUER)
      t.equal((await keyedToken(first, jwt)).status, 200)
      const again = await keyedToken(second, jwt)
      t.equal(again.status, 401)
      t.equal(again.body.error, 'invalid_client')
    }
  })

  t.test('the same proof or assertion sent to both at once: exactly one is accepted', async (t) => {
    for (let i = 0; i < 10; i++) {
      const p = await proof(key, { htu })
      const proofs = await Promise.all([dpopToken(a, p), dpopToken(b, p)])
      t.same(proofs.map((r) => r.status).sort(), [200, 400], `proof ${i}`)
      const jwt = await assertion(key, keyed, ISSUER)
      const assertions = await Promise.all([keyedToken(a, jwt), keyedToken(b, jwt)])
      t.same(assertions.map((r) => r.status).sort(), [200, 401], `assertion ${i}`)
    }
  })

  t.test('a nonce handed out by one instance is accepted by the other', async (t) => {
    const login = { grant_type: 'password', username: 'kim', password: 'kim password 1', client_id: app.body.client_id }
    const asked = await token(a, login, { dpop: await proof(key, { htu }) })
    t.equal(asked.body.error, 'use_dpop_nonce')
    const nonce = asked.headers.get('dpop-nonce')!
    const r = await token(b, login, { dpop: await proof(key, { htu, nonce }) })
    t.equal(r.status, 200)
  })
}
