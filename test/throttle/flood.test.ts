// A flood of password grants from many addresses (64 at once, distinct usernames): argon2 work is
// bounded by the hashing queue, so client_credentials, introspection and /jwks keep their latency
// (p99 within 3x of unloaded), what cannot be hashed is answered 503 at once, and a genuine login
// from another address succeeds within seconds after the flood. The server runs as a process of
// its own, so that the flood's client side does not share its event loop.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { Cluster } from '../helpers/cluster.js'
import { postFrom } from '../helpers/from.js'
import { spawnServer } from '../helpers/process.js'
import { isolatedDatabase } from '../helpers/server.js'

const ADMIN: [string, string] = ['flood-admin', 'flood-admin-secret-0123456789']
const FLOOD_CONNECTIONS = 64
const FLOOD_MS = 3000
const ROUNDS = 3
// 3x of a p99 of a few milliseconds is below what a shared two-core machine can tell apart. (The
// failure this guards against, argon2 holding every signature up, was 800 ms.)
const FLOOR_MS = 50

const database = await isolatedDatabase()
const srv = await spawnServer(t, {
  ...(database === undefined ? { DATA_DIR: 'memory://' } : { DATABASE_URL: database.url }),
  KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
  BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN[0],
  BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN[1],
  LOG_LEVEL: 'info',
})
t.teardown(async () => {
  await srv.stop()
  await database?.drop()
})
const cluster = new Cluster(ADMIN)
const app = await cluster.createClient(srv, { grant_types: ['password', 'client_credentials'] })
const rs = await cluster.createClient(srv, { grant_types: ['client_credentials'], resource_identifiers: ['https://api.example'] })
const probeToken = (await cluster.tokens(srv, { grant_type: 'client_credentials' }, app)).access_token
t.equal((await cluster.admin(srv, 'POST', '/admin/users', { username: 'olive', password: 'olive password' })).status, 201)

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString()
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const probes = {
  client_credentials: () =>
    fetch(`${srv.url}/token`, {
      method: 'POST',
      headers: { authorization: basic(...app), 'content-type': 'application/x-www-form-urlencoded' },
      body: form({ grant_type: 'client_credentials' }),
    }),
  introspection: () =>
    fetch(`${srv.url}/introspect`, {
      method: 'POST',
      headers: { authorization: basic(...rs), 'content-type': 'application/x-www-form-urlencoded' },
      body: form({ token: probeToken }),
    }),
  jwks: () => fetch(`${srv.url}/jwks`),
}
type Probe = keyof typeof probes

/** Each probe, one request at a time, for `ms`; the 99th percentile of its latencies. */
async function p99s(ms: number): Promise<Record<Probe, number>> {
  const result = {} as Record<Probe, number>
  await Promise.all(
    (Object.keys(probes) as Probe[]).map(async (name) => {
      const times: number[] = []
      const until = Date.now() + ms
      while (Date.now() < until) {
        const started = performance.now()
        const res = await probes[name]()
        await res.arrayBuffer()
        if (res.status !== 200) throw new Error(`${name} answered ${res.status}`)
        times.push(performance.now() - started)
      }
      times.sort((a, b) => a - b)
      result[name] = times[Math.min(times.length - 1, Math.floor(times.length * 0.99))]!
    }),
  )
  return result
}

t.test('a flood of password grants does not slow the other paths down, and passes', async (t) => {
  await p99s(500) // warm up
  // Rounds of quiet and flood, alternating, and the median of each: this machine is shared, and
  // what else runs on it moves both kinds of measurement alike.
  const quiet: Array<Record<Probe, number>> = []
  const flooded: Array<Record<Probe, number>> = []
  const statuses = new Map<number, number>()
  for (let round = 0; round < ROUNDS; round++) {
    quiet.push(await p99s(1500))
    const flood = floodFromAnotherProcess({
      url: srv.url,
      auth: app,
      connections: FLOOD_CONNECTIONS,
      durationMs: FLOOD_MS,
      subnet: `127.3.${round}`,
    })
    await new Promise((r) => setTimeout(r, 500))
    flooded.push(await p99s(FLOOD_MS - 1000))
    for (const [status, n] of Object.entries(await flood)) statuses.set(Number(status), (statuses.get(Number(status)) ?? 0) + n)
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const unloaded = {} as Record<Probe, number>
  const loaded = {} as Record<Probe, number>
  for (const name of Object.keys(probes) as Probe[]) {
    unloaded[name] = median(quiet.map((q) => q[name]))
    loaded[name] = median(flooded.map((f) => f[name]))
  }

  t.comment(`p99 unloaded ${JSON.stringify(unloaded)} ms; under the flood ${JSON.stringify(loaded)} ms; flood answers ${JSON.stringify(Object.fromEntries(statuses))}`)
  for (const name of Object.keys(probes) as Probe[]) {
    const bound = Math.max(3 * unloaded[name], FLOOR_MS)
    t.ok(loaded[name] <= bound, `${name}: p99 ${loaded[name].toFixed(1)} ms under the flood, within ${bound.toFixed(1)} ms`)
  }
  t.ok([...statuses.keys()].every((s) => s === 400 || s === 503), 'the flood got 400 (checked) or 503 (queue full), nothing else')
  t.ok((statuses.get(503) ?? 0) > 0, 'the queue turned the excess away')

  const deadline = Date.now() + 5000
  let status = 0
  while (Date.now() < deadline && status !== 200) {
    status = (await postFrom('127.4.0.2', srv.url, '/token', { grant_type: 'password', username: 'olive', password: 'olive password' }, app)).status
    if (status !== 200) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(status, 200, 'a genuine login from another address succeeds within seconds after the flood')
})

/** Runs test/helpers/flood-client.mjs; resolves with how many answers of each status it got. */
function floodFromAnotherProcess(options: Record<string, unknown>): Promise<Record<string, number>> {
  const script = fileURLToPath(new URL('../helpers/flood-client.mjs', import.meta.url))
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [script, JSON.stringify(options)], (err, stdout) => {
      if (err) reject(err)
      else resolve((JSON.parse(stdout) as { statuses: Record<string, number> }).statuses)
    })
  })
}
