// `tessera doctor`: what an operator checks when something is wrong, or before it can be. It runs
// with the server's own configuration (environment and .env) and the server's own code paths
// (openDatabase, the migrator's file list, the key manager's openPrivateKey), and asks the
// running server only through the public URL, as clients do. Exit code 1 when a check fails;
// warnings alone exit 0.
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sql } from 'kysely'
import { ConfigError, loadConfig, parseKeyEncryptionKey, redactUrl, type Config } from '../config.js'
import type { DatabaseHandle } from '../db/connect.js'
import { keyFingerprint } from './show-config.js'

export type Status = 'ok' | 'warn' | 'fail' | 'skip'

export interface CheckResult {
  check: string
  status: Status
  /** What was found, in one line. */
  message: string
  /** How to put it right; absent when there is nothing to do. */
  fix?: string
  details?: Record<string, unknown>
}

type Env = Record<string, string | undefined>

const HTTP_TIMEOUT_MS = 5000
// How long a notification may take to come back before the listener is taken for broken.
const NOTIFY_TIMEOUT_MS = 3000
// Clock skew between this host and the database: beyond a second tokens and key dates drift
// visibly; beyond the minute that retired keys are kept past their tokens (src/keys/manager.ts),
// a key could leave /jwks before tokens it signed have expired elsewhere.
const SKEW_WARN_MS = 1000
const SKEW_FAIL_MS = 60_000
const LOST_KEK_FIX = 'deploy/README.md, "A lost KEY_ENCRYPTION_KEY"'

const ok = (check: string, message: string, details?: Record<string, unknown>): CheckResult => ({
  check,
  status: 'ok',
  message,
  ...(details && { details }),
})
const problem = (status: 'warn' | 'fail', check: string, message: string, fix: string, details?: Record<string, unknown>): CheckResult => ({
  check,
  status,
  message,
  fix,
  ...(details && { details }),
})
const skip = (check: string, message: string): CheckResult => ({ check, status: 'skip', message })

const USAGE = `usage: tessera doctor [--json] [--url URL]

  Checks, with the configuration \`tessera serve\` would use here (environment and ./.env):
  the configuration; the database (reachable, round trip); the migrations; that
  KEY_ENCRYPTION_KEY opens the stored signing keys; the active key's state and age; the clock
  against the database's; change notifications (DATABASE_LISTEN_URL, which must reach the
  database and schema DATABASE_URL does); and the public URL
  (ISSUER, or --url): its metadata names ISSUER, and /readyz.

  With the embedded database in use by a running server, the checks that need the database
  are skipped (opening it from a second process would corrupt it); the URL checks still run.

  --json   one JSON object: {"status": "ok"|"warn"|"fail", "checks": [...]}
  --url    the base URL to check instead of ISSUER (an instance directly, say)

  Exit code: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 usage.
`

