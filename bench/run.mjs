// `npm run bench`: Tessera (on Postgres with one and with two processes, and embedded) beside
// node-oidc-provider 9, the reference peer, over loopback; one server under load at a time, in
// rounds whose order alternates. See bench/README.md for what is measured and how to read it.
//
// Knobs (environment): BENCH_DURATION (seconds per measured run, default 10), BENCH_WARMUP
// (seconds before each measured run, default 2), BENCH_CONNECTIONS (default 50), BENCH_ROUNDS
// (default 3), BENCH_PG=0 (skip Postgres), BENCH_SCENARIOS and BENCH_SERVERS (comma lists),
// BENCH_OUT (report file, default bench/results.md; "-" for none), BENCH_TESSERA_LOG_LEVEL
// (default warn), DATABASE_URL (else postgres://postgres@127.0.0.1:5432/test when reachable).
import autocannon from 'autocannon'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { basic, form, FORM, RESOURCE, SCOPE, scenarios as ALL_SCENARIOS } from './scenarios.mjs'
import { caseSettings } from './cases.mjs'
import { run as runRevocationStorm } from './revocation-storm.mjs'
import { run as runSeeded } from './seeded.mjs'
import {
  killAllNow,
  peakRss,
  processTree,
  reachable,
  resetPeakRss,
  root,
  selfCpuSeconds,
  startArgon2Ceiling,
  startReference,
  startTessera,
  stopAll,
  treeCpuSeconds,
} from './servers.mjs'

// ---------------------------------------------------------------------------------------------
// Settings.

const positive = (name, fallback, { integer = false } = {}) => {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new Error(`${name} must be a positive ${integer ? 'whole ' : ''}number, got "${raw}"`)
  }
  return n
}

/** A comma list from the environment, checked against the known names; all of them when unset. */
const subset = (name, known) => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return { ids: known, explicit: false }
  const ids = [...new Set(raw.split(',').map((s) => s.trim()).filter(Boolean))]
  const unknown = ids.filter((id) => !known.includes(id))
  if (unknown.length > 0 || ids.length === 0) {
    throw new Error(`${name}: unknown ${unknown.join(', ') || '(empty list)'}; known: ${known.join(', ')}`)
  }
  return { ids, explicit: true }
}

/** Cases on Postgres with a report of their own (bench/cases.mjs), run after the scenarios. */
const CASES = [
  { id: 'seeded', run: runSeeded },
  { id: 'revocation_storm', run: runRevocationStorm },
]

/** The servers a run may include, ours first. `peer` ones are what a scenario's ratio is taken against. */
const SERVER_KINDS = [
  { id: 'pg1', side: 'ours', label: 'Tessera · Postgres · WEB_CONCURRENCY=1', postgres: true, webConcurrency: 1 },
  { id: 'pg2', side: 'ours', label: 'Tessera · Postgres · WEB_CONCURRENCY=2', postgres: true, webConcurrency: 2 },
  { id: 'embedded', side: 'ours', label: 'Tessera · embedded (PGlite, DATA_DIR on disk)' },
  { id: 'oidc-provider', side: 'peer', label: 'oidc-provider (peer)' },
  { id: 'argon2', side: 'peer', label: 'argon2.verify ceiling (peer)' },
]

function readSettings() {
  return {
    duration: positive('BENCH_DURATION', 10),
    warmup: positive('BENCH_WARMUP', 2),
    connections: positive('BENCH_CONNECTIONS', 50, { integer: true }),
    rounds: positive('BENCH_ROUNDS', 3, { integer: true }),
    tesseraLogLevel: process.env.BENCH_TESSERA_LOG_LEVEL || 'warn',
    out: process.env.BENCH_OUT === '-' ? undefined : (process.env.BENCH_OUT || join(root, 'bench', 'results.md')),
    scenarios: subset('BENCH_SCENARIOS', [...ALL_SCENARIOS.map((s) => s.id), ...CASES.map((c) => c.id)]),
    servers: subset('BENCH_SERVERS', SERVER_KINDS.map((k) => k.id)),
    argon2Threads: 4,
    // Tessera's default HASH_CONCURRENCY with one worker: a core is left for the event loop.
    hashConcurrency: Math.max(1, os.availableParallelism() - 1),
  }
}

