// Private signing keys at rest: what a stolen database dump holds is useless without
// KEY_ENCRYPTION_KEY, and with Postgres the server will not start without one.
import t from 'tap'
import { execFile } from 'node:child_process'
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { SignJWT, createLocalJWKSet, jwtVerify } from 'jose'
import { ConfigError, loadConfig, parseKeyEncryptionKey } from '../../src/config.js'
import { KeyManager } from '../../src/keys/manager.js'
import { open, seal } from '../../src/keys/seal.js'
import { createLogger } from '../../src/log.js'
import { cliPath } from '../helpers/process.js'
import { startTestServer } from '../helpers/server.js'
import { jwks, listKeys } from './support.js'

const srv = await startTestServer(t)
const kek = parseKeyEncryptionKey(srv.env['KEY_ENCRYPTION_KEY']!)
const otherKek = randomBytes(32)

async function stored(): Promise<{ kid: string; sealed: Buffer }> {
  const active = (await listKeys(srv)).find((k) => k.state === 'active')!
  const row = await srv.tessera.db.selectFrom('signing_keys').select(['kid', 'private_key']).where('kid', '=', active.kid).executeTakeFirstOrThrow()
  return { kid: row.kid, sealed: Buffer.from(row.private_key!) }
}

t.test('the stored private key is not a key without KEY_ENCRYPTION_KEY', async (t) => {
  const { kid, sealed } = await stored()
  t.throws(() => createPrivateKey({ key: sealed, format: 'der', type: 'pkcs8' }), 'not PKCS#8 DER')
  t.throws(() => createPrivateKey({ key: sealed.toString('latin1'), format: 'pem' }), 'not PEM')
  t.throws(() => open(otherKek, kid, sealed), 'another key does not open it')

  const der = open(kek, kid, sealed)
  t.notOk(sealed.includes(der.subarray(-32)), 'the key bytes do not appear in what is stored')
  const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
  const published = (await jwks(srv)).keys.find((k) => k.kid === kid)!
  const { x, y } = createPublicKey(privateKey).export({ format: 'jwk' })
  t.same({ x, y }, { x: published.x, y: published.y }, 'the right key opens it, and it is the published key pair')
  // It really is the signing key: what it signs verifies against /jwks.
  const jwt = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid }).sign(privateKey)
  await t.resolves(jwtVerify(jwt, createLocalJWKSet(await jwks(srv))))
})

t.test('the key id is bound in: a sealed key moved to another row does not open', async (t) => {
  const { kid, sealed } = await stored()
  t.throws(() => open(kek, `${kid}x`, sealed))
  const tampered = Buffer.from(sealed)
  tampered[tampered.length - 1]! ^= 1
  t.throws(() => open(kek, kid, tampered), 'tampering is detected')
  t.throws(() => open(kek, kid, sealed.subarray(0, 10)), 'a truncated value is refused')
})

t.test('sealing is randomised and round-trips', async (t) => {
  const plain = randomBytes(100)
  const a = seal(kek, 'k1', plain)
  const b = seal(kek, 'k1', plain)
  t.not(a.toString('hex'), b.toString('hex'), 'a fresh nonce every time')
  t.same(open(kek, 'k1', a), plain)
  t.same(open(kek, 'k1', b), plain)
})

t.test('an instance with another KEY_ENCRYPTION_KEY refuses to load the keys, and says why', async (t) => {
  const keys = new KeyManager(
    srv.tessera.db,
    srv.tessera.clock,
    { current: otherKek },
    { alg: 'ES256', rotationInterval: 3600, jwksMaxAge: 0, pollIntervalMs: 1000, maxAccessTokenTtl: async () => 600 },
    createLogger('silent'),
    srv.tessera.feed,
    srv.tessera.audit,
  )
  await t.rejects(keys.reload(), /does not open with this KEY_ENCRYPTION_KEY/)
  t.notOk(keys.ready)
})

t.test('with DATABASE_URL and no KEY_ENCRYPTION_KEY the configuration is refused', async (t) => {
  const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' }
  t.throws(() => loadConfig(env), ConfigError)
  t.throws(() => loadConfig(env), /KEY_ENCRYPTION_KEY is required when DATABASE_URL is set/)
  t.throws(() => loadConfig({ ...env, KEY_ENCRYPTION_KEY: randomBytes(16).toString('base64') }), /32 bytes/)
  t.ok(loadConfig({ ...env, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }).keyEncryptionKey)
  t.equal(loadConfig({ DATA_DIR: 'memory://' }).keyEncryptionKey, undefined, 'embedded mode makes its own')
})

t.test('the server process exits non-zero with the message', async (t) => {
  if (!existsSync(cliPath)) {
    t.fail(`${cliPath} is missing: run npm run build first`)
    return
  }
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [cliPath, 'serve'],
      { env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', PORT: '0', ADMIN_PORT: '0' }, timeout: 30_000 },
      (err, _stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stderr }),
    )
  })
  t.equal(result.code, 1)
  t.match(result.stderr, /KEY_ENCRYPTION_KEY is required when DATABASE_URL is set/)
  t.notMatch(result.stderr, /\n\s+at /, 'a message, not a stack trace')
})