/** Runs `tessera doctor`; resolves to the exit code. */
export async function runDoctor(args: string[], env: Env = process.env): Promise<number> {
  let values: { json?: boolean; url?: string; help?: boolean }
  try {
    values = parseArgs({
      args,
      options: { json: { type: 'boolean' }, url: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }).values
  } catch (err) {
    process.stderr.write(`tessera: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  if (values.url !== undefined && !/^https?:\/\/[^/]/.test(values.url)) {
    process.stderr.write(`tessera: --url must be an http(s) URL\n`)
    return 2
  }
  const results: CheckResult[] = []
  const report = (r: CheckResult) => {
    results.push(r)
    if (!values.json) process.stdout.write(line(r))
  }
  await diagnose(env, values.url, report)
  const status: Status = results.some((r) => r.status === 'fail') ? 'fail' : results.some((r) => r.status === 'warn') ? 'warn' : 'ok'
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ status, checks: results }, null, 2)}\n`)
  } else {
    const failed = results.filter((r) => r.status === 'fail').length
    const warned = results.filter((r) => r.status === 'warn').length
    const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`
    process.stdout.write(
      failed + warned === 0 ? 'doctor: no problems found\n' : `doctor: ${plural(failed, 'problem')}, ${plural(warned, 'warning')}\n`,
    )
  }
  return status === 'fail' ? 1 : 0
}

function line(r: CheckResult): string {
  return `${`${r.status}:`.padEnd(6)}${r.check}: ${r.message}${r.fix === undefined ? '' : ` — fix: ${r.fix}`}\n`
}

async function diagnose(env: Env, url: string | undefined, report: (r: CheckResult) => void): Promise<void> {
  let config: Config
  try {
    config = loadConfig(env)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    report(problem('fail', 'config', err.message, 'correct it in the environment or in .env (.env.example explains every variable)'))
    return
  }
  report(configCheck(config))

  const database = await databaseCheck(config, report)
  if (database !== undefined) {
    try {
      const migrated = await migrationsCheck(database, report)
      if (migrated) {
        await keysCheck(config, database, report)
        await signingKeyCheck(config, database, report)
      } else {
        report(skip('keys', 'no migrations applied'))
        report(skip('signing-key', 'no migrations applied'))
      }
      await clockCheck(database, report)
      await notificationsCheck(database, report)
    } finally {
      await database.close().catch(() => undefined)
    }
  }
  await publicUrlChecks(config, url, report)
}

function configCheck(config: Config): CheckResult {
  const backend =
    config.databaseUrl === undefined ? `embedded database in ${config.dataDir}` : `PostgreSQL at ${where(config.databaseUrl)}`
  const details = { backend: config.databaseUrl === undefined ? 'embedded' : 'postgres', issuer: config.issuer ?? null }
  if (config.issuer !== undefined) {
    const issuer = new URL(config.issuer)
    if (issuer.protocol === 'http:' && !isLoopback(issuer.hostname)) {
      return problem(
        'warn',
        'config',
        `valid, but ISSUER ${config.issuer} is plain http on a host that is not this machine: client secrets, passwords and tokens would cross the network unencrypted`,
        'serve Tessera over https (a reverse proxy terminating TLS, see deploy/) and set ISSUER to the https URL',
        details,
      )
    }
  }
  return ok('config', `valid (${backend}; ISSUER ${config.issuer ?? '(from the port picked, PORT=0)'})`, details)
}

const isLoopback = (host: string) => host === 'localhost' || host === '[::1]' || /^127\./.test(host)

/** host:port/database of a postgres URL, never its password. */
function where(databaseUrl: string): string {
  try {
    const u = new URL(databaseUrl)
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`
  } catch {
    return redactUrl(databaseUrl)
  }
}

const DEPENDENT_CHECKS = ['migrations', 'keys', 'signing-key', 'clock', 'notifications']

async function databaseCheck(config: Config, report: (r: CheckResult) => void): Promise<DatabaseHandle | undefined> {
  const skipRest = (why: string) => {
    for (const check of DEPENDENT_CHECKS) report(skip(check, why))
  }
  const { openDatabase } = await import('../db/connect.js')
  const { createLogger } = await import('../log.js')
  const log = createLogger('silent')
  if (config.databaseUrl === undefined) {
    if (config.dataDir.startsWith('memory://')) {
      report(skip('database', 'DATA_DIR=memory:// lives inside the server process: there is nothing to open from outside'))
      skipRest('no database to open')
      return undefined
    }
    // Opening a DATA_DIR with no database would create one: not a doctor's business.
    if (!existsSync(join(config.dataDir, 'pgdata', 'PG_VERSION'))) {
      report(
        problem(
          'warn',
          'database',
          `no embedded database in ${config.dataDir} yet`,
          'start `tessera serve` here (the first start creates it), or set DATA_DIR to the directory the server uses',
        ),
      )
      skipRest('no database yet')
      return undefined
    }
  }
  const started = performance.now()
  let database: DatabaseHandle
  try {
    database = await openDatabase({
      databaseUrl: config.databaseUrl,
      listenUrl: config.databaseListenUrl,
      dataDir: config.dataDir,
      timeoutMs: config.databaseTimeoutMs,
      log,
    })
  } catch (err) {
    const { DataDirInUseError } = await import('../db/data-dir-lock.js')
    if (err instanceof DataDirInUseError) {
      const holder = err.pid === undefined ? 'a running server' : `a running server (pid ${err.pid})`
      report(
        skip(
          'database',
          `the embedded database in ${config.dataDir} is in use by ${holder}: the checks that need it are skipped, since a second process opening it would corrupt it; the URL checks below ask the server`,
        ),
      )
      skipRest('the embedded database is in use by a running server')
      return undefined
    }
    report(problem('fail', 'database', `cannot open the embedded database: ${oneLine(err)}`, `check DATA_DIR (${config.dataDir})`))
    skipRest('the database cannot be opened')
    return undefined
  }
  try {
    await sql`select 1`.execute(database.db)
    const connectMs = performance.now() - started
    const rtts: number[] = []
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now()
      await sql`select 1`.execute(database.db)
      rtts.push(performance.now() - t0)
    }
    const rtt = rtts.sort((a, b) => a - b)[1]!
    const details = { backend: database.backend, connect_ms: round(connectMs), round_trip_ms: round(rtt) }
    const at = config.databaseUrl === undefined ? `embedded, ${config.dataDir}` : where(config.databaseUrl)
    if (rtt > 50) {
      report(
        problem(
          'warn',
          'database',
          `reachable (${at}), but a round trip takes ${round(rtt)} ms`,
          'run Tessera close to its database: every token issued or introspected while the view is not fresh costs round trips',
          details,
        ),
      )
    } else {
      report(ok('database', `reachable (${at}; connect ${round(connectMs)} ms, round trip ${round(rtt)} ms)`, details))
    }
    return database
  } catch (err) {
    await database.close().catch(() => undefined)
    const { message, fix } = postgresProblem(err, config)
    report(problem('fail', 'database', message, fix))
    skipRest('the database is not reachable')
    return undefined
  }
}