let settings
try {
  settings = readSettings()
} catch (err) {
  process.stderr.write(`bench: ${err.message}\n`)
  process.exit(2)
}

const log = (text) => process.stderr.write(`${text}\n`)

// ---------------------------------------------------------------------------------------------
// Cleanup: children, Postgres schemas and data directories, on success, error and signal.

const cleanups = new Set()
function onCleanup(fn) {
  cleanups.add(fn)
  return async () => {
    if (!cleanups.delete(fn)) return
    await fn()
  }
}
async function cleanUpAll() {
  await stopAll()
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn)
    await fn()
  }
}

// ---------------------------------------------------------------------------------------------
// Postgres: one base URL; every Tessera on it gets a schema of its own, dropped afterwards.

const redact = (u) => {
  try {
    const url = new URL(u)
    if (url.password) url.password = '***'
    return url.toString()
  } catch {
    return '(unparseable DATABASE_URL)'
  }
}

async function findPostgres() {
  if (process.env.BENCH_PG === '0') return { skipped: 'BENCH_PG=0' }
  let base = process.env.DATABASE_URL
  if (!base) {
    if (!(await reachable('127.0.0.1', 5432))) return { skipped: 'DATABASE_URL unset and nothing listens on 127.0.0.1:5432' }
    base = 'postgres://postgres@127.0.0.1:5432/test'
  }
  try {
    await sqlOn(base, 'select 1')
  } catch (err) {
    return { skipped: `cannot use ${redact(base)}: ${err.message}` }
  }
  return { base, display: redact(base) }
}

