// `tessera serve` with WEB_CONCURRENCY=2 on a fresh Postgres schema: a primary and two workers,
// each a whole instance, on shared listeners. Which worker answered a request is read from its
// request log line (pino's `pid`). Postgres only (npm run test:pg); needs `npm run build` first.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as http from 'node:http'
import * as net from 'node:net'
import t from 'tap'
import { form, openSockets, send, type Answer } from '../helpers/connections.js'
import { cliPath, spawnServer, type ServerProcess } from '../helpers/process.js'
import { basic, isolatedDatabase } from '../helpers/server.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves to the first log line (from now on, or already there) that `match` accepts. */
async function logLine(srv: ServerProcess, match: (line: any) => boolean, what: string, from = 0): Promise<any> {
  for (let waited = 0; ; waited += 20) {
    const line = srv.logs.slice(from).find(match)
    if (line !== undefined) return line
    if (waited > 60_000) throw new Error(`no log line: ${what}`)
    await sleep(20)
  }
}

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  t.teardown(() => database.drop())
  const env = {
    DATABASE_URL: database.url,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    WEB_CONCURRENCY: '2',
    // Long, so that a shutdown that ran into its deadline instead of draining shows.
    SHUTDOWN_TIMEOUT: '30',
    // Room for every login the drain test keeps in flight at once (see test/server/shutdown.test.ts).
    HASH_QUEUE: '64',
    LOGIN_FREE_FAILURES: '64',
  }
  const srv = await spawnServer(t, env)
  const primary = srv.child.pid!
  const ready = async (count: number) => {
    for (let waited = 0; srv.logs.filter((l) => l.msg === 'worker ready').length < count; waited += 20) {
      if (waited > 60_000) throw new Error(`${count} workers not ready`)
      await sleep(20)
    }
  }
  await ready(2)
  await runTests(srv, primary)
}