/** What a connection error means for DATABASE_URL, and what to change. */
function postgresProblem(err: unknown, config: Config): { message: string; fix: string } {
  const e = err as { code?: string; message?: string; errors?: { code?: string }[] }
  const code = e.code ?? e.errors?.[0]?.code
  const target = config.databaseUrl === undefined ? config.dataDir : where(config.databaseUrl)
  const u = config.databaseUrl === undefined ? undefined : new URL(config.databaseUrl)
  const user = u === undefined ? '' : decodeURIComponent(u.username)
  const dbName = u === undefined ? '' : decodeURIComponent(u.pathname.slice(1))
  switch (code) {
    case 'ECONNREFUSED':
      return {
        message: `cannot connect to ${target}: nothing accepts connections there (ECONNREFUSED)`,
        fix: 'start PostgreSQL, or correct the host and port in DATABASE_URL',
      }
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { message: `cannot connect to ${target}: the host name does not resolve (${code})`, fix: 'correct the host in DATABASE_URL' }
    case '28P01':
    case '28000':
      return {
        message: `PostgreSQL at ${target} refused user "${user}": ${oneLine(err)}`,
        fix: 'correct the user and password in DATABASE_URL (or the server\'s pg_hba.conf)',
      }
    case '3D000':
      return {
        message: `PostgreSQL at ${target} has no database "${dbName}"`,
        fix: `create it (createdb ${dbName}), or correct the database name in DATABASE_URL`,
      }
  }
  if (/timeout/i.test(e.message ?? '')) {
    return {
      message: `no answer from ${target} within DATABASE_TIMEOUT_MS (${config.databaseTimeoutMs} ms)`,
      fix: 'check that PostgreSQL runs at the host and port in DATABASE_URL and that no firewall drops the connection',
    }
  }
  return { message: `cannot use the database at ${target}: ${oneLine(err)}`, fix: 'check DATABASE_URL' }
}

