// Rotating KEY_ENCRYPTION_KEY over one database, restarted as an operator would: the new key with
// the old one as KEY_ENCRYPTION_KEY_PREVIOUS serves what was signed before (and the DPoP nonces
// handed out before); `tessera keys reseal` moves the stored keys onto the new one; after it the
// new key alone is enough. Without the reseal and without PREVIOUS the server refuses to start,
// and says (as doctor does) what to do.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { loadConfig, parseKeyEncryptionKey } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { open } from '../../src/keys/seal.js'
import { startServer } from '../../src/server.js'
import { cliPath, runCli, type CliResult } from '../helpers/process.js'
import { keyPair, proof } from '../helpers/jwt-clients.js'
import { ADMIN_ID, ADMIN_SECRET, TestClock, TestServer, isolatedDatabase } from '../helpers/server.js'

if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run npm run build first`)

t.testdir({})
const database = await isolatedDatabase()
t.teardown(() => database?.drop())
const storage: Record<string, string> = database === undefined ? { DATA_DIR: join(t.testdirName, 'data') } : { DATABASE_URL: database.url }
// One port across the restarts, so one issuer (and one htu) that the CLI can reach too.
const PORT = await new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = (s.address() as { port: number }).port
    s.close(() => resolve(p))
  })
})
const ISSUER = `http://127.0.0.1:${PORT}`
const oldKek = randomBytes(32).toString('base64')
const newKek = randomBytes(32).toString('base64')
// One clock across the restarts: a nonce handed out before one is still of the current step after.
const clock = new TestClock(Math.floor(Date.now() / 60_000) * 60_000 + 1000)
const iat = () => Math.floor(clock.now().getTime() / 1000)

const envWith = (keys: Record<string, string>): Record<string, string> => ({
  HOST: '127.0.0.1',
  PORT: String(PORT),
  ADMIN_HOST: '127.0.0.1',
  ADMIN_PORT: '0',
  ISSUER,
  BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
  BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
  DPOP_NONCE: 'always',
  LOG_LEVEL: 'silent',
  ...storage,
  ...keys,
})

async function start(keys: Record<string, string>): Promise<TestServer> {
  const env = envWith(keys)
  const running = await startServer(loadConfig(env), { log: createLogger('silent'), clock, announce: () => undefined })
  return new TestServer(running, env)
}

// Without ISSUER: no public-url check against a server that is not running.
const doctor = (keys: Record<string, string>): Promise<CliResult> => {
  const { ISSUER: _, ...env } = envWith(keys)
  return runCli(['doctor'], { env, cwd: t.testdirName })
}
const keysLine = (r: CliResult) => r.stdout.split('\n').find((l) => /^\w+:\s+keys: /.test(l)) ?? ''

const cc = { grant_type: 'client_credentials', scope: 'read' }
const dpopKey = await keyPair()
const tokenProof = (nonce?: string) => proof(dpopKey, { htu: `${ISSUER}/token`, iat: iat(), ...(nonce !== undefined && { nonce }) })

// Before: the old key only. A token pair, an access token, and a DPoP nonce, all of that server.
const before = await start({ KEY_ENCRYPTION_KEY: oldKek })
const client = await before.createClient()
await before.createUser('rita', 'rita password 1')
const pair = await before.post('/token', { grant_type: 'password', username: 'rita', password: 'rita password 1' }, client.auth, {
  dpop: await tokenProof((await before.post('/token', cc, client.auth, { dpop: await tokenProof() })).headers.get('dpop-nonce')!),
})
if (pair.status !== 200) throw new Error(`token: ${pair.text}`)
const asked = await before.post('/token', cc, client.auth, { dpop: await tokenProof() })
// DPOP_NONCE=always: the first proof is told to use a nonce, and given it.
const oldNonce = asked.headers.get('dpop-nonce')!
const kid = (await before.tessera.db.selectFrom('signing_keys').select('kid').where('state', '=', 'active').executeTakeFirstOrThrow()).kid
await before.running.close()

const introspect = (srv: TestServer, token: string) => srv.post('/introspect', { token }, client.auth)

t.test('the new key alone, before any reseal: the server refuses to start, naming the fix; doctor fails, naming it too', async (t) => {
  await t.rejects(
    start({ KEY_ENCRYPTION_KEY: newKek }),
    new RegExp(
      `^the private key of signing key ${kid} does not open with this KEY_ENCRYPTION_KEY: every instance over one database needs the same ` +
        'KEY_ENCRYPTION_KEY; if it was changed, set KEY_ENCRYPTION_KEY_PREVIOUS to the one it replaced and run `tessera keys reseal`$',
    ),
  )
  const r = await doctor({ KEY_ENCRYPTION_KEY: newKek })
  t.equal(r.code, 1, r.stdout + r.stderr)
  t.match(keysLine(r), /^fail:\s+keys: the stored private signing key does not open with KEY_ENCRYPTION_KEY \(sha256:[0-9a-f]{8}\): a server with this key cannot sign/)
  t.match(r.stdout, /set KEY_ENCRYPTION_KEY_PREVIOUS to the key it replaced and run `tessera keys reseal`/)
  const both = await doctor({ KEY_ENCRYPTION_KEY: newKek, KEY_ENCRYPTION_KEY_PREVIOUS: oldKek })
  t.match(keysLine(both), /^warn:\s+keys: 1 of 1 stored private signing keys open only with KEY_ENCRYPTION_KEY_PREVIOUS: without it, a server cannot sign — fix: run `tessera keys reseal` once every instance has both keys, then remove KEY_ENCRYPTION_KEY_PREVIOUS$/)
})

