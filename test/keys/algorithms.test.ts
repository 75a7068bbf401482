// Every SIGNING_ALG, by restarting over one database with the setting changed each time: each
// change rotates to a key of the new algorithm through the normal lifecycle, and each algorithm's
// tokens verify with nothing private published. One database across restarts: a directory for
// the embedded backend (an in-memory one dies with its server), a schema of its own on Postgres.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SigningAlg } from '../../src/config.js'
import { TestClock, decodeJwt, isolatedDatabase, startTestServer, type TestServer } from '../helpers/server.js'
import { jwks, listKeys, privateMembersIn, verifyAgainstJwks } from './support.js'

const database = await isolatedDatabase()
const env: Record<string, string> = {
  KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
  // Fixed: with PORT=0 the default issuer would change with every restart.
  ISSUER: 'https://issuer.tessera.test',
  JWKS_MAX_AGE: '0',
  KEY_POLL_INTERVAL_MS: '500',
}
if (database !== undefined) {
  env['DATABASE_URL'] = database.url
  t.teardown(() => database.drop())
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-keys-'))
  env['DATA_DIR'] = dir
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
}
const clock = new TestClock()

const PUBLIC_MEMBERS: Record<string, string[]> = {
  EC: ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'],
  OKP: ['alg', 'crv', 'kid', 'kty', 'use', 'x'],
  RSA: ['alg', 'e', 'kid', 'kty', 'n', 'use'],
}
const KEY_TYPE: Record<SigningAlg, { kty: string; crv?: string }> = {
  ES256: { kty: 'EC', crv: 'P-256' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
  RS256: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
}

let client: { id: string; auth: [string, string] } | undefined
let previous: { alg: SigningAlg; token: string } | undefined

async function token(srv: TestServer): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, client!.auth)
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token as string
}
const introspect = async (srv: TestServer, jwt: string) => (await srv.post('/introspect', { token: jwt }, client!.auth)).body

for (const alg of ['ES256', 'EdDSA', 'RS256', 'PS256'] as const) {
  await t.test(`SIGNING_ALG=${alg}`, async (t) => {
    const srv = await startTestServer(t, { ...env, SIGNING_ALG: alg }, { clock })
    client ??= await srv.createClient({ grant_types: ['client_credentials'], scopes: ['read'] })

    if (previous !== undefined) {
      const keys = await listKeys(srv)
      const active = keys.find((k) => k.state === 'active')!
      const next = keys.find((k) => k.state === 'next')
      t.equal(active.alg, previous.alg, 'the key of the old algorithm still signs')
      t.equal(next?.alg, alg, 'a key of the new algorithm is published first')
      t.equal(decodeJwt(await token(srv)).header.alg, previous.alg)
      t.ok((await jwks(srv)).keys.some((k) => k.kid === next!.kid && k.alg === alg))

      clock.advance(srv.tessera.keys.prepublishSeconds)
      await srv.tessera.keys.tick()
      const after = await listKeys(srv)
      t.equal(after.find((k) => k.kid === next!.kid)!.state, 'active')
      t.equal(after.find((k) => k.kid === active.kid)!.state, 'retired')
      t.equal(after.filter((k) => k.state === 'active').length, 1)
      // Tokens of the old algorithm keep verifying while their key is retired.
      await t.resolves(verifyAgainstJwks(srv, previous.token, clock.now()), `a ${previous.alg} token still verifies`)
      t.match(await introspect(srv, previous.token), { active: true })
    } else {
      t.same((await listKeys(srv)).map((k) => [k.state, k.alg]), [['active', alg]])
    }

    const jwt = await token(srv)
    const { protectedHeader, payload } = await verifyAgainstJwks(srv, jwt, clock.now())
    t.equal(protectedHeader.alg, alg)
    t.equal(payload.client_id, client!.id)
    t.match(await introspect(srv, jwt), { active: true })

    const set = await jwks(srv)
    t.same(privateMembersIn(set), [], 'no private member in /jwks')
    for (const jwk of set.keys) {
      t.same(Object.keys(jwk).sort(), PUBLIC_MEMBERS[jwk.kty!], `${jwk.alg}: public members only`)
      t.equal(jwk.use, 'sig')
    }
    const mine = set.keys.find((k) => k.kid === protectedHeader.kid)!
    t.match(mine, { alg, ...KEY_TYPE[alg] })
    if (mine.kty === 'RSA') t.ok(Buffer.from(mine.n!, 'base64url').length * 8 >= 2048, 'RSA 2048 or more')
    t.same(privateMembersIn(await listKeys(srv)), [], 'no private member in /admin/keys')
    previous = { alg, token: jwt }
  })
}
