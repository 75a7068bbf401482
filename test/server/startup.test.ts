import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { migrationsDir } from '../../src/paths.js'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.js'
import { migrate } from '../../src/db/migrate.js'
import { openDatabase } from '../../src/db/connect.js'
import { createLogger } from '../../src/log.js'
import { basic, isolatedDatabase } from '../helpers/server.js'
import { cliPath, spawnServer } from '../helpers/process.js'

t.test('configuration errors are clear', async (t) => {
  t.throws(() => loadConfig({ DATABASE_URL: 'postgres://x/y' }), ConfigError, 'KEY_ENCRYPTION_KEY required with Postgres')
  t.throws(() => loadConfig({ KEY_ENCRYPTION_KEY: 'c2hvcnQ=' }), /32 bytes/)
  t.throws(() => loadConfig({ SIGNING_ALG: 'HS256' }), /SIGNING_ALG/)
  t.throws(() => loadConfig({ PORT: 'eighty' }), /PORT/)
  t.throws(() => loadConfig({ ACCESS_TOKEN_TTL: '0' }), /ACCESS_TOKEN_TTL/)
  t.throws(() => loadConfig({ BOOTSTRAP_ADMIN_CLIENT_ID: 'x' }), /go together/)
  const secret = 's'.repeat(16)
  t.throws(() => loadConfig({ BOOTSTRAP_ADMIN_CLIENT_ID: 'ad\tmin', BOOTSTRAP_ADMIN_CLIENT_SECRET: secret }), /CLIENT_ID must have no control/)
  t.throws(() => loadConfig({ BOOTSTRAP_ADMIN_CLIENT_ID: 'a'.repeat(257), BOOTSTRAP_ADMIN_CLIENT_SECRET: secret }), /at most 256 bytes/)
  t.throws(() => loadConfig({ BOOTSTRAP_ADMIN_CLIENT_ID: 'admin', BOOTSTRAP_ADMIN_CLIENT_SECRET: 's'.repeat(513) }), /CLIENT_SECRET must have/)
  t.throws(() => loadConfig({ ISSUER: 'https://example.com/?q=1' }), /ISSUER/)
  const c = loadConfig({})
  t.match(c, { host: '127.0.0.1', port: 8080, adminPort: 8081, issuer: 'http://localhost:8080', signingAlg: 'ES256', accessTokenTtl: 600, refreshTokenTtl: 1209600 })

  const run = spawnSync(process.execPath, [cliPath, 'serve'], {
    env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: 'postgres://127.0.0.1:1/none' },
    encoding: 'utf8',
    timeout: 30_000,
  })
  t.equal(run.status, 1, 'the server refuses to start')
  t.match(run.stderr, /KEY_ENCRYPTION_KEY is required/)
  t.notMatch(run.stderr, /\n\s+at /, 'no stack trace')
})

t.test('first start on an empty DATA_DIR keeps a new admin client in admin-client.json, and says so on stderr without the secret', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tessera-start-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const first = await spawnServer(t, { DATA_DIR: dataDir })
  const file = join(dataDir, 'admin-client.json')
  t.equal(statSync(file).mode & 0o777, 0o600, 'readable by its owner only')
  t.equal(statSync(join(dataDir, 'key-encryption-key')).mode & 0o777, 0o600)
  const creds = JSON.parse(readFileSync(file, 'utf8'))
  // stderr is what log pipelines collect: it says where the secret is, and never the secret.
  t.ok(first.stderr().includes(`Tessera created an admin client, ${creds.client_id}. Its id and secret are in ${file}\n`), 'stderr names the file')
  t.notOk(first.stderr().includes(creds.client_secret), 'the secret is not on stderr')
  const token = await fetch(`${first.url}/token`, {
    method: 'POST',
    headers: { authorization: basic(creds.client_id, creds.client_secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=admin',
  })
  t.equal(token.status, 200, 'the announced credentials work')
  const { access_token } = (await token.json()) as { access_token: string }
  const clients = await fetch(`${first.adminUrl}/admin/clients`, { headers: { authorization: `Bearer ${access_token}` } })
  t.equal(clients.status, 200)
  await first.stop()
  t.equal(first.child.exitCode, 0, 'SIGTERM closes cleanly')

  // The signing key and the admin client survive a restart: the same DATA_DIR, no new client.
  const second = await spawnServer(t, { DATA_DIR: dataDir })
  t.same(JSON.parse(readFileSync(file, 'utf8')), creds, 'no second admin client')
  const again = await fetch(`${second.url}/token`, {
    method: 'POST',
    headers: { authorization: basic(creds.client_id, creds.client_secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=admin',
  })
  t.equal(again.status, 200)
  t.ok(second.logs.some((l) => l.msg === 'listening' && typeof l.url === 'string'))
  t.ok(second.logs.some((l) => l.msg === 'listening' && typeof l.adminUrl === 'string'))
})

t.test('migrations run once, also when two instances start together on an empty database', async (t) => {
  const isolated = await isolatedDatabase()
  const log = createLogger('silent')
  const open = () => openDatabase({ databaseUrl: isolated?.url, dataDir: 'memory://', log })
  // On Postgres two pools race for the lock; PGlite is one process's database, so one handle.
  const a = await open()
  const b = isolated === undefined ? a : await open()
  t.teardown(async () => {
    await a.close()
    if (b !== a) await b.close()
    await isolated?.drop()
  })
  const results = await Promise.all([migrate(a.db), migrate(b.db)])
  const applied = results.flatMap((r) => r.applied)
  const all = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).sort()
  t.same(applied.sort(), all, 'each migration applied exactly once')
  const rows = await a.db.selectFrom('schema_migrations' as never).selectAll().execute()
  t.equal(rows.length, all.length)
})