async function migrationsCheck(database: DatabaseHandle, report: (r: CheckResult) => void): Promise<boolean> {
  const { migrationFiles } = await import('../db/migrate.js')
  const files = await migrationFiles()
  let applied: string[]
  try {
    applied = (await sql<{ name: string }>`select name from schema_migrations order by name`.execute(database.db)).rows.map((r) => r.name)
  } catch (err) {
    if ((err as { code?: string }).code !== '42P01') throw err
    report(
      problem('fail', 'migrations', 'none applied: the database is empty', 'run `tessera migrate` (or start `tessera serve`, which applies them)', {
        applied: 0,
        files: files.length,
      }),
    )
    return false
  }
  const known = new Set(files)
  const done = new Set(applied)
  const pending = files.filter((f) => !done.has(f))
  const unknown = applied.filter((a) => !known.has(a))
  const details = { applied: applied.length, files: files.length, pending, unknown }
  if (pending.length > 0) {
    report(
      problem(
        'fail',
        'migrations',
        `${pending.length} of ${files.length} not applied (${pending.join(', ')})`,
        'run `tessera migrate` with this version (or start its `tessera serve`, which applies them)',
        details,
      ),
    )
  } else if (unknown.length > 0) {
    report(
      problem(
        'warn',
        'migrations',
        `the database has migrations this version does not have (${unknown.join(', ')}): a newer Tessera migrated it`,
        'run the newer version (migrations go forward only: do not roll back past them)',
        details,
      ),
    )
  } else {
    report(ok('migrations', `all ${files.length} applied`, details))
  }
  return true
}

/** The key-encryption key the server would use, read but never created. */
function keyEncryptionKey(config: Config): { key: Buffer } | { problem: CheckResult } {
  if (config.keyEncryptionKey !== undefined) return { key: config.keyEncryptionKey }
  const path = join(config.dataDir, 'key-encryption-key')
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    return {
      problem: problem(
        'fail',
        'keys',
        `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? oneLine(err)}): the stored signing keys cannot be opened`,
        `restore it from the backup of DATA_DIR, or see ${LOST_KEK_FIX}`,
      ),
    }
  }
  try {
    return { key: parseKeyEncryptionKey(text.trim(), path) }
  } catch (err) {
    return { problem: problem('fail', 'keys', oneLine(err), `restore ${path} from the backup of DATA_DIR`) }
  }
}

async function keysCheck(config: Config, database: DatabaseHandle, report: (r: CheckResult) => void): Promise<void> {
  const kek = keyEncryptionKey(config)
  if ('problem' in kek) return report(kek.problem)
  const { openEither } = await import('../keys/seal.js')
  const { keyRepository } = await import('../keys/repository.js')
  const rows = (await keyRepository.listLive(database.db)).filter((k) => k.private_key !== null)
  const fingerprint = keyFingerprint(kek.key)
  const previous = config.keyEncryptionKeyPrevious
  const source = config.keyEncryptionKey === undefined ? join(config.dataDir, 'key-encryption-key') : 'KEY_ENCRYPTION_KEY'
  const under = (row: (typeof rows)[number]): 'current' | 'previous' | 'neither' => {
    try {
      return openEither({ current: kek.key, previous }, row.kid, row.private_key!).under
    } catch {
      return 'neither'
    }
  }
  const opened = rows.map((row) => ({ kid: row.kid, under: under(row) }))
  const closed = opened.filter((k) => k.under === 'neither')
  const unresealed = opened.filter((k) => k.under === 'previous')
  const details = {
    key_encryption_key: fingerprint,
    ...(previous !== undefined && { key_encryption_key_previous: keyFingerprint(previous) }),
    stored: rows.length,
    not_opening: closed.map((k) => k.kid),
    ...(previous !== undefined && { sealed_under_previous: unresealed.map((k) => k.kid) }),
  }
  if (rows.length === 0) return report(ok('keys', 'no private key stored yet (the first start makes one)', details))
  if (closed.length > 0) {
    return report(
      problem(
        'fail',
        'keys',
        `${rows.length === 1 ? 'the stored private signing key does' : `${closed.length} of ${rows.length} stored private signing keys do`} not open with ${source} (${fingerprint})${previous === undefined ? '' : ' nor with KEY_ENCRYPTION_KEY_PREVIOUS'}: a server with this key cannot sign, and does not start`,
        `use the KEY_ENCRYPTION_KEY they were sealed with, the same on every instance over this database; if KEY_ENCRYPTION_KEY was changed on purpose, set KEY_ENCRYPTION_KEY_PREVIOUS to the key it replaced and run \`tessera keys reseal\`; if it is lost, see ${LOST_KEK_FIX}`,
        details,
      ),
    )
  }
  if (unresealed.length > 0) {
    return report(
      problem(
        'warn',
        'keys',
        `${unresealed.length} of ${rows.length} stored private signing keys open only with KEY_ENCRYPTION_KEY_PREVIOUS: without it, a server cannot sign`,
        'run `tessera keys reseal` once every instance has both keys, then remove KEY_ENCRYPTION_KEY_PREVIOUS',
        details,
      ),
    )
  }
  const done = previous === undefined ? '' : '; KEY_ENCRYPTION_KEY_PREVIOUS is no longer needed for them: remove it'
  report(ok('keys', `${rows.length === 1 ? 'the stored private key opens' : `all ${rows.length} stored private keys open`} with ${source} (${fingerprint})${done}`, details))
}