t.test('the new key with the previous one: what the old server issued works; reseal moves the keys; then the new key alone works', async (t) => {
  const during = await start({ KEY_ENCRYPTION_KEY: newKek, KEY_ENCRYPTION_KEY_PREVIOUS: oldKek })
  // The nonce the old server handed out is still good here (derived from the previous key).
  const withOldNonce = await during.post('/token', cc, client.auth, { dpop: await tokenProof(oldNonce) })
  t.equal(withOldNonce.status, 200, withOldNonce.text)
  const newNonce = withOldNonce.headers.get('dpop-nonce')!
  t.not(newNonce, oldNonce, 'nonces handed out now are derived from the new key')
  t.equal((await introspect(during, pair.body.access_token)).body.active, true, 'an access token signed before introspects active')
  t.equal((await during.get('/jwks')).body.keys[0].kid, kid, 'the same signing key')
  const refreshed = await during.post('/token', { grant_type: 'refresh_token', refresh_token: pair.body.refresh_token }, client.auth, {
    dpop: await tokenProof(newNonce),
  })
  t.equal(refreshed.status, 200, refreshed.text)

  const row = async () =>
    Buffer.from((await during.tessera.db.selectFrom('signing_keys').select('private_key').where('kid', '=', kid).executeTakeFirstOrThrow()).private_key!)
  t.ok(open(parseKeyEncryptionKey(oldKek), kid, await row()), 'before the reseal the stored key is sealed under the old key')

  // The reseal, by the CLI, through the admin API of the running server.
  const cliEnv = { TESSERA_ADMIN_CLIENT_ID: ADMIN_ID, TESSERA_ADMIN_CLIENT_SECRET: ADMIN_SECRET }
  const resealed = await runCli(['keys', 'reseal', '--admin-url', during.adminUrl, '--json'], { env: cliEnv })
  t.equal(resealed.code, 0, resealed.stderr)
  t.same(JSON.parse(resealed.stdout), { resealed: [kid], already_current: [] })
  const sealed = await row()
  t.throws(() => open(parseKeyEncryptionKey(oldKek), kid, sealed), 'the old key no longer opens it')
  t.ok(open(parseKeyEncryptionKey(newKek), kid, sealed), 'the new one does')
  const again = await runCli(['keys', 'reseal', '--admin-url', during.adminUrl], { env: cliEnv })
  t.equal(again.code, 0, again.stderr)
  t.equal(
    again.stdout,
    'nothing to reseal: 1 stored private key(s) already under KEY_ENCRYPTION_KEY\n' +
      'KEY_ENCRYPTION_KEY_PREVIOUS is no longer needed for the signing keys: remove it from every instance\n',
    'idempotent',
  )
  const signedDuring = await during.post('/token', cc, client.auth, { dpop: await tokenProof(newNonce) })
  t.equal(signedDuring.status, 200, 'and the server kept signing')
  await during.running.close()

  t.match(keysLine(await doctor({ KEY_ENCRYPTION_KEY: newKek, KEY_ENCRYPTION_KEY_PREVIOUS: oldKek })), /^ok:\s+keys: .*KEY_ENCRYPTION_KEY_PREVIOUS is no longer needed for them: remove it$/)
  t.match(keysLine(await doctor({ KEY_ENCRYPTION_KEY: newKek })), /^ok:\s+keys: the stored private key opens with KEY_ENCRYPTION_KEY \(sha256:[0-9a-f]{8}\)$/)

  const after = await start({ KEY_ENCRYPTION_KEY: newKek })
  t.teardown(() => after.running.close())
  t.equal((await introspect(after, pair.body.access_token)).body.active, true, 'a token signed under the old key still introspects active')
  t.equal((await introspect(after, refreshed.body.access_token)).body.active, true)
  t.equal((await introspect(after, signedDuring.body.access_token)).body.active, true)
  const first = await after.post('/token', cc, client.auth, { dpop: await tokenProof(oldNonce) })
  t.equal(first.status, 400, 'without PREVIOUS, a nonce of the old key is stale')
  t.equal(first.body.error, 'use_dpop_nonce')
  const again2 = await after.post('/token', { grant_type: 'refresh_token', refresh_token: refreshed.body.refresh_token }, client.auth, {
    dpop: await tokenProof(first.headers.get('dpop-nonce')!),
  })
  t.equal(again2.status, 200, 'the refresh token refreshes')
})
