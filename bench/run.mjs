// `npm run bench`: Tessera side by side with node-oidc-provider 9 (the reference peer), over
// loopback, one run at a time. See bench/README.md for what is measured and how to read it.
//
// Knobs (environment): BENCH_DURATION (seconds per measured run, default 10), BENCH_WARMUP
// (seconds, default 2), BENCH_CONNECTIONS (default 10), BENCH_PG=0 (skip Postgres even if
// reachable), BENCH_TESSERA_LOG_LEVEL (default warn), DATABASE_URL (Postgres to use; else
// postgres://postgres@127.0.0.1:5432/test when something listens there).
import autocannon from 'autocannon'
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import pg from 'pg'
import { cpuSeconds, killAllNow, reachable, startReference, startTessera, stopAll } from './servers.mjs'

const positive = (name, fallback) => {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`)
  return n
}

const DURATION = positive('BENCH_DURATION', 10)
const WARMUP = positive('BENCH_WARMUP', 2)
const CONNECTIONS = Math.round(positive('BENCH_CONNECTIONS', 10))
const TESSERA_LOG_LEVEL = process.env.BENCH_TESSERA_LOG_LEVEL || 'warn'
const SCOPE = 'api:read'
const RESOURCE = 'https://api.example'
const FORM = 'application/x-www-form-urlencoded'

const basic = (id, secret) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`
const form = (params) => new URLSearchParams(params).toString()
const log = (text) => process.stderr.write(`${text}\n`)

// ---------------------------------------------------------------------------------------------
// Setup of each server: the clients, user and tokens the scenarios use.

async function call(method, url, { headers = {}, body } = {}) {
  const res = await fetch(url, { method, headers, body })
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  if (res.status >= 300) throw new Error(`${method} ${url} answered ${res.status}: ${text.slice(0, 300)}`)
  return json
}

async function setUpTessera(server, { withPassword }) {
  const { access_token: adminToken } = await call('POST', `${server.url}/token`, {
    headers: { authorization: basic(server.adminId, server.adminSecret), 'content-type': FORM },
    body: form({ grant_type: 'client_credentials', scope: 'admin' }),
  })
  const admin = (path, body) =>
    call('POST', `${server.adminUrl}${path}`, {
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
  const cc = await admin('/admin/clients', {
    name: 'bench client_credentials',
    grant_types: ['client_credentials'],
    scopes: [SCOPE],
    audiences: [RESOURCE],
  })
  const ccAuth = basic(cc.client_id, cc.client_secret)
  const ccBody = form({ grant_type: 'client_credentials', scope: SCOPE, resource: RESOURCE })
  const { access_token: jwt } = await call('POST', `${server.url}/token`, {
    headers: { authorization: ccAuth, 'content-type': FORM },
    body: ccBody,
  })
  const requests = {
    token: { method: 'POST', path: '/token', headers: { authorization: ccAuth, 'content-type': FORM }, body: ccBody, expect: '"access_token"' },
    introspect: {
      method: 'POST',
      path: '/introspect',
      headers: { authorization: ccAuth, 'content-type': FORM },
      body: form({ token: jwt }),
      expect: '"active":true',
    },
    jwks: { method: 'GET', path: '/jwks', headers: {}, expect: '"keys"' },
  }
  if (withPassword) {
    const password = randomBytes(18).toString('base64url')
    await admin('/admin/users', { username: 'bench-user', password })
    const pw = await admin('/admin/clients', {
      name: 'bench password',
      grant_types: ['password', 'refresh_token'],
      scopes: [SCOPE],
      audiences: [RESOURCE],
    })
    requests.password = {
      method: 'POST',
      path: '/token',
      headers: { authorization: basic(pw.client_id, pw.client_secret), 'content-type': FORM },
      body: form({ grant_type: 'password', username: 'bench-user', password, scope: SCOPE }),
      expect: '"access_token"',
    }
  }
  return requests
}

async function setUpReference(server, clientId, clientSecret) {
  const auth = basic(clientId, clientSecret)
  // Without `resource` oidc-provider issues an opaque token: the only kind it will introspect.
  const { access_token: opaque } = await call('POST', `${server.url}${server.tokenPath}`, {
    headers: { authorization: auth, 'content-type': FORM },
    body: form({ grant_type: 'client_credentials', scope: SCOPE }),
  })
  const ccBody = form({ grant_type: 'client_credentials', scope: SCOPE, resource: RESOURCE })
  return {
    token: { method: 'POST', path: server.tokenPath, headers: { authorization: auth, 'content-type': FORM }, body: ccBody, expect: '"access_token":"eyJ' },
    introspect: {
      method: 'POST',
      path: server.introspectionPath,
      headers: { authorization: auth, 'content-type': FORM },
      body: form({ token: opaque }),
      expect: '"active":true',
    },
    jwks: { method: 'GET', path: server.jwksPath, headers: {}, expect: '"keys"' },
  }
}

// ---------------------------------------------------------------------------------------------
// Postgres: a schema of its own, dropped afterwards.

async function postgresUrl() {
  if (process.env.BENCH_PG === '0') return { skipped: 'BENCH_PG=0' }
  let base = process.env.DATABASE_URL
  if (!base) {
    if (!(await reachable('127.0.0.1', 5432))) return { skipped: 'DATABASE_URL unset and nothing listens on 127.0.0.1:5432' }
    base = 'postgres://postgres@127.0.0.1:5432/test'
  }
  const schema = `bench_${randomBytes(5).toString('hex')}`
  const run = async (sql) => {
    const client = new pg.Client({ connectionString: base })
    await client.connect()
    try {
      await client.query(sql)
    } finally {
      await client.end()
    }
  }
  try {
    await run(`create schema ${schema}`)
  } catch (err) {
    return { skipped: `cannot use ${redact(base)}: ${err.message}` }
  }
  const url = new URL(base)
  url.searchParams.set('options', `-c search_path=${schema}`)
  return { url: url.toString(), display: redact(base), drop: () => run(`drop schema if exists ${schema} cascade`) }
}

const redact = (u) => {
  try {
    const url = new URL(u)
    if (url.password) url.password = '***'
    return url.toString()
  } catch {
    return '(unparseable DATABASE_URL)'
  }
}

// ---------------------------------------------------------------------------------------------
// Load.

function fire(baseUrl, req, duration) {
  return autocannon({
    url: `${baseUrl}${req.path}`,
    method: req.method,
    headers: req.headers,
    body: req.body,
    connections: CONNECTIONS,
    pipelining: 1,
    duration,
    timeout: 10,
    // A 200 with the wrong body (an inactive introspection, an error page) is a failure too.
    verifyBody: (body) => body.includes(req.expect),
  })
}

async function measure(target, scenario, req) {
  const probe = await fetch(`${target.url}${req.path}`, { method: req.method, headers: req.headers, body: req.body })
  const probeText = await probe.text()
  if (probe.status !== 200 || !probeText.includes(req.expect)) {
    throw new Error(`${target.name} ${scenario}: probe answered ${probe.status} ${probeText.slice(0, 300)}`)
  }
  await fire(target.url, req, WARMUP)
  const cpuBefore = cpuSeconds(target.pid)
  const r = await fire(target.url, req, DURATION)
  const cpuAfter = cpuSeconds(target.pid)
  const ok = r['2xx'] ?? 0
  const completed = r.requests.total
  return {
    scenario,
    server: target.name,
    isReference: target.isReference === true,
    rps: completed / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors + r.timeouts,
    mismatches: r.mismatches,
    ok,
    cpuPerReqMs: cpuBefore !== undefined && cpuAfter !== undefined && completed > 0 ? ((cpuAfter - cpuBefore) * 1000) / completed : undefined,
    cpuShare: cpuBefore !== undefined && cpuAfter !== undefined ? (cpuAfter - cpuBefore) / r.duration : undefined,
    died: target.child.exitCode !== null || target.child.signalCode !== null,
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

function table(rows) {
  const headers = ['scenario', 'server', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'CPU ms/req', 'CPU %', 'req/s vs ref', 'CPU/req vs ref']
  const refOf = (scenario) => rows.find((r) => r.scenario === scenario && r.isReference)
  // autocannon's latency histogram has whole-millisecond resolution.
  const ms = (n) => (n === 0 ? '<1' : fmt(n))
  const fmt = (n, digits = 0) => (n === undefined || Number.isNaN(n) ? '-' : n.toFixed(digits))
  const lines = rows.map((r) => {
    const ref = refOf(r.scenario)
    const bad = r.non2xx + r.errors + r.mismatches
    return [
      r.scenario,
      r.server,
      fmt(r.rps),
      ms(r.p50),
      ms(r.p99),
      String(r.non2xx),
      bad - r.non2xx > 0 ? `${r.errors} conn, ${r.mismatches} body` : '0',
      fmt(r.cpuPerReqMs, 3),
      r.cpuShare === undefined ? '-' : `${Math.round(r.cpuShare * 100)}`,
      r.isReference ? '1.00' : ref ? `${fmt(r.rps / ref.rps, 2)}x` : 'n/a',
      r.isReference ? '1.00' : ref && ref.cpuPerReqMs && r.cpuPerReqMs ? `${fmt(r.cpuPerReqMs / ref.cpuPerReqMs, 2)}x` : 'n/a',
    ]
  })
  const widths = headers.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const row = (cells) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  return [row(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.map(row)].join('\n')
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now()
  const cpus = os.cpus()
  console.log('Tessera vs node-oidc-provider: side-by-side benchmark (loopback)')
  console.log(`node ${process.version}, ${os.availableParallelism()} cores (${cpus[0]?.model.trim() ?? 'unknown CPU'}), ${os.platform()} ${os.release()}`)
  console.log(`load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  console.log(`autocannon: ${CONNECTIONS} connections, pipelining 1, ${WARMUP} s warm-up + ${DURATION} s measured per run, runs one after the other`)
  console.log(`Tessera LOG_LEVEL=${TESSERA_LOG_LEVEL}; both sign ES256 JWT access tokens`)

  const targets = []
  const pgInfo = await postgresUrl()
  dropSchema = pgInfo.drop
  try {
    log('starting Tessera (embedded PGlite, memory://)…')
    const embedded = await startTessera({ name: 'tessera/pglite', logLevel: TESSERA_LOG_LEVEL })
    targets.push({ ...embedded, requests: await setUpTessera(embedded, { withPassword: true }) })

    if (pgInfo.url) {
      log(`starting Tessera (Postgres ${pgInfo.display}, fresh schema)…`)
      const onPg = await startTessera({ name: 'tessera/postgres', databaseUrl: pgInfo.url, logLevel: TESSERA_LOG_LEVEL })
      // The password grant is argon2-bound whatever the database; measured once, on PGlite.
      targets.push({ ...onPg, requests: await setUpTessera(onPg, { withPassword: false }) })
    } else {
      console.log(`Postgres: skipped (${pgInfo.skipped})`)
    }

    log('starting node-oidc-provider…')
    const clientId = 'bench-client'
    const clientSecret = randomBytes(24).toString('base64url')
    const ref = await startReference({ name: 'oidc-provider', clientId, clientSecret, scope: SCOPE, resource: RESOURCE })
    console.log(`reference: oidc-provider ${ref.oidcProviderVersion} (in-memory adapter, separate process)`)
    targets.push({ ...ref, isReference: true, requests: await setUpReference(ref, clientId, clientSecret) })

    const scenarios = [
      ['token', 'client_credentials token issuance (POST token endpoint, Basic auth, scope + resource → ES256 JWT)'],
      ['introspect', 'introspection of a live access token by its own client (Tessera: its JWT; oidc-provider: an opaque token)'],
      ['jwks', 'GET JWK Set'],
      ['password', 'password grant, Tessera only (argon2id verification; oidc-provider has no password grant)'],
    ]
    const rows = []
    for (const [scenario, description] of scenarios) {
      console.log(`\n${scenario}: ${description}`)
      for (const target of targets) {
        const req = target.requests[scenario]
        if (req === undefined) continue
        log(`  ${target.name} …`)
        const row = await measure(target, scenario, req)
        rows.push(row)
        console.log(
          `  ${target.name.padEnd(17)} ${row.rps.toFixed(0).padStart(6)} req/s  p50 ${row.p50} ms  p99 ${row.p99} ms` +
            (row.non2xx + row.errors + row.mismatches > 0 ? `  ERRORS: ${row.non2xx} non-2xx, ${row.errors} connection, ${row.mismatches} bad body` : ''),
        )
        if (row.died) throw new Error(`${target.name} died during ${scenario}\n${target.stderr()}`)
      }
    }

    console.log(`\n${table(rows)}`)
    console.log(
      '\nreq/s vs ref: Tessera req/s ÷ oidc-provider req/s in this run (>1: Tessera faster). CPU ms/req: server process\n' +
        'user+system CPU ÷ requests (from /proc; steadier than req/s on a shared machine; CPU/req vs ref >1: Tessera\n' +
        'costs more). CPU % is of one core. Tessera on Postgres: the database\'s own CPU is in postgres, not counted.',
    )
    if (pgInfo.url === undefined) console.log('Postgres rows absent: ' + pgInfo.skipped)
    const failed = rows.filter((r) => r.non2xx + r.errors + r.mismatches > 0)
    if (failed.length > 0) {
      console.log('\n' + '!'.repeat(78))
      for (const r of failed) {
        console.log(`!!! ${r.scenario} on ${r.server}: ${r.non2xx} non-2xx, ${r.errors} connection errors/timeouts, ${r.mismatches} unexpected bodies`)
      }
      console.log('!!! THESE NUMBERS INCLUDE FAILED REQUESTS AND ARE NOT COMPARABLE')
      console.log('!'.repeat(78))
      process.exitCode = 1
    }
    console.log(`\ntotal time ${((Date.now() - started) / 1000).toFixed(0)} s; load average now: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  } finally {
    await cleanUp()
  }
}

let dropSchema
async function cleanUp() {
  await stopAll()
  const drop = dropSchema
  dropSchema = undefined
  await drop?.().catch((err) => log(`could not drop the bench schema: ${err.message}`))
}

let interrupted = false
process.on('exit', killAllNow)
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    interrupted = true
    log(`\n${signal}: stopping the servers`)
    cleanUp().finally(() => process.exit(130))
  })
}

main().catch((err) => {
  if (interrupted) return
  console.error(`\nBENCH FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  process.exitCode = 1
})
