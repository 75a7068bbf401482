// The freshness invariant (docs/freshness.md) as a property, on three instances over one Postgres:
// random revocations (an access token, a grant, a user's tokens, a client's tokens, the keys)
// interleaved with random issuing and introspection, through random instances, while one
// instance's notification session stalls now and then. Every call's start and end are recorded
// on this process's monotonic clock; no introspection that starts after a revocation returned may
// answer active for anything that revocation revoked.
//
// RACE_MS sets how long the random calls run (default 10 s, which CI runs; RACE_MS=600000 for a
// long run); RACE_SEED repeats a run's random choices (not its timing). Postgres only (npm run test:pg); needs `npm run build` first.
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { Cluster, instanceEnv } from '../helpers/cluster.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { decodeJwt, isolatedDatabase } from '../helpers/server.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'

const API = 'https://api.example'
const ADMIN: [string, string] = ['race-admin', 'race-admin-secret-0123456789']
const RUN_MS = Number(process.env['RACE_MS'] ?? 10_000)
const SEED = Number(process.env['RACE_SEED'] ?? Math.floor(Math.random() * 2 ** 31))
const WORKERS = 8

type Credentials = [string, string]

interface Token {
  value: string
  kind: 'access' | 'refresh'
  client: string
  user: string | undefined
  grant: string | undefined
  kid: string | undefined
  /** When the call that issued it began and ended. */
  started: number
  issued: number
}

interface Revocation {
  what: string
  started: number
  returned: number
  covers(token: Token): boolean
}

interface Answer {
  token: Token
  instance: number
  started: number
  active: boolean
}

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const proxy = await TcpProxy.forDatabase(database.url)
  const env = instanceEnv(database.url, ADMIN)
  const instances: ServerProcess[] = []
  t.teardown(async () => {
    proxy.resume()
    for (const srv of instances) await srv.stop()
    await proxy.close()
    await database.drop()
  })
  instances.push(await spawnServer(t, env))
  instances.push(await spawnServer(t, env))
  // The third hears of changes through a proxy the test stalls at random.
  instances.push(await spawnServer(t, { ...env, DATABASE_LISTEN_URL: proxy.url(database.url) }))
  await run(instances, proxy)
}