async function runTests(srv: ServerProcess, primary: number) {
  /**
   * One request on a connection of its own (so the primary hands each to the next worker), and
   * the pid of the worker that answered it. Requests go one at a time: the next request log line
   * is this request's.
   */
  const served = async (url: string, opts: Parameters<typeof send>[2]): Promise<Answer & { pid: number }> => {
    const before = srv.logs.length
    const agent = new http.Agent({ keepAlive: false })
    const answer = await send(agent, url, opts).answer
    const line = await logLine(srv, (l) => l.msg === 'request', `request log line for ${url}`, before)
    return { ...answer, pid: line.pid }
  }

  // The admin client the first start made, from the one announcement on stderr.
  const announced = /client_id: +(\S+)\n +client_secret: +(\S+)/.exec(srv.stderr())
  const adminAuth = basic(announced?.[1] ?? '', announced?.[2] ?? '')
  const tokenRequest = (auth: string, fields: Record<string, string>) => ({
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
    body: form(fields),
  })
  const adminToken = (await served(`${srv.url}/token`, tokenRequest(adminAuth, { grant_type: 'client_credentials', scope: 'admin' }))).body.access_token as string
  const admin = async (path: string, body: unknown) => {
    const r = await served(`${srv.adminUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    if (r.status !== 201) throw new Error(`${path}: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body
  }
  const client = await admin('/admin/clients', { name: 'workers', grant_types: ['password', 'client_credentials'], scopes: ['read'] })
  const auth = basic(client.client_id, client.client_secret)
  await admin('/admin/users', { username: 'wendy', password: 'wendy password' })

  t.test('the primary migrates once and forks two workers that listen on the same two ports', async (t) => {
    const workers = srv.logs.filter((l) => l.msg === 'worker ready').map((l) => l.worker as number)
    t.equal(new Set(workers).size, 2, 'two workers ready')
    t.notOk(workers.includes(primary), 'neither is the primary')
    const listening = srv.logs.filter((l) => l.msg === 'listening')
    const publicLines = listening.filter((l) => l.url !== undefined)
    const adminLines = listening.filter((l) => l.adminUrl !== undefined)
    t.same(publicLines.map((l) => l.pid).sort(), [...workers].sort(), 'each worker logs its public listener')
    t.same(adminLines.map((l) => l.pid).sort(), [...workers].sort(), 'and its admin listener')
    t.same([...new Set(publicLines.map((l) => l.url))], [srv.url], 'one public port for both')
    t.same([...new Set(adminLines.map((l) => l.adminUrl))], [srv.adminUrl], 'one admin port for both')
    t.not(srv.url, srv.adminUrl)
    const migrations = srv.logs.filter((l) => l.msg === 'migrations applied')
    t.equal(migrations.length, 1, 'migrations applied once')
    t.equal(migrations[0]?.pid, primary, 'by the primary, before the workers')
    t.equal(srv.stderr().split('Tessera created an admin client').length - 1, 1, "the admin client's secret printed once")
  })

  t.test('requests are served by both workers, and a token issued by one introspects active on the other', async (t) => {
    const issued = new Map<number, string>()
    for (let i = 0; i < 20 && issued.size < 2; i++) {
      const r = await served(`${srv.url}/token`, tokenRequest(auth, { grant_type: 'client_credentials' }))
      t.equal(r.status, 200)
      issued.set(r.pid, r.body.access_token)
    }
    t.equal(issued.size, 2, `tokens issued by two worker processes (${[...issued.keys()].join(', ')})`)
    for (const [issuer, token] of issued) {
      let checked = false
      for (let i = 0; i < 20 && !checked; i++) {
        const r = await served(`${srv.url}/introspect`, tokenRequest(auth, { token }))
        if (r.pid === issuer) continue
        t.match(r.body, { active: true, client_id: client.client_id }, `issued by ${issuer}, active at ${r.pid}`)
        checked = true
      }
      t.ok(checked, 'introspected by the other worker')
    }
  })

  t.test('a worker killed with SIGKILL is replaced, and the service keeps answering meanwhile', async (t) => {
    const [victim, survivor] = srv.logs.filter((l) => l.msg === 'worker ready').map((l) => l.worker as number)
    const mark = srv.logs.length
    process.kill(victim!, 'SIGKILL')
    const died = await logLine(srv, (l) => l.msg === 'worker exited unexpectedly', 'the primary notices', mark)
    t.match(died, { pid: primary, worker: victim, signal: 'SIGKILL' })
    // Give the primary a moment to take the dead worker off the listeners too.
    await sleep(200)
    const meanwhile: number[] = []
    for (let i = 0; i < 6; i++) {
      const r = await served(`${srv.url}/token`, tokenRequest(auth, { grant_type: 'client_credentials' }))
      t.equal(r.status, 200, `answered (${r.pid})`)
      meanwhile.push(r.pid)
    }
    t.notOk(meanwhile.includes(victim!), 'never by the dead worker')
    const replacement = (await logLine(srv, (l) => l.msg === 'worker ready', 'a new worker', mark)).worker as number
    t.not(replacement, victim)
    t.not(replacement, survivor)
    const pids = new Set<number>()
    for (let i = 0; i < 20 && !pids.has(replacement); i++) {
      const r = await served(`${srv.url}/token`, tokenRequest(auth, { grant_type: 'client_credentials' }))
      t.equal(r.status, 200)
      pids.add(r.pid)
    }
    t.ok(pids.has(replacement), 'the replacement serves, on the same port')
  })

  t.test('SIGTERM to the primary: every worker answers what is in flight, with Connection: close, and all exit 0', async (t) => {
    const workers = srv.logs.filter((l) => l.msg === 'worker ready').map((l) => l.worker as number).slice(-2)
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
    t.teardown(() => agent.destroy())
    const mark = srv.logs.length
    const warm = await Promise.all(
      Array.from({ length: 8 }, () => send(agent, `${srv.url}/token`, tokenRequest(auth, { grant_type: 'client_credentials' })).answer),
    )
    t.same(new Set(warm.map((a) => a.status)), new Set([200]))
    t.equal(openSockets(agent), 8, 'eight keep-alive connections')
    await logLine(srv, () => srv.logs.slice(mark).filter((l) => l.msg === 'request').length >= 8, 'the warm-up requests logged', mark)
    const servedBy = new Set(srv.logs.slice(mark).filter((l) => l.msg === 'request').map((l) => l.pid))
    t.equal(servedBy.size, 2, 'held by both workers')

    // Logins held back by their last byte: in flight at both workers through the signal.
    const held = Array.from({ length: 8 }, () =>
      send(agent, `${srv.url}/token`, { ...tokenRequest(auth, { grant_type: 'password', username: 'wendy', password: 'wendy password' }), holdLastByte: true }),
    )
    await sleep(150)
    const since = Date.now()
    let exit: { code: number | null; signal: string | null; afterMs: number } | undefined
    const closed = new Promise<void>((resolve) => srv.child.once('close', () => resolve()))
    srv.child.once('exit', (code, signal) => (exit = { code, signal, afterMs: Date.now() - since }))
    const giveUp = setTimeout(() => srv.child.kill('SIGKILL'), 25_000)
    srv.child.kill('SIGTERM')
    for (const pid of workers) await logLine(srv, (l) => l.msg === 'shutting down' && l.pid === pid, `worker ${pid} draining`, mark)
    for (const request of held) request.release()

    for (const [i, a] of (await Promise.all(held.map((h) => h.answer))).entries()) {
      t.equal(a.status, 200, `held login ${i + 1}: 200`)
      t.equal(a.headers['connection'], 'close', `held login ${i + 1}: Connection: close`)
      t.type(a.body?.access_token, 'string')
    }
    await closed
    clearTimeout(giveUp)
    t.same({ code: exit?.code, signal: exit?.signal }, { code: 0, signal: null }, 'the primary exits 0')
    t.ok(exit!.afterMs < 10_000, `${exit!.afterMs} ms after the signal, long before the 30 s deadline`)
    t.equal(openSockets(agent), 0, 'every connection closed')
    for (const pid of workers) {
      t.match(srv.logs.find((l) => l.msg === 'shut down' && l.pid === pid), { destroyed: 0 }, `worker ${pid} drained`)
      t.match(srv.logs.find((l) => l.msg === 'worker stopped' && l.worker === pid), { pid: primary, code: 0 })
    }
    t.match(srv.logs.find((l) => l.msg === 'shut down' && l.pid === primary), { code: 0 })
  })

  t.test('workers that cannot start are restarted a few times, then the primary gives up with a clear error', async (t) => {
    // The public port is taken, so every worker's listen fails.
    const taken = net.createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    t.teardown(() => taken.close())
    const database = (await isolatedDatabase())!
    t.teardown(() => database.drop())
    const run = spawnSync(process.execPath, [cliPath, 'serve'], {
      env: {
        PATH: process.env['PATH'] ?? '',
        DATABASE_URL: database.url,
        KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
        WEB_CONCURRENCY: '2',
        PORT: String((taken.address() as net.AddressInfo).port),
        ADMIN_PORT: '0',
      },
      encoding: 'utf8',
      timeout: 120_000,
    })
    t.equal(run.status, 1, 'exit code 1')
    t.match(run.stderr, /EADDRINUSE/, "the workers' own error")
    t.match(run.stderr, /^tessera: workers keep exiting before they serve \(5 times in a row\); giving up/m, 'and the reason it stopped')
    const restarts = run.stdout.split('\n').filter((l) => l.includes('"msg":"worker exited unexpectedly"')).length
    t.ok(restarts >= 4, `${restarts} restarts first, with a growing delay`)
    t.notMatch(run.stderr, /\n\s+at /, 'no stack trace')
  })
}
