// What the Postgres cases beside the side-by-side scenarios share (bench/seeded.mjs,
// bench/revocation-storm.mjs): a schema of their own, the migrations, the admin API, a load of
// one request for a while, the memory of a process. Each case is a module exporting
// `run({ base, log, settings })`, which resolves with `{ section, failures }` (a Markdown section
// for the report, and what went wrong); `npm run bench` runs them after the scenarios, and each
// also runs alone (`node bench/<case>.mjs`, see bench/README.md).
import autocannon from 'autocannon'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import pg from 'pg'
import { reachable, stopAll, tesseraCli } from './servers.mjs'
import { basic, FORM, form, RESOURCE, SCOPE } from './scenarios.mjs'

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** DATABASE_URL, else the local Postgres when something listens there; undefined without one. */
export async function postgresBase() {
  if (process.env.DATABASE_URL) return process.env.DATABASE_URL
  return (await reachable('127.0.0.1', 5432)) ? 'postgres://postgres@127.0.0.1:5432/test' : undefined
}

export async function onDatabase(url, fn) {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** A fresh schema on `base`, migrated; `drop` removes it. */
export async function migratedSchema(base) {
  const schema = `bench_${randomBytes(5).toString('hex')}`
  await onDatabase(base, (c) => c.query(`create schema ${schema}`))
  const url = new URL(base)
  url.searchParams.set('options', `-c search_path=${schema}`)
  const drop = () => onDatabase(base, (c) => c.query(`drop schema if exists ${schema} cascade`))
  try {
    await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [tesseraCli, 'migrate'], {
        env: { PATH: process.env.PATH ?? '', DATABASE_URL: url.toString(), KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'), LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'ignore', 'pipe'],
      })
      let stderr = ''
      child.stderr.on('data', (d) => (stderr += d))
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tessera migrate exited ${code}: ${stderr}`))))
    })
  } catch (err) {
    await drop()
    throw err
  }
  return { url: url.toString(), drop }
}

/** The admin API of a started Tessera (bench/servers.mjs), as its bootstrap admin. */
export async function adminOf(server) {
  const token = await call('POST', `${server.url}/token`, {
    headers: { authorization: basic(server.adminId, server.adminSecret), 'content-type': FORM },
    body: form({ grant_type: 'client_credentials', scope: 'admin' }),
  })
  return {
    /** A client allowed client_credentials for SCOPE and RESOURCE: { client_id, auth }. */
    async client(settings = {}) {
      const c = await call('POST', `${server.adminUrl}/admin/clients`, {
        headers: { authorization: `Bearer ${token.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'bench', grant_types: ['client_credentials'], scopes: [SCOPE], audiences: [RESOURCE], ...settings }),
      })
      return { ...c, auth: basic(c.client_id, c.client_secret) }
    },
  }
}

export async function call(method, url, { headers = {}, body } = {}) {
  const res = await fetch(url, { method, headers, body })
  const text = await res.text()
  if (res.status >= 300) throw new Error(`${method} ${url} answered ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text)
}

export const ccBody = form({ grant_type: 'client_credentials', scope: SCOPE, resource: RESOURCE })

/**
 * `connections` connections sending one request for `warmup` seconds, then for `seconds` more,
 * measured: { rps, p50, p99, errors, sample }. An answer is an error unless it is 2xx and
 * contains `expect`.
 */
export async function rate(url, request, { warmup, seconds, connections }) {
  const once = (duration) =>
    new Promise((resolve, reject) => {
      let bad = 0
      let sample
      const instance = autocannon(
        {
          url,
          connections,
          pipelining: 1,
          duration,
          timeout: 10,
          requests: [
            {
              ...request,
              onResponse(status, body) {
                if (status < 200 || status >= 300 || !body.includes(request.expect)) {
                  bad++
                  sample ??= `${status} ${body.slice(0, 200)}`
                }
              },
            },
          ],
        },
        (err, result) => (err ? reject(err) : resolve({ result, bad, sample })),
      )
      instance.on('reqError', (err) => (sample ??= `connection: ${err.message}`))
    })
  if (warmup > 0) await once(warmup)
  const { result, bad, sample } = await once(seconds)
  return {
    rps: result.requests.total / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: bad + result.errors + result.timeouts,
    sample,
  }
}

/** The resident set of one process now and at its peak (VmRSS, VmHWM), in bytes. */
export function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), peak: kb('VmHWM') }
}

/** p50 and p99 of a list of milliseconds. */
export function percentiles(values) {
  const v = Float64Array.from(values).sort()
  const at = (q) => v[Math.min(v.length - 1, Math.floor(q * v.length))]
  return { p50: at(0.5), p99: at(0.99) }
}

export const fmt = (n, digits = 0) => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits))
export const mb = (bytes) => fmt(bytes / 2 ** 20)

/** Runs one case alone: prints its section, exits 1 on a failure. */
export async function runAlone(run) {
  const log = (text) => process.stderr.write(`${text}\n`)
  const stop = () => stopAll().finally(() => process.exit(130))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  const base = await postgresBase()
  if (base === undefined) {
    log('needs Postgres: set DATABASE_URL, or run one on 127.0.0.1:5432')
    process.exit(2)
  }
  try {
    const { section, failures } = await run({ base, log, settings: caseSettings() })
    console.log(section)
    if (failures.length > 0) {
      for (const f of failures) console.log(`!!! ${f}`)
      process.exitCode = 1
    }
  } finally {
    await stopAll()
  }
}

/** The settings the cases read (bench/README.md), with the harness's own where they overlap. */
export function caseSettings() {
  const num = (name, fallback) => {
    const raw = process.env[name]
    if (raw === undefined || raw === '') return fallback
    const n = Number(raw)
    if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a number ≥ 0, got "${raw}"`)
    return n
  }
  return {
    duration: num('BENCH_DURATION', 10),
    warmup: num('BENCH_WARMUP', 2),
    connections: num('BENCH_CONNECTIONS', 50),
    logLevel: process.env.BENCH_TESSERA_LOG_LEVEL || 'warn',
    seed: {
      clients: num('BENCH_SEED_CLIENTS', 100_000),
      users: num('BENCH_SEED_USERS', 1_000_000),
      deniedJtis: num('BENCH_SEED_DENIED', 200_000),
      revokedGrants: num('BENCH_SEED_GRANTS', 100_000),
    },
    revokeTokens: num('BENCH_REVOKE_TOKENS', 20_000),
    revokeCallers: num('BENCH_REVOKE_CALLERS', 50),
  }
}
