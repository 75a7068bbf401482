// `tessera doctor` against a real server process and database: healthy, with a wrong DATABASE_URL
// or KEY_ENCRYPTION_KEY, with the server stopped, and in --json. On the embedded backend the
// server holds DATA_DIR, so the database checks wait until it has stopped.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { backend, isolatedDatabase } from '../helpers/server.js'
import { runCli, spawnServer, type CliResult } from '../helpers/process.js'

const doctor = (env: Record<string, string>, args: string[] = []): Promise<CliResult> => runCli(['doctor', ...args], { env, cwd: t.testdirName })

/** The line of one check: "<status>: <check>: …". */
const lineOf = (stdout: string, check: string) => stdout.split('\n').find((l) => new RegExp(`^\\w+:\\s+${check}: `).test(l)) ?? ''

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })

t.testdir({})
const database = await isolatedDatabase()
t.teardown(() => database?.drop())
const dataDir = join(t.testdirName, 'data')
const kek = randomBytes(32).toString('base64')
const storage: Record<string, string> =
  database === undefined ? { DATA_DIR: dataDir } : { DATABASE_URL: database.url, KEY_ENCRYPTION_KEY: kek }
const server = await spawnServer(t, storage)
const issuer = server.logs.find((l) => l.msg === 'listening' && l.issuer)!.issuer as string
const env = { ...storage, ISSUER: issuer }
const CHECKS = ['config', 'database', 'migrations', 'keys', 'signing-key', 'clock', 'notifications', 'public-url', 'readiness']