async function signingKeyCheck(config: Config, database: DatabaseHandle, report: (r: CheckResult) => void): Promise<void> {
  const { keyRepository } = await import('../keys/repository.js')
  const rows = await keyRepository.listLive(database.db)
  const now = Date.now()
  const active = rows.filter((k) => k.state === 'active')
  const next = rows.find((k) => k.state === 'next')
  const retired = rows.filter((k) => k.state === 'retired')
  if (active.length !== 1) {
    return report(
      problem(
        'fail',
        'signing-key',
        active.length === 0 ? 'no active signing key' : `${active.length} active signing keys (there must be exactly one)`,
        active.length === 0
          ? 'start `tessera serve` (the first start makes one); if one runs, its log says why the key manager fails'
          : 'rotate: tessera keys rotate --immediate',
        { active: active.length },
      ),
    )
  }
  const key = active[0]!
  const since = (key.activated_at ?? key.created_at).getTime()
  const dueAt = since + config.keyRotationInterval * 1000
  // The schedule runs every KEY_POLL_INTERVAL_MS on every instance; a minute past that is no race.
  const slack = 2 * config.keyPollIntervalMs + 60_000
  const details = {
    kid: key.kid,
    alg: key.alg,
    active_since: new Date(since).toISOString(),
    rotation_due: new Date(dueAt).toISOString(),
    next: next?.kid ?? null,
    retired: retired.length,
  }
  const summary = `active key ${key.kid} (${key.alg}), signing for ${duration(now - since)}`
  const late: string[] = []
  if (next === undefined && dueAt + slack < now) late.push(`its rotation is overdue by ${duration(now - dueAt)} (KEY_ROTATION_INTERVAL ${config.keyRotationInterval} s)`)
  if (next?.activate_at != null && next.activate_at.getTime() + slack < now) late.push(`the next key ${next.kid} is overdue to sign by ${duration(now - next.activate_at.getTime())}`)
  const stale = retired.filter((k) => k.remove_at !== null && k.remove_at.getTime() + slack < now)
  if (stale.length > 0) late.push(`${stale.length} retired key(s) overdue to leave /jwks`)
  if (late.length > 0) {
    return report(
      problem(
        'warn',
        'signing-key',
        `${summary}; ${late.join('; ')}`,
        'the key schedule runs in every `tessera serve` (every KEY_POLL_INTERVAL_MS): make sure one runs against this database, and check its log for key manager errors',
        details,
      ),
    )
  }
  if (key.alg !== config.signingAlg && next === undefined) {
    return report(
      problem(
        'warn',
        'signing-key',
        `${summary}, but SIGNING_ALG is ${config.signingAlg}`,
        `a server started with SIGNING_ALG=${config.signingAlg} rotates to it by itself (the new key is published first); or set SIGNING_ALG=${key.alg}`,
        details,
      ),
    )
  }
  const then = next === undefined ? `next rotation in ${duration(Math.max(0, dueAt - now))}` : `key ${next.kid} published, signing from ${next.activate_at?.toISOString() ?? 'soon'}`
  report(ok('signing-key', `${summary}; ${then}`, details))
}