async function run(instances: ServerProcess[], proxy: TcpProxy) {
  const cluster = new Cluster(ADMIN)
  let random = mulberry32(SEED)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!
  const srv = () => pick(instances)

  let adminToken: string | undefined
  const admin = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    for (let attempt = 0; ; attempt++) {
      adminToken ??= (await cluster.tokens(instances[0]!, { grant_type: 'client_credentials', scope: 'admin' }, ADMIN)).access_token
      const res = await fetch(`${srv().adminUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      })
      const text = await res.text()
      // A key rotation ends the admin's token too; and an instance that has not polled the new
      // key yet refuses the new token (it fails closed) for up to a poll interval.
      if (res.status === 401 && attempt < 50) {
        adminToken = undefined
        await sleep(50)
        continue
      }
      return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
    }
  }
  const createClient = async (settings: Record<string, unknown>): Promise<Credentials> => {
    const r = await admin('POST', '/admin/clients', { name: 'race client', scopes: ['read'], ...settings })
    if (r.status !== 201) throw new Error(`create client: ${r.status} ${JSON.stringify(r.body)}`)
    return [r.body.client_id, r.body.client_secret]
  }

  const rs = await createClient({ grant_types: ['client_credentials'], resource_identifiers: [API] })
  const apps: Credentials[] = []
  for (let i = 0; i < 3; i++) apps.push(await createClient({ grant_types: ['password', 'client_credentials', 'refresh_token'], audiences: [API] }))
  const users: Array<{ id: string; name: string }> = []
  for (let i = 0; i < 4; i++) {
    const name = `racer${i}`
    const r = await admin('POST', '/admin/users', { username: name, password: `${name} password` })
    if (r.status !== 201) throw new Error(`create user: ${r.status}`)
    users.push({ id: r.body.id, name })
  }

  const tokens: Token[] = []
  const revocations: Revocation[] = []
  const answers: Answer[] = []
  /** The latest refresh token of each grant that is not being refreshed right now. */
  const refreshable = new Map<string, { token: Token; app: Credentials }>()
  let rotating = false
  const counts: Record<string, number> = {}
  const count = (what: string) => (counts[what] = (counts[what] ?? 0) + 1)

  const recent = (kind?: Token['kind']) => {
    const from = tokens.filter((x) => kind === undefined || x.kind === kind).slice(-40)
    return from.length === 0 ? undefined : pick(from)
  }
  const post = (path: string, form: Record<string, string>, auth: Credentials, on = srv()) => cluster.post(on, path, form, auth)
  const accessToken = (value: string, started: number, client: string, user?: string, grant?: string): Token => {
    const { header } = decodeJwt(value)
    return { value, kind: 'access', client, user, grant, kid: header.kid, started, issued: performance.now() }
  }

  const introspect = async (token: Token, instance: number) => {
    const started = performance.now()
    const r = await post('/introspect', { token: token.value }, rs, instances[instance])
    if (r.status !== 200) throw new Error(`introspect: ${r.status} ${r.text}`)
    answers.push({ token, instance, started, active: r.body.active === true })
    count('introspect')
  }
  /**
   * Records a revocation, then reads it back at once: the latest few tokens it covers, on every
   * instance (where a stale view shows first).
   */
  const revoked = async (r: Revocation) => {
    revocations.push(r)
    const covered = tokens.filter((x) => r.covers(x)).slice(-3)
    await Promise.all(covered.flatMap((x) => instances.map((_, i) => introspect(x, i))))
  }
  const operations: Array<[number, () => Promise<void>]> = [
    [
      30,
      async () => {
        // Half the time a token that a recent revocation covers: where a stale answer would be.
        const last = revocations.slice(-10)
        const token = random() < 0.5 && last.length > 0 ? tokens.findLast((x) => pick(last).covers(x)) : recent()
        if (token === undefined) return
        await introspect(token, Math.floor(random() * instances.length))
      },
    ],
    [
      6,
      async () => {
        const app = pick(apps)
        const started = performance.now()
        const r = await post('/token', { grant_type: 'client_credentials' }, app)
        if (r.status === 200) tokens.push(accessToken(r.body.access_token, started, app[0]))
        count('client_credentials')
      },
    ],
    [
      6,
      async () => {
        const app = pick(apps)
        const user = pick(users)
        const started = performance.now()
        const r = await post('/token', { grant_type: 'password', username: user.name, password: `${user.name} password` }, app)
        if (r.status !== 200) return
        const access = accessToken(r.body.access_token, started, app[0], user.id, decodeJwt(r.body.access_token).payload.sid)
        const refresh: Token = { ...access, value: r.body.refresh_token, kind: 'refresh', kid: undefined }
        tokens.push(access, refresh)
        refreshable.set(access.grant!, { token: refresh, app })
        count('password')
      },
    ],
    [
      6,
      async () => {
        if (refreshable.size === 0) return
        const [grant, { token, app }] = pick([...refreshable.entries()])
        // One refresh of a grant at a time: two would be reuse, which revokes the family.
        refreshable.delete(grant)
        const started = performance.now()
        const r = await post('/token', { grant_type: 'refresh_token', refresh_token: token.value }, app)
        if (r.status !== 200) return
        const access = accessToken(r.body.access_token, started, app[0], token.user, grant)
        const refresh: Token = { ...access, value: r.body.refresh_token, kind: 'refresh', kid: undefined }
        tokens.push(access, refresh)
        refreshable.set(grant, { token: refresh, app })
        count('refresh')
      },
    ],
    [
      4,
      async () => {
        // An access token at /revoke, sometimes one revoked already (a retry, a second logout).
        const token = random() < 0.3 && revocations.length > 0 ? lastRevokedAccessToken() : recent('access')
        if (token !== undefined) await revokeAccessToken(token, random() < 0.4)
      },
    ],
    [
      3,
      async () => {
        const token = recent('refresh')
        if (token === undefined) return
        const app = apps.find((a) => a[0] === token.client)!
        const started = performance.now()
        const r = await post('/revoke', { token: token.value }, app)
        if (r.status !== 200) throw new Error(`revoke: ${r.status} ${r.text}`)
        await revoked({ what: `grant ${token.grant}`, started, returned: performance.now(), covers: (x) => x.grant === token.grant })
        count('revoke grant')
      },
    ],
    [
      2,
      async () => {
        const user = pick(users)
        const started = performance.now()
        const r = await admin('POST', `/admin/users/${user.id}/revoke-tokens`)
        if (r.status !== 204) throw new Error(`revoke user: ${r.status}`)
        // Every grant of the user made before the revocation began; one made meanwhile may be either.
        const grants = new Set(tokens.filter((x) => x.user === user.id && x.issued < started).map((x) => x.grant))
        await revoked({ what: `user ${user.name}`, started, returned: performance.now(), covers: (x) => grants.has(x.grant) })
        count('revoke user')
      },
    ],
    [
      2,
      async () => {
        const app = pick(apps)
        const started = performance.now()
        const r = await admin('POST', `/admin/clients/${app[0]}/revoke-tokens`)
        if (r.status !== 204) throw new Error(`revoke client: ${r.status}`)
        const grants = new Set(tokens.filter((x) => x.client === app[0] && x.grant !== undefined && x.issued < started).map((x) => x.grant))
        await revoked({
          what: `client ${app[0]}`,
          started,
          returned: performance.now(),
          covers: (x) => x.client === app[0] && (grants.has(x.grant) || (x.grant === undefined && x.issued < started)),
        })
        count('revoke client')
      },
    ],
    [
      0.3,
      async () => {
        if (rotating) return
        rotating = true
        try {
          const started = performance.now()
          const r = await admin('POST', '/admin/keys/rotate?immediate=true')
          if (r.status !== 200) throw new Error(`rotate: ${r.status} ${JSON.stringify(r.body)}`)
          const kid = r.body.kid as string
          await revoked({ what: `keys but ${kid}`, started, returned: performance.now(), covers: (x) => x.kind === 'access' && x.kid !== kid && x.started < started })
          count('rotate keys')
        } finally {
          rotating = false
        }
      },
    ],
  ]
  /** `retry`: the caller gives up waiting and sends it again while the first is under way. */
  async function revokeAccessToken(token: Token, retry: boolean): Promise<void> {
    const app = apps.find((a) => a[0] === token.client)!
    const revokeIt = async () => {
      const started = performance.now()
      const r = await post('/revoke', { token: token.value }, app)
      if (r.status !== 200) throw new Error(`revoke: ${r.status} ${r.text}`)
      await revoked({ what: `access token ${decodeJwt(token.value).payload.jti}`, started, returned: performance.now(), covers: (x) => x.value === token.value })
      count('revoke access token')
    }
    if (!retry) return revokeIt()
    const first = revokeIt()
    await sleep(random() * 50)
    await Promise.all([first, revokeIt()])
  }
  const lastRevokedAccessToken = () => {
    const last = revocations.findLast((r) => r.what.startsWith('access token'))
    return last && tokens.findLast((x) => x.kind === 'access' && last.covers(x))
  }
  const total = operations.reduce((sum, [w]) => sum + w, 0)
  const operation = () => {
    let x = random() * total
    for (const [w, op] of operations) if ((x -= w) < 0) return op
    return operations[0]![1]
  }

  t.test(`no introspection after a revocation returned answers active for what it revoked (seed ${SEED}, ${RUN_MS} ms)`, async (t) => {
    for (const instance of instances) t.ok(await cluster.leased(instance), 'leased before the run')
    random = mulberry32(SEED)
    const end = performance.now() + RUN_MS
    let stalls = 0
    const chaos = (async () => {
      while (performance.now() < end) {
        await sleep(200 + random() * 1500)
        proxy.stall()
        stalls++
        const resume = performance.now() + 200 + random() * 1200
        // What a stalled instance is most likely to get wrong: a revocation it has not heard of
        // yet, sent twice, read back at once.
        const live = tokens.filter((x) => x.kind === 'access' && !revocations.some((r) => r.covers(x))).slice(-20)
        if (live.length > 0 && random() < 0.7) await revokeAccessToken(pick(live), true)
        await sleep(resume - performance.now())
        proxy.resume()
      }
    })()
    const workers = Array.from({ length: WORKERS }, async () => {
      while (performance.now() < end) await operation()()
    })
    await Promise.all([...workers, chaos])
    proxy.resume()

    const violations: string[] = []
    for (const answer of answers) {
      if (!answer.active) continue
      for (const r of revocations) {
        if (r.returned < answer.started && r.covers(answer.token)) {
          violations.push(
            `instance ${answer.instance} answered active ${(answer.started - r.returned).toFixed(1)} ms after the revocation of ${r.what} returned (${answer.token.kind} token)`,
          )
        }
      }
    }
    t.comment(`calls: ${JSON.stringify(counts)}; ${stalls} stalls of the third instance's notifications`)
    t.ok(answers.filter((a) => a.active).length > 0 && revocations.length > 0, 'the run introspected live tokens and revoked some')
    t.same(violations.slice(0, 20), [], `no stale answer (${violations.length} of ${answers.length} answers)`)
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A small seeded PRNG, so that a failing run can be replayed with RACE_SEED. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