t.test('a healthy deployment: every check passes (or is skipped), exit 0', async (t) => {
  const r = await doctor(env)
  t.equal(r.code, 0, r.stdout + r.stderr)
  t.equal(r.stderr, '')
  t.match(lineOf(r.stdout, 'public-url'), `ok:   public-url: ${issuer} answers with its metadata, issuer ${issuer}`)
  t.match(lineOf(r.stdout, 'readiness'), /^ok:\s+readiness: .*ready \(view "leased"/)
  t.match(r.stdout, /\ndoctor: no problems found\n$/)
  if (backend === 'postgres') {
    for (const check of CHECKS) t.match(lineOf(r.stdout, check), new RegExp(`^ok:\\s+${check}: `), `${check} ok`)
    t.match(lineOf(r.stdout, 'database'), /reachable \(127\.0\.0\.1:5432\/\w+; connect [\d.]+ ms, round trip [\d.]+ ms\)/)
    t.match(lineOf(r.stdout, 'migrations'), /all \d+ applied/)
    t.match(lineOf(r.stdout, 'keys'), /the stored private key opens with KEY_ENCRYPTION_KEY \(sha256:[0-9a-f]{8}\)/)
    t.match(lineOf(r.stdout, 'signing-key'), /active key [0-9a-f-]{36} \(ES256\), signing for \d+ s; next rotation in 30 days/)
    t.match(lineOf(r.stdout, 'clock'), /the database's clock is [\d.]+ ms (ahead of|behind) this host's/)
  } else {
    // The server holds DATA_DIR: doctor leaves it alone and asks the server over HTTP instead.
    t.match(
      lineOf(r.stdout, 'database'),
      `skip: database: the embedded database in ${dataDir} is in use by a running server (pid ${server.child.pid})`,
    )
    t.equal(readFileSync(join(dataDir, 'pgdata.lock'), 'utf8').split(' ')[0]!.trim(), String(server.child.pid), 'the server still holds its lock')
    const ready = await fetch(`${server.url}/readyz`)
    t.equal(ready.status, 200, 'and still serves')
  }
})

t.test('--json: one object with the overall status and every check', async (t) => {
  const r = await doctor(env, ['--json'])
  t.equal(r.code, 0, r.stderr)
  const body = JSON.parse(r.stdout)
  t.equal(body.status, 'ok')
  t.same(body.checks.map((c: { check: string }) => c.check), CHECKS)
  for (const c of body.checks) {
    t.match(c, { check: String, status: /^(ok|skip)$/, message: String })
    t.notOk('fix' in c, 'a fix only where something is wrong')
  }
  const readiness = body.checks.find((c: { check: string }) => c.check === 'readiness')
  t.match(readiness.details, { http_status: 200, status: 'ready', database: true, signingKey: true, view: 'leased' })
  if (backend === 'postgres') {
    const db = body.checks.find((c: { check: string }) => c.check === 'database')
    t.match(db.details, { backend: 'postgres', connect_ms: Number, round_trip_ms: Number })
  }
})

t.test('a wrong DATABASE_URL: the database check fails with a fix, exit 1', async (t) => {
  const port = await freePort()
  const r = await doctor({ ...env, DATABASE_URL: `postgres://postgres:not-printed@127.0.0.1:${port}/test`, KEY_ENCRYPTION_KEY: kek })
  t.equal(r.code, 1)
  t.equal(
    lineOf(r.stdout, 'database'),
    `fail: database: cannot connect to 127.0.0.1:${port}/test: nothing accepts connections there (ECONNREFUSED) — fix: start PostgreSQL, or correct the host and port in DATABASE_URL`,
  )
  for (const check of ['migrations', 'keys', 'signing-key', 'clock', 'notifications']) {
    t.match(lineOf(r.stdout, check), new RegExp(`^skip:\\s+${check}: the database is not reachable`))
  }
  t.notOk(r.stdout.includes('not-printed'), 'no password')
  t.match(r.stdout, /\ndoctor: \d+ problems?, \d+ warnings?\n$/)

  if (backend === 'postgres') {
    const url = new URL(database!.url)
    url.pathname = '/no_such_database'
    const missing = await doctor({ ...env, DATABASE_URL: url.toString() })
    t.equal(missing.code, 1)
    t.match(lineOf(missing.stdout, 'database'), /^fail: database: PostgreSQL at 127\.0\.0\.1:5432\/no_such_database has no database "no_such_database" — fix: create it \(createdb no_such_database\)/)
  }
})

t.test('a server that runs with another ISSUER: the public URL check says so', async (t) => {
  const r = await doctor({ ...env, ISSUER: 'https://auth.example.com' }, ['--url', server.url])
  t.equal(r.code, 1)
  t.match(lineOf(r.stdout, 'public-url'), `fail: public-url: the server at ${server.url} says its issuer is ${issuer}, but ISSUER here is https://auth.example.com`)
  t.match(lineOf(r.stdout, 'public-url'), /— fix: give every instance, and this shell, the same ISSUER/)
})

t.test('with the server stopped: the URL checks fail with a fix; the database checks run', async (t) => {
  await server.stop()
  const r = await doctor(env)
  t.equal(r.code, 1)
  t.match(
    lineOf(r.stdout, 'public-url'),
    new RegExp(`^fail: public-url: nothing answers at ${issuer}/\\.well-known/oauth-authorization-server: ECONNREFUSED — fix: start \`tessera serve\``),
  )
  t.match(lineOf(r.stdout, 'readiness'), /^skip:\s+readiness: /)
  for (const check of ['database', 'migrations', 'keys', 'signing-key']) t.match(lineOf(r.stdout, check), new RegExp(`^ok:\\s+${check}: `))
  if (backend === 'pglite') {
    t.match(lineOf(r.stdout, 'keys'), `the stored private key opens with ${join(dataDir, 'key-encryption-key')}`)
    t.match(lineOf(r.stdout, 'clock'), /^skip:\s+clock: the embedded database runs in the server process/)
  }
})

t.test('a wrong KEY_ENCRYPTION_KEY: the stored keys do not open, exit 1', async (t) => {
  const r = await doctor({ ...env, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') })
  t.equal(r.code, 1)
  t.match(
    lineOf(r.stdout, 'keys'),
    /^fail: keys: the stored private signing key does not open with KEY_ENCRYPTION_KEY \(sha256:[0-9a-f]{8}\): a server with this key cannot sign, and does not start — fix: use the KEY_ENCRYPTION_KEY they were sealed with, the same on every instance over this database; if KEY_ENCRYPTION_KEY was changed on purpose, set KEY_ENCRYPTION_KEY_PREVIOUS to the key it replaced and run `tessera keys reseal`; if it is lost, see deploy\/README\.md/,
  )
  const json = JSON.parse((await doctor({ ...env, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }, ['--json'])).stdout)
  t.equal(json.status, 'fail')
  const keys = json.checks.find((c: { check: string }) => c.check === 'keys')
  t.equal(keys.status, 'fail')
  t.equal(keys.details.not_opening.length, 1)
})

t.test('a DATABASE_LISTEN_URL that reaches another schema: the notifications check fails, exit 1', { skip: backend !== 'postgres' && 'needs Postgres' }, async (t) => {
  // Another deployment's schema in the same database: notifications would still arrive (they are
  // per database), which is why the check writes and reads a value instead.
  const other = (await isolatedDatabase())!
  t.teardown(() => other.drop())
  const migrated = await runCli(['migrate'], { env: { DATABASE_URL: other.url, KEY_ENCRYPTION_KEY: kek } })
  t.equal(migrated.code, 0, migrated.stderr)
  const r = await doctor({ ...env, DATABASE_LISTEN_URL: other.url })
  t.equal(r.code, 1, r.stdout)
  t.equal(
    lineOf(r.stdout, 'notifications'),
    'fail: notifications: DATABASE_LISTEN_URL does not reach the database and schema that DATABASE_URL does: a value written through DATABASE_URL could not be read through it. ' +
      'Point both at the same database, with the same search_path (options=-c search_path=...), or leave DATABASE_LISTEN_URL unset' +
      ' — fix: give DATABASE_LISTEN_URL the database and search_path of DATABASE_URL (a direct connection to the same server), or unset it',
  )
  const same = new URL(database!.url)
  same.searchParams.set('application_name', 'listen')
  t.match(lineOf((await doctor({ ...env, DATABASE_LISTEN_URL: same.toString() })).stdout, 'notifications'), /^ok:\s+notifications: /, 'the same schema by another URL passes')
})