async function clockCheck(database: DatabaseHandle, report: (r: CheckResult) => void): Promise<void> {
  if (database.backend === 'pglite') {
    return report(skip('clock', 'the embedded database runs in the server process, on this host\'s clock'))
  }
  const t0 = Date.now()
  const { rows } = await sql<{ now: Date }>`select clock_timestamp() as now`.execute(database.db)
  const t1 = Date.now()
  // The database read its clock somewhere within the round trip: in the middle, give or take half.
  const skew = rows[0]!.now.getTime() - (t0 + t1) / 2
  const uncertainty = (t1 - t0) / 2
  const size = Math.max(0, Math.abs(skew) - uncertainty)
  const details = { skew_ms: round(skew), uncertainty_ms: round(uncertainty) }
  const said = `the database's clock is ${round(Math.abs(skew))} ms ${skew >= 0 ? 'ahead of' : 'behind'} this host's (± ${round(uncertainty)} ms)`
  const fix = 'synchronise the clocks of this host and the database server (NTP: chrony, systemd-timesyncd)'
  if (size > SKEW_FAIL_MS) return report(problem('fail', 'clock', `${said}: beyond the ${SKEW_FAIL_MS / 1000} s margin kept for skew between instances`, fix, details))
  if (size > SKEW_WARN_MS) return report(problem('warn', 'clock', said, fix, details))
  report(ok('clock', said, details))
}

async function notificationsCheck(database: DatabaseHandle, report: (r: CheckResult) => void): Promise<void> {
  if (database.backend === 'pglite') return report(skip('notifications', 'the embedded database delivers them in-process'))
  const fix =
    'point DATABASE_LISTEN_URL at PostgreSQL directly (a session, not a transaction-mode pooler such as pgbouncer); without it every instance reads the database on every call'
  const channel = `tessera_doctor_${randomBytes(6).toString('hex')}`
  let feed: Awaited<ReturnType<DatabaseHandle['openFeedConnection']>> | undefined
  try {
    feed = await database.openFeedConnection()
    const started = performance.now()
    const arrived = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), NOTIFY_TIMEOUT_MS)
      void feed!.listen(channel, () => {
        clearTimeout(timer)
        resolve(true)
      }).then(() => sql`select pg_notify(${channel}, 'doctor')`.execute(database.db))
        .catch(() => {
          clearTimeout(timer)
          resolve(false)
        })
    })
    if (await arrived) {
      report(ok('notifications', `change notifications arrive over the listen connection (${round(performance.now() - started)} ms)`))
    } else {
      report(problem('warn', 'notifications', `no change notification arrived within ${NOTIFY_TIMEOUT_MS / 1000} s over the listen connection`, fix))
    }
  } catch (err) {
    const { ListenUrlMismatchError } = await import('../db/connect.js')
    if (err instanceof ListenUrlMismatchError) {
      // The server refuses to start with it, and a running one never leases through it.
      report(problem('fail', 'notifications', err.message, 'give DATABASE_LISTEN_URL the database and search_path of DATABASE_URL (a direct connection to the same server), or unset it'))
    } else if ((err as { code?: unknown }).code === '42P01') {
      report(skip('notifications', 'the migrations that let the listen connection be checked are not applied'))
    } else {
      report(problem('warn', 'notifications', `cannot open the listen connection (DATABASE_LISTEN_URL, else DATABASE_URL): ${oneLine(err)}`, fix))
    }
  } finally {
    await feed?.close().catch(() => undefined)
  }
}

