// `node bench/profile.mjs [client_credentials|introspection|password-flood] [seconds]`: runs
// Tessera on Postgres under `node --cpu-prof` with autocannon load on one path (password-flood:
// wrong passwords, from one address whose budget is lifted), then prints where its CPU went:
// the functions with the most self time, and the same time grouped by package (our src/, each
// dependency, node's internals, GC, idle). The .cpuprofile stays in bench/profiles/ for Chrome
// DevTools or speedscope. Needs `npm run build` and a Postgres (DATABASE_URL or 127.0.0.1:5432).
import autocannon from 'autocannon'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { startTessera, stopAll } from './servers.mjs'

const scenario = process.argv[2] ?? 'client_credentials'
const seconds = Number(process.argv[3] ?? 10)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const profileDir = join(dirname(fileURLToPath(import.meta.url)), 'profiles')
mkdirSync(profileDir, { recursive: true })

const basic = (id, secret) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const FORM = 'application/x-www-form-urlencoded'

async function call(url, init) {
  const res = await fetch(url, init)
  const body = await res.json().catch(() => undefined)
  if (res.status >= 300) throw new Error(`${url}: ${res.status} ${JSON.stringify(body)}`)
  return body
}

const base = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const schema = `profile_${randomBytes(4).toString('hex')}`
const admin = new pg.Client({ connectionString: base })
await admin.connect()
await admin.query(`create schema ${schema}`)
const url = new URL(base)
url.searchParams.set('options', `-c search_path=${schema}`)

try {
  const server = await startTessera({
    name: 'tessera',
    databaseUrl: url.toString(),
    nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
    logLevel: process.env.LOG_LEVEL ?? 'warn',
    env: { LOGIN_ADDRESS_FAILURES: '1000000', LOGIN_FREE_FAILURES: '1000' },
  })
  const { access_token: adminToken } = await call(`${server.url}/token`, {
    method: 'POST',
    headers: { authorization: basic(server.adminId, server.adminSecret), 'content-type': FORM },
    body: 'grant_type=client_credentials&scope=admin',
  })
  const client = await call(`${server.adminUrl}/admin/clients`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'profile', grant_types: ['client_credentials', 'password'], scopes: ['read'] }),
  })
  const auth = basic(client.client_id, client.client_secret)
  const ccBody = 'grant_type=client_credentials&scope=read'
  const { access_token: token } = await call(`${server.url}/token`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': FORM },
    body: ccBody,
  })
  const request =
    scenario === 'introspection'
      ? { path: '/introspect', body: `token=${token}` }
      : scenario === 'password-flood'
        ? { path: '/token', body: 'grant_type=password&username=nobody&password=guess' }
        : { path: '/token', body: ccBody }
  const started = Date.now()
  const r = await autocannon({
    url: `${server.url}${request.path}`,
    method: 'POST',
    headers: { authorization: auth, 'content-type': FORM },
    body: request.body,
    connections,
    duration: seconds,
  })
  console.log(`${scenario}: ${Math.round(r.requests.average)} req/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, non-2xx ${r.non2xx}`)
  await stopAll()
  const newest = readdirSync(profileDir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(profileDir, f))
    .filter((f) => statSync(f).mtimeMs >= started)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0]
  if (newest === undefined) throw new Error('no profile written')
  summarise(JSON.parse(readFileSync(newest, 'utf8')), seconds)
  console.log(`profile: ${newest}`)
} finally {
  await stopAll()
  await admin.query(`drop schema if exists ${schema} cascade`)
  await admin.end()
}

/** Self time per function over the last `seconds` of the profile: the load, not the start-up. */
function summarise(profile, seconds) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map()
  const deltas = profile.timeDeltas
  const from = profile.endTime - seconds * 1e6
  let at = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    at += deltas[i] ?? 0
    if (at < from) continue
    const id = profile.samples[i]
    self.set(id, (self.get(id) ?? 0) + (deltas[i] ?? 0))
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const fns = new Map()
  const groups = new Map()
  for (const [id, us] of self) {
    const { callFrame } = byId.get(id)
    const where = callFrame.url.replace(/^file:\/\//, '')
    const name = `${callFrame.functionName || '(anonymous)'} ${where.split('/').slice(-2).join('/')}:${callFrame.lineNumber + 1}`
    fns.set(name, (fns.get(name) ?? 0) + us)
    groups.set(group(callFrame), (groups.get(group(callFrame)) ?? 0) + us)
  }
  const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`
  const busy = total - (groups.get('(idle)') ?? 0)
  console.log(`\nsampled ${(total / 1e6).toFixed(1)} s, busy ${((100 * busy) / total).toFixed(0)}%\n\nby package:`)
  for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, 18)) console.log(`  ${pct(us)}  ${g}`)
  console.log('\nby function (self time):')
  for (const [f, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`  ${pct(us)}  ${f}`)
}

function group({ url, functionName }) {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (m) return m[1]
  if (url.includes('/dist/src/')) return `tessera ${url.split('/dist/src/')[1].split('/')[0]}`
  return url
}