async function sqlOn(connectionString, sql) {
  const client = new pg.Client({ connectionString })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

async function freshSchema(base) {
  const schema = `bench_${randomBytes(5).toString('hex')}`
  await sqlOn(base, `create schema ${schema}`)
  const url = new URL(base)
  url.searchParams.set('options', `-c search_path=${schema}`)
  const drop = onCleanup(() =>
    sqlOn(base, `drop schema if exists ${schema} cascade`).catch((err) => log(`could not drop schema ${schema}: ${err.message}`)),
  )
  return { url: url.toString(), drop }
}

function freshDataDir() {
  const dir = mkdtempSync(join(os.tmpdir(), 'tessera-bench-'))
  const remove = onCleanup(() => rmSync(dir, { recursive: true, force: true }))
  return { dir, remove }
}

// ---------------------------------------------------------------------------------------------
// Setup helpers handed to the scenarios (bench/scenarios.mjs).

async function call(method, url, { headers = {}, body } = {}) {
  let res
  try {
    res = await fetch(url, { method, headers, body })
  } catch (err) {
    // fetch keeps idle connections per origin, and a port a stopped server used may be handed to
    // the next one: a request sent on such a dead connection fails before the server sees it.
    // Once more, on a new connection; then the real cause.
    try {
      res = await fetch(url, { method, headers, body })
    } catch (again) {
      throw new Error(`${method} ${url}: ${again.cause?.message ?? again.message} (first try: ${err.cause?.message ?? err.message})`)
    }
  }
  const text = await res.text()
  if (res.status >= 300) throw new Error(`${method} ${url} answered ${res.status}: ${text.slice(0, 300)}`)
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

async function tesseraSetup(server) {
  const token = (auth, params) =>
    call('POST', `${server.url}/token`, {
      headers: { authorization: auth, 'content-type': FORM },
      body: typeof params === 'string' ? params : form(params),
    })
  const { access_token: adminToken } = await token(basic(server.adminId, server.adminSecret), {
    grant_type: 'client_credentials',
    scope: 'admin',
  })
  const admin = (path, body) =>
    call('POST', `${server.adminUrl}${path}`, {
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
  let clients = 0
  let users = 0
  const { issuer } = await call('GET', `${server.url}/.well-known/oauth-authorization-server`)
  return {
    url: server.url,
    issuer,
    token,
    async client({ grant_types, ...settings }) {
      const c = await admin('/admin/clients', { name: `bench ${++clients}`, grant_types, scopes: [SCOPE], audiences: [RESOURCE], ...settings })
      // A private_key_jwt (or public) client has no secret.
      return { ...c, ...(c.client_secret !== undefined && { auth: basic(c.client_id, c.client_secret) }) }
    },
    async user() {
      const user = { username: `bench-user-${++users}`, password: randomBytes(18).toString('base64url') }
      await admin('/admin/users', user)
      return user
    },
  }
}

function referenceSetup(server) {
  const auth = basic(server.clientId, server.clientSecret)
  return {
    url: server.url,
    tokenPath: server.tokenPath,
    introspectionPath: server.introspectionPath,
    jwksPath: server.jwksPath,
    auth,
    token: (params) =>
      call('POST', `${server.url}${server.tokenPath}`, {
        headers: { authorization: auth, 'content-type': FORM },
        body: form(params),
      }),
  }
}

// ---------------------------------------------------------------------------------------------
// Starting what a scenario needs.

async function startTarget(kind, scenario, postgres) {
  if (kind.id === 'argon2') {
    const server = await startArgon2Ceiling({ name: kind.id, threads: settings.argon2Threads, concurrency: settings.hashConcurrency })
    return { kind, server, label: `argon2.verify ceiling (${server.inFlight} at once, Tessera's HASH_CONCURRENCY)` }
  }
  if (kind.id === 'oidc-provider') {
    const clientId = 'bench-client'
    const clientSecret = randomBytes(24).toString('base64url')
    const server = await startReference({ name: kind.id, clientId, clientSecret, scope: SCOPE, resource: RESOURCE })
    server.clientId = clientId
    server.clientSecret = clientSecret
    const load = await scenario.reference(referenceSetup(server))
    return { kind, server, load, label: `oidc-provider ${server.oidcProviderVersion} (peer)` }
  }
  let server
  if (kind.postgres) {
    const schema = await freshSchema(postgres.base)
    server = await startTessera({
      name: kind.id,
      databaseUrl: schema.url,
      webConcurrency: kind.webConcurrency,
      logLevel: settings.tesseraLogLevel,
    })
    server.release = schema.drop
  } else {
    const data = freshDataDir()
    server = await startTessera({ name: kind.id, dataDir: data.dir, logLevel: settings.tesseraLogLevel })
    server.release = data.remove
  }
  const load = await scenario.tessera(await tesseraSetup(server))
  return { kind, server, load, label: kind.label }
}

/** One request outside the load generator, to fail early and clearly on a wrong setup. */
async function probe(target) {
  const { load, server } = target
  const req = { method: load.method, path: load.path, headers: load.headers, body: load.body }
  if (load.perRequest) {
    const state = load.seeds ? (await load.seeds(1))[0] : {}
    const next = load.perRequest(state)
    req.headers = next.headers ?? req.headers
    req.body = next.body ?? req.body
  }
  const res = await fetch(`${server.url}${req.path}`, { method: req.method, headers: req.headers, body: req.body })
  const text = await res.text()
  if (res.status !== 200 || !text.includes(load.expect)) {
    throw new Error(`${target.kind.id}: probe of ${req.method} ${req.path} answered ${res.status} ${text.slice(0, 300)}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Load. Each run is one continuous load of warm-up + duration seconds; what is measured is the
// window after the warm-up, so the measured run starts in a steady state, and nothing is left in
// flight from a warm-up that stopped. `onOpen` and `onClose` are called at the window's edges.

/**
 * autocannon (HTTP). Per-connection state (the refresh-token chain) is kept with `setupClient`,
 * autocannon's per-connection hook: the `context` that `requests[].setupRequest/onResponse` see
 * is reset to `initialContext` each time a connection comes back to the first of its `requests`
 * (autocannon's README), which with one request means after every request.
 */
function fire(target, { warmup, duration, onOpen, onClose }) {
  const { load, server } = target
  return (async () => {
    const seeds = load.seeds ? await load.seeds(settings.connections) : []
    let phase = 'warm-up'
    const counts = { 'warm-up': newCounts(), measured: newCounts(), after: newCounts() }
    const latencies = []
    const request = {
      method: load.method,
      path: load.path,
      headers: load.headers,
      body: load.body,
      // Called with each answer's status and body, before the connection sends its next request.
      onResponse(status, body) {
        if (status >= 200 && status < 300 && !body.includes(load.expect)) {
          counts[phase].bad++
          counts[phase].sample ??= `${status} ${body.slice(0, 200)}`
        } else if (status >= 300) {
          counts[phase].sample ??= `${status} ${body.slice(0, 200)}`
        }
      },
    }
    const setupClient = load.perRequest
      ? (client) => {
          const state = seeds.shift() ?? {}
          let chunks = []
          const next = () => {
            const { headers, body } = load.perRequest(state)
            client.setHeadersAndBody(headers ?? load.headers, body ?? load.body)
          }
          client.on('headers', () => {
            chunks = []
          })
          client.on('body', (chunk) => chunks.push(chunk))
          // Emitted after each answer, before the connection sends its next request.
          client.on('response', (status) => {
            load.onResponse?.(status, Buffer.concat(chunks).toString(), state)
            next()
          })
          next()
        }
      : undefined
    const instance = autocannon({
      url: server.url,
      requests: [request],
      setupClient,
      connections: settings.connections,
      pipelining: 1,
      // A little longer than the window, so that the load is still on when it closes.
      duration: warmup + duration + 0.5,
      timeout: 10,
    })
    instance.on('response', (_client, status, _bytes, ms) => {
      const c = counts[phase]
      c.completed++
      if (status < 200 || status >= 300) c.non2xx++
      if (phase === 'measured') latencies.push(ms)
    })
    instance.on('reqError', (err) => {
      const c = counts[phase]
      c.conn++
      c.sample ??= `connection: ${err.message}`
    })
    let t0
    let t1
    const opened = sleep(warmup * 1000).then(() => {
      onOpen()
      t0 = performance.now()
      phase = 'measured'
    })
    const closed = opened
      .then(() => sleep(duration * 1000))
      .then(() => {
        phase = 'after'
        t1 = performance.now()
        onClose()
      })
    await instance
    await closed
    const m = counts.measured
    return {
      ...m,
      seconds: (t1 - t0) / 1000,
      ...percentiles(latencies),
      warmErrors: counts['warm-up'].non2xx + counts['warm-up'].conn + counts['warm-up'].bad,
      warmSample: counts['warm-up'].sample,
    }
  })()
}

const newCounts = () => ({ completed: 0, non2xx: 0, conn: 0, bad: 0, sample: undefined })
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function percentiles(values) {
  if (values.length === 0) return { p50: undefined, p99: undefined }
  const v = Float64Array.from(values).sort()
  const at = (q) => v[Math.min(v.length - 1, Math.floor(q * v.length))]
  return { p50: at(0.5), p99: at(0.99) }
}

/** The argon2 ceiling measures its own window and calls back at its edges. */
async function fireCeiling(target, { warmup, duration, onOpen, onClose }) {
  const r = await target.server.run({ warmup, duration, onOpen, onClose })
  return {
    completed: r.verifies,
    seconds: r.seconds,
    p50: r.p50,
    p99: r.p99,
    non2xx: 0,
    conn: 0,
    bad: r.failures,
    sample: r.failures ? 'argon2.verify answered false' : undefined,
    warmErrors: 0,
  }
}

/**
 * After a run the server may still be working through requests whose connections the load
 * generator dropped when it stopped (50 logins are over a second of argon2): wait until its
 * process tree is idle, so that this does not land on the next run, whichever server it is.
 */
async function settle(target, { idleCores = 0.05, maxMs = 20_000 } = {}) {
  const deadline = Date.now() + maxMs
  let quiet = 0
  let last = treeCpuSeconds(processTree(target.server.pid))
  if (last === undefined) return sleep(1000)
  while (Date.now() < deadline) {
    await sleep(250)
    const now = treeCpuSeconds(processTree(target.server.pid))
    if (now === undefined) return
    quiet = (now - last) / 0.25 < idleCores ? quiet + 1 : 0
    last = now
    if (quiet >= 2) return
  }
  log(`  (${target.kind.id} still busy ${maxMs / 1000} s after its run; going on)`)
}

/** One run: warm-up, then the measured window with the process tree's CPU and peak memory around it. */
async function measure(target) {
  const shoot = target.kind.id === 'argon2' ? fireCeiling : fire
  const pid = target.server.pid
  const s = {}
  const r = await shoot(target, {
    warmup: settings.warmup,
    duration: settings.duration,
    onOpen() {
      s.before = processTree(pid)
      s.rssReset = resetPeakRss(s.before)
      s.cpu0 = treeCpuSeconds(s.before)
      s.self0 = selfCpuSeconds()
    },
    onClose() {
      s.self1 = selfCpuSeconds()
      s.after = processTree(pid)
      s.cpu1 = treeCpuSeconds(s.after)
      s.peaks = peakRss(s.after)
    },
  })
  if (!target.server.alive()) throw new Error(`${target.kind.id} died during the run\n${target.server.stderr()}`)
  await settle(target)
  const cpu = s.cpu0 !== undefined && s.cpu1 !== undefined ? s.cpu1 - s.cpu0 : undefined
  return {
    ...r,
    rps: r.completed / r.seconds,
    cpuPerReqMs: cpu !== undefined && r.completed > 0 ? (cpu * 1000) / r.completed : undefined,
    cpuCores: cpu !== undefined ? cpu / r.seconds : undefined,
    loadgenCores: (s.self1 - s.self0) / r.seconds,
    rssSum: s.peaks.length ? s.peaks.reduce((a, b) => a + b, 0) : undefined,
    rssMax: s.peaks.length ? Math.max(...s.peaks) : undefined,
    rssSinceStart: !s.rssReset,
    procs: s.after.length,
  }
}

// ---------------------------------------------------------------------------------------------
// Summaries and the report.

const median = (xs) => {
  const v = xs.filter((x) => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return undefined
  const mid = v.length >> 1
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}
const max = (xs) => {
  const v = xs.filter((x) => x !== undefined)
  return v.length ? Math.max(...v) : undefined
}
const errorsOf = (r) => r.non2xx + r.conn + r.bad

function summarize(scenario, row, peerRow) {
  const rounds = row.rounds
  const ratio = (f) =>
    peerRow === undefined
      ? undefined
      : median(rounds.map((r, i) => (peerRow.rounds[i] ? f(r, peerRow.rounds[i]) : undefined)))
  return {
    label: row.label,
    side: row.kind.side,
    webConcurrency: row.kind.webConcurrency,
    rps: median(rounds.map((r) => r.rps)),
    rpsMin: Math.min(...rounds.map((r) => r.rps)),
    rpsMax: Math.max(...rounds.map((r) => r.rps)),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    non2xx: rounds.reduce((a, r) => a + r.non2xx, 0),
    conn: rounds.reduce((a, r) => a + r.conn, 0),
    bad: rounds.reduce((a, r) => a + r.bad, 0),
    cpuPerReqMs: median(rounds.map((r) => r.cpuPerReqMs)),
    rssSum: max(rounds.map((r) => r.rssSum)),
    rssMax: max(rounds.map((r) => r.rssMax)),
    rssSinceStart: rounds.some((r) => r.rssSinceStart),
    procs: max(rounds.map((r) => r.procs)),
    rpsRatio: ratio((a, b) => a.rps / b.rps),
    cpuRatio: ratio((a, b) => (a.cpuPerReqMs && b.cpuPerReqMs ? a.cpuPerReqMs / b.cpuPerReqMs : undefined)),
  }
}

const fmt = (n, digits = 0) => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits))
const ms = (n) => (n === undefined ? '–' : n < 1 ? fmt(n, 2) : n < 10 ? fmt(n, 1) : fmt(n))
const mb = (bytes) => fmt(bytes / 2 ** 20)

function scenarioTable(scenario, summaries, peerState) {
  const lines = [
    '| server | req/s (min–max) | p50 ms | p99 ms | errors | CPU ms/req | peak RSS MB | req/s ÷ peer | CPU/req ÷ peer |',
    '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |',
  ]
  for (const s of summaries) {
    const errors = s.non2xx + s.conn + s.bad
    const errorCell = errors === 0 ? '0' : `**${errors}** (${s.non2xx} non-2xx, ${s.conn} conn/timeout, ${s.bad} bad body)`
    const rss =
      s.rssSum === undefined
        ? '–'
        : s.procs > 1
          ? `Σ ${mb(s.rssSum)}, max ${mb(s.rssMax)} (${s.procs} procs)`
          : `${mb(s.rssSum)}${s.webConcurrency > 1 ? ' (1 proc: WEB_CONCURRENCY not honoured)' : ''}`
    let rpsRatio
    let cpuRatio
    if (s.side === 'peer') {
      rpsRatio = cpuRatio = 'peer'
    } else if (peerState !== 'ran') {
      rpsRatio = cpuRatio = peerState
    } else {
      rpsRatio = scenario.peer === 'argon2' ? `${fmt(s.rpsRatio, 2)} of ceiling` : `${fmt(s.rpsRatio, 2)}×`
      cpuRatio = s.cpuRatio === undefined ? '–' : `${fmt(s.cpuRatio, 2)}×`
    }
    lines.push(
      `| ${s.label} | ${fmt(s.rps)} (${fmt(s.rpsMin)}–${fmt(s.rpsMax)}) | ${ms(s.p50)} | ${ms(s.p99)} | ${errorCell} | ${fmt(s.cpuPerReqMs, 3)} | ${rss}${s.rssSinceStart ? ' *' : ''} | ${rpsRatio} | ${cpuRatio} |`,
    )
  }
  return lines.join('\n')
}

const LEGEND = `## How to read this

- Each server is its own process (for WEB_CONCURRENCY=2 a node:cluster primary and its workers),
  on loopback; the load generator (autocannon, in the harness's own process) drives one server at a
  time with the same connection count. For each scenario every server runs once per round, in an
  order that alternates from round to round (ours then the peer, then the peer then ours). A run is
  one continuous load; the first seconds are warm-up, the rest is measured. Every number is the
  **median over the rounds**.
- **req/s**: answered requests per second in the measured window (min–max over the rounds: how
  noisy the machine was). **p50 / p99**: latency of the answers at this concurrency, in ms (for the
  argon2 ceiling: one verify, queue included).
- **errors**: in the measured windows, non-2xx answers, connection errors and timeouts, and 2xx
  answers whose body lacks the expected text. Any error anywhere (warm-ups included) makes the run
  exit non-zero with a banner; such numbers are not comparable.
- **CPU ms/req**: user + system CPU of the server's whole process tree (from /proc), per answered
  request; it moves less than req/s when the machine is shared. On Postgres the database's own CPU
  is spent in \`postgres\` and is not counted; embedded, PGlite runs inside Tessera's process.
- **peak RSS**: the largest resident set (VmHWM, reset when the window opens) during the measured
  window; for several processes, their peaks summed (Σ), the largest, and how many. A "*" marks a
  peak since the process started, where it could not be reset.
- **req/s ÷ peer**, **CPU/req ÷ peer**: Tessera's value over the peer's in the same round, then
  the median over rounds. req/s ÷ peer > 1: Tessera answers more; CPU/req ÷ peer > 1: Tessera spends
  more CPU per request. For \`password\` the peer is the argon2.verify ceiling, and the ratio is the
  fraction of it Tessera reaches. "n/a, no peer": the peer cannot do this.
- Both sides sign ES256 JWT access tokens. Tessera runs with LOG_LEVEL=warn (at info it logs a line
  per request; oidc-provider logs nothing). On 2 cores the load generator competes with the server
  for CPU (the progress lines on stderr show both shares): compare rows within a report, not
  numbers across machines.
`

// ---------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now()
  const cpus = os.cpus()
  const scenarioList = ALL_SCENARIOS.filter((s) => settings.scenarios.ids.includes(s.id))
  let kinds = SERVER_KINDS.filter((k) => settings.servers.ids.includes(k.id))
  const cases = CASES.filter((c) => settings.scenarios.ids.includes(c.id))

  const postgres = kinds.some((k) => k.postgres) ? await findPostgres() : { skipped: 'no Postgres server selected' }
  if (postgres.skipped && kinds.some((k) => k.postgres)) {
    if (settings.servers.explicit) throw new Error(`BENCH_SERVERS asks for Tessera on Postgres, but Postgres is unusable: ${postgres.skipped}`)
    kinds = kinds.filter((k) => !k.postgres)
  }
  if (!kinds.some((k) => k.side === 'ours') && scenarioList.length > 0) throw new Error('no Tessera server selected (BENCH_SERVERS)')

  const plan = scenarioList.map((scenario) => ({
    scenario,
    kinds: kinds.filter(
      (k) => k.side === 'ours' || (k.id === 'oidc-provider' && scenario.peer === 'oidc-provider') || (k.id === 'argon2' && scenario.peer === 'argon2'),
    ),
  }))
  const runs = plan.reduce((a, p) => a + p.kinds.length, 0) * settings.rounds
  const machine = `${os.availableParallelism()} cores, ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${os.platform()} ${os.release()}, node ${process.version}`
  const date = new Date().toISOString()
  const header = [
    '# Tessera benchmark',
    '',
    `- date: ${date}`,
    `- machine: ${machine}; load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `- settings: ${settings.connections} connections (autocannon, pipelining 1, timeout 10 s), ${settings.warmup} s warm-up + ${settings.duration} s measured per run, ${settings.rounds} round(s)`,
    `- servers: ${kinds.map((k) => k.id).join(', ')}; Tessera LOG_LEVEL=${settings.tesseraLogLevel}`,
    `- Postgres: ${postgres.display ? `${postgres.display} (a fresh schema per server and scenario, dropped afterwards)` : `not used (${postgres.skipped})`}`,
  ]
  log(header.slice(2).join('\n'))
  log(`${runs} runs of ${settings.warmup + settings.duration} s: at least ${Math.ceil((runs * (settings.warmup + settings.duration)) / 60)} min plus setup`)

  const sections = []
  const failures = []
  let peerVersion
  let argon2Options
  for (const { scenario, kinds: scenarioKinds } of plan) {
    log(`\n== ${scenario.id}: ${scenario.title}`)
    const targets = []
    try {
      for (const kind of scenarioKinds) {
        const t = performance.now()
        const target = await startTarget(kind, scenario, postgres)
        if (target.load) await probe(target)
        log(`  started ${kind.id} and set it up in ${((performance.now() - t) / 1000).toFixed(1)} s`)
        if (kind.id === 'oidc-provider') peerVersion = target.server.oidcProviderVersion
        if (kind.id === 'argon2') argon2Options = target.server.options
        target.rounds = []
        targets.push(target)
      }
      const ours = targets.filter((t) => t.kind.side === 'ours')
      const peers = targets.filter((t) => t.kind.side === 'peer')
      for (let round = 0; round < settings.rounds; round++) {
        const order = round % 2 === 0 ? [...ours, ...peers] : [...peers, ...ours.slice().reverse()]
        for (const target of order) {
          const t = performance.now()
          const r = await measure(target)
          target.rounds[round] = r
          const errs = errorsOf(r)
          log(
            `  round ${round + 1}/${settings.rounds} ${target.kind.id.padEnd(13)} ${fmt(r.rps).padStart(6)} req/s  p50 ${ms(r.p50)} ms  p99 ${ms(r.p99)} ms` +
              `  server CPU ${fmt((r.cpuCores ?? NaN) * 100)}%  load generator CPU ${fmt(r.loadgenCores * 100)}%  ${r.procs} proc(s)` +
              `  (${((performance.now() - t) / 1000).toFixed(1)} s)` +
              (errs + r.warmErrors > 0 ? `  ERRORS: ${r.non2xx} non-2xx, ${r.conn} conn/timeout, ${r.bad} bad body, ${r.warmErrors} in warm-up; e.g. ${r.sample ?? r.warmSample}` : ''),
          )
          if (errs + r.warmErrors > 0) {
            failures.push(`${scenario.id} on ${target.kind.id}, round ${round + 1}: ${r.non2xx} non-2xx, ${r.conn} connection errors/timeouts, ${r.bad} bad bodies, ${r.warmErrors} errors in warm-up; first: ${r.sample ?? r.warmSample}`)
          }
        }
      }
      const peerTarget = peers[0]
      const peerState = peerTarget ? 'ran' : scenario.peer === undefined ? 'n/a, no peer' : `n/a, ${scenario.peer} not run`
      const summaries = targets.map((t) => summarize(scenario, { ...t, label: t.label }, t.kind.side === 'ours' ? peerTarget : undefined))
      sections.push(
        [`## \`${scenario.id}\`: ${scenario.title}`, '', scenarioTable(scenario, summaries, peerState), ...(scenario.peerNote ? ['', scenario.peerNote] : [])].join('\n'),
      )
    } finally {
      for (const t of targets) {
        await t.server.stop()
        await t.server.release?.()
      }
    }
  }

  if (cases.length > 0) {
    const pgForCases = postgres.base !== undefined ? postgres : await findPostgres()
    const caseRun = { ...caseSettings(), duration: settings.duration, warmup: settings.warmup, connections: settings.connections, logLevel: settings.tesseraLogLevel }
    for (const c of cases) {
      if (pgForCases.base === undefined) {
        sections.push(`## \`${c.id}\`\n\nNot run: it needs Postgres (${pgForCases.skipped}).\n`)
        continue
      }
      const r = await c.run({ base: pgForCases.base, log, settings: caseRun })
      sections.push(r.section)
      failures.push(...r.failures)
    }
  }

  const minutes = ((Date.now() - started) / 60000).toFixed(1)
  const footer = [`Total time ${minutes} min; load average at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}.`]
  if (peerVersion) header.push(`- peer: node-oidc-provider ${peerVersion} (in-memory adapter, separate process; bench/reference-server.mjs)`)
  if (argon2Options) {
    const o = argon2Options
    header.push(`- password peer: argon2.verify ceiling, ${o.type} m=${o.memoryCost} t=${o.timeCost} p=${o.parallelism} (Tessera's ARGON2_OPTIONS), ${settings.hashConcurrency} at once (Tessera's default HASH_CONCURRENCY)`)
  }
  const banner =
    failures.length === 0
      ? []
      : [
          '> **!!! THIS RUN HAD ERRORS: ITS NUMBERS INCLUDE FAILED REQUESTS AND ARE NOT COMPARABLE !!!**',
          '>',
          ...failures.map((f) => `> - ${f}`),
          '',
        ]
  const report = [...header, '', ...banner, ...sections.flatMap((s) => [s, '']), LEGEND, footer.join('\n'), ''].join('\n')
  console.log(`\n${report}`)
  if (settings.out) {
    writeFileSync(settings.out, report)
    log(`written to ${settings.out}`)
  }
  if (failures.length > 0) {
    console.log('!'.repeat(78))
    for (const f of failures) console.log(`!!! ${f}`)
    console.log('!!! THESE NUMBERS INCLUDE FAILED REQUESTS AND ARE NOT COMPARABLE')
    console.log('!'.repeat(78))
    process.exitCode = 1
  }
}

let interrupted = false
process.on('exit', killAllNow)
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    interrupted = true
    log(`\n${signal}: stopping the servers`)
    cleanUpAll().finally(() => process.exit(130))
  })
}

main()
  .catch((err) => {
    if (interrupted) return
    console.error(`\nBENCH FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    process.exitCode = 1
  })
  .finally(() => (interrupted ? undefined : cleanUpAll()))