async function publicUrlChecks(config: Config, url: string | undefined, report: (r: CheckResult) => void): Promise<void> {
  const base = (url ?? config.issuer)?.replace(/\/+$/, '')
  if (base === undefined) {
    report(skip('public-url', 'ISSUER is not set and PORT=0: the URL is known only once a server listens'))
    report(skip('readiness', 'no URL to ask'))
    return
  }
  const notRunning =
    'start `tessera serve`; if it runs, make sure ISSUER is the URL clients reach it by (DNS, proxy, TLS), or pass --url to check an instance directly'
  const metadataUrl = `${base}/.well-known/oauth-authorization-server`
  const metadata = await get(metadataUrl)
  if ('error' in metadata) {
    report(problem('fail', 'public-url', `nothing answers at ${metadataUrl}: ${metadata.error}`, notRunning))
    report(skip('readiness', 'the server does not answer'))
    return
  }
  const issuer = (metadata.body as Record<string, unknown> | undefined)?.['issuer']
  if (metadata.status !== 200 || typeof issuer !== 'string') {
    report(
      problem(
        'fail',
        'public-url',
        `${metadataUrl} answered HTTP ${metadata.status} without authorization server metadata`,
        'is something else listening there, or a proxy routing the path elsewhere? The metadata must come from Tessera',
      ),
    )
  } else if (config.issuer !== undefined && issuer !== config.issuer) {
    report(
      problem(
        'fail',
        'public-url',
        `the server at ${base} says its issuer is ${issuer}, but ISSUER here is ${config.issuer}: tokens it issues would be refused by resource servers configured with ISSUER`,
        'give every instance, and this shell, the same ISSUER: the URL clients and resource servers use',
        { issuer },
      ),
    )
  } else {
    report(ok('public-url', `${base} answers with its metadata, issuer ${issuer}`, { issuer }))
  }
  const ready = await get(`${base}/readyz`)
  if ('error' in ready) return report(problem('fail', 'readiness', `${base}/readyz: ${ready.error}`, notRunning))
  const body = (ready.body ?? {}) as Record<string, unknown>
  const details = { http_status: ready.status, ...body }
  if (ready.status !== 200) {
    const why = [body['database'] === false && 'its database is not reachable', body['signingKey'] === false && 'no signing key is loaded']
      .filter(Boolean)
      .join(' and ')
    return report(
      problem(
        'fail',
        'readiness',
        `${base}/readyz answered ${ready.status}${why ? `: ${why}` : ''}`,
        'look at that instance\'s log; run this doctor where it runs, with its configuration',
        details,
      ),
    )
  }
  const view = body['view']
  if (view === 'disconnected' || view === 'behind') {
    return report(
      problem(
        'warn',
        'readiness',
        `ready, but reading the database on every call (view "${String(view)}")`,
        'the instance has no working change feed: check DATABASE_LISTEN_URL (see the notifications check) and its log',
        details,
      ),
    )
  }
  report(ok('readiness', `${base}/readyz: ready (view "${String(view)}"; behind a load balancer, this is one instance)`, details))
}

async function get(url: string): Promise<{ status: number; body: unknown } | { error: string }> {
  try {
    const res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) })
    const text = await res.text()
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      body = undefined
    }
    return { status: res.status, body }
  } catch (err) {
    const e = err as { name?: string; cause?: { code?: string; message?: string; errors?: { code?: string }[] } }
    if (e.name === 'TimeoutError') return { error: `no answer within ${HTTP_TIMEOUT_MS / 1000} s` }
    return { error: e.cause?.code ?? e.cause?.errors?.[0]?.code ?? e.cause?.message ?? oneLine(err) }
  }
}

function duration(ms: number): string {
  const s = Math.round(ms / 1000)
  if (s < 120) return `${s} s`
  if (s < 2 * 3600) return `${Math.round(s / 60)} min`
  if (s < 2 * 86_400) return `${Math.round(s / 3600)} h`
  return `${Math.round(s / 86_400)} days`
}

const round = (n: number) => Math.round(n * 10) / 10
const oneLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ')
