// SIGTERM to `tessera serve` while clients hold keep-alive connections: what is in flight is
// answered (with Connection: close), every connection is closed, and the process exits within
// SHUTDOWN_TIMEOUT. The built server as a separate process, on this run's backend.
import { randomBytes } from 'node:crypto'
import * as http from 'node:http'
import t, { type Test } from 'tap'
import { loadConfig } from '../../src/config.js'
import { RawConnection, form, openSockets, send, type Answer } from '../helpers/connections.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, basic, isolatedDatabase } from '../helpers/server.js'
import { TcpProxy } from '../helpers/tcp-proxy.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
// Time for bytes written on loopback to be read by the server before the signal that follows.
const SETTLE_MS = 150

interface Exit {
  code: number | null
  signal: string | null
  afterMs: number
}

/** A server on a database of its own (embedded in memory, or a fresh Postgres schema). */
async function start(t: Test, env: Record<string, string> = {}): Promise<ServerProcess> {
  const database = await isolatedDatabase()
  if (database !== undefined) t.teardown(() => database.drop())
  return spawnServer(t, {
    ...(database === undefined
      ? { DATA_DIR: 'memory://' }
      : { DATABASE_URL: database.url, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    // Room for every login these tests keep in flight at once: the default hashing queue is
    // shorter, and each login counts against the username until its password has checked out.
    HASH_QUEUE: '64',
    LOGIN_FREE_FAILURES: '64',
    ...env,
  })
}

/**
 * Sends SIGTERM to the server process itself; resolves once it has exited and its output is read.
 * A server still running after `giveUpMs` is killed (and the exit shows signal SIGKILL).
 */
async function terminate(srv: ServerProcess, giveUpMs = 20_000): Promise<Exit> {
  const since = Date.now()
  let exit: Exit | undefined
  const closed = new Promise<void>((resolve) => srv.child.once('close', () => resolve()))
  srv.child.once('exit', (code, signal) => (exit = { code, signal, afterMs: Date.now() - since }))
  srv.child.kill('SIGTERM')
  const giveUp = setTimeout(() => srv.child.kill('SIGKILL'), giveUpMs)
  await closed
  clearTimeout(giveUp)
  return exit!
}

/** Resolves once the server has logged a line with this message (within 30 s). */
async function logged(srv: ServerProcess, msg: string): Promise<void> {
  for (let waited = 0; !srv.logs.some((l) => l.msg === msg); waited += 10) {
    if (waited > 30_000) throw new Error(`no "${msg}" in the log`)
    await sleep(10)
  }
}

async function adminToken(srv: ServerProcess): Promise<string> {
  const res = await fetch(`${srv.url}/token`, {
    method: 'POST',
    headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'client_credentials', scope: 'admin' }),
  })
  return ((await res.json()) as { access_token: string }).access_token
}

/** A client that may use the password grant, and a user to log in as. */
async function loginSetup(srv: ServerProcess): Promise<{ auth: string; login: string }> {
  const token = await adminToken(srv)
  const admin = async (path: string, body: unknown) => {
    const res = await fetch(`${srv.adminUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    if (res.status !== 201) throw new Error(`${path}: ${res.status} ${await res.text()}`)
    return (await res.json()) as Record<string, string>
  }
  const client = await admin('/admin/clients', { name: 'drain', grant_types: ['password', 'client_credentials'], scopes: ['read'] })
  await admin('/admin/users', { username: 'dora', password: 'dora password' })
  return {
    auth: basic(client['client_id']!, client['client_secret']!),
    login: form({ grant_type: 'password', username: 'dora', password: 'dora password' }),
  }
}

const tokenRequest = (auth: string, body: string) => ({
  method: 'POST',
  headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
  body,
})

const answered = (t: Test, a: Answer, what: string) => {
  t.equal(a.status, 200, `${what}: 200`)
  t.equal(a.headers['connection'], 'close', `${what}: Connection: close`)
  t.ok(typeof a.body?.access_token === 'string' || Array.isArray(a.body?.clients), `${what}: a real answer`)
}

t.test('SHUTDOWN_TIMEOUT is whole seconds, 1 to 3600, default 10', async (t) => {
  t.equal(loadConfig({}).shutdownTimeout, 10)
  t.equal(loadConfig({ SHUTDOWN_TIMEOUT: '3' }).shutdownTimeout, 3)
  for (const bad of ['0', '1.5', '3601', 'soon']) t.throws(() => loadConfig({ SHUTDOWN_TIMEOUT: bad }), /SHUTDOWN_TIMEOUT/, bad)
})

t.test('requests in flight on keep-alive connections are answered with Connection: close, then the server exits 0', async (t) => {
  // Long, so that an exit that waited for the deadline instead of draining shows.
  const srv = await start(t, { SHUTDOWN_TIMEOUT: '30' })
  const { auth, login } = await loginSetup(srv)
  const token = await adminToken(srv)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 })
  t.teardown(() => agent.destroy())

  // Sixteen keep-alive connections, open and idle, as a client pool holds them.
  const warm = await Promise.all(
    Array.from({ length: 16 }, () => send(agent, `${srv.url}/token`, tokenRequest(auth, form({ grant_type: 'client_credentials' }))).answer),
  )
  t.same(new Set(warm.map((a) => a.status)), new Set([200]))
  t.equal(openSockets(agent), 16, 'sixteen connections kept open')

  // On them: logins held back by their last byte (the server has them; they stay in flight
  // through the signal), and a burst of logins sent whole just before it, each busy for tens of
  // milliseconds of argon2.
  const held = Array.from({ length: 6 }, () => send(agent, `${srv.url}/token`, { ...tokenRequest(auth, login), holdLastByte: true }))
  // And on connections already open, a request whose headers are not complete at the signal: it
  // arrives during the drain, on both listeners.
  const lateToken = await RawConnection.open(srv.url)
  const lateAdmin = await RawConnection.open(srv.adminUrl)
  for (const [raw, request] of [
    [lateToken, `POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\r\ngrant_type=client_credentials`],
    [lateAdmin, `GET /admin/clients HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`],
  ] as const) {
    raw.write(request)
    t.equal((await raw.response()).status, 200, 'a first request on the connection')
  }
  lateToken.write(`POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\n`)
  lateAdmin.write(`GET /admin/clients HTTP/1.1\r\nHost: x\r\n`)
  await sleep(SETTLE_MS)
  const burst = Array.from({ length: 10 }, () => send(agent, `${srv.url}/token`, tokenRequest(auth, login)).answer)
  await sleep(50)

  const exited = terminate(srv)
  // The drain starts in the same turn as this line is written.
  await logged(srv, 'shutting down')
  for (const request of held) request.release()
  lateToken.write(`Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\r\ngrant_type=client_credentials`)
  lateAdmin.write(`Authorization: Bearer ${token}\r\n\r\n`)

  for (const [i, a] of (await Promise.all(held.map((h) => h.answer))).entries()) answered(t, a, `held login ${i + 1}`)
  answered(t, await lateToken.response(), 'token request arriving during the drain')
  answered(t, await lateAdmin.response(), 'admin request arriving during the drain')
  const bursts = await Promise.all(burst)
  t.same(bursts.map((a) => a.status), bursts.map(() => 200), 'every login of the burst answered')
  const closing = bursts.filter((a) => a.headers['connection'] === 'close').length
  t.ok(closing > 0, `${closing} of the burst answered during the drain, with Connection: close`)
  await Promise.all([lateToken.closed, lateAdmin.closed])
  t.pass('the server closed each connection after its answer')

  const exit = await exited
  t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'exit code 0')
  t.ok(exit.afterMs < 10_000, `exited ${exit.afterMs} ms after the signal, long before the 30 s deadline`)
  t.equal(openSockets(agent), 0, 'no connection left open')
  const messages = srv.logs.map((l) => l.msg)
  t.ok(messages.includes('shutting down'))
  t.match(srv.logs.find((l) => l.msg === 'shut down'), { destroyed: 0 }, 'and says when it is done')
})

t.test('keep-alive connections idle at the signal, and ones that never sent a byte, do not hold the exit up', async (t) => {
  const srv = await start(t, { SHUTDOWN_TIMEOUT: '30' })
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
  t.teardown(() => agent.destroy())
  await Promise.all(Array.from({ length: 4 }, () => send(agent, `${srv.url}/healthz`, {}).answer))
  await Promise.all(Array.from({ length: 4 }, () => send(agent, `${srv.adminUrl}/admin/keys`, {}).answer))
  t.equal(openSockets(agent), 8, 'idle keep-alive connections to both listeners')
  const silent = await Promise.all([RawConnection.open(srv.url), RawConnection.open(srv.adminUrl)])
  await sleep(SETTLE_MS)

  const exit = await terminate(srv)
  t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'exit code 0')
  t.ok(exit.afterMs < 5_000, `exited ${exit.afterMs} ms after the signal`)
  await Promise.all(silent.map((s) => s.closed))
  t.equal(openSockets(agent), 0, 'every connection closed by the server')
  t.match(srv.logs.find((l) => l.msg === 'shut down'), { destroyed: 0 })
})

t.test('a connection stuck in the middle of a request is destroyed at SHUTDOWN_TIMEOUT, and the server still exits', async (t) => {
  const srv = await start(t, { SHUTDOWN_TIMEOUT: '2' })
  // Half a request each, then nothing: a client that hung, or one that is too slow to wait for.
  const stuck = await Promise.all([RawConnection.open(srv.url), RawConnection.open(srv.adminUrl)])
  stuck[0]!.write('POST /token HTTP/1.1\r\nHost: x\r\nContent-Le')
  stuck[1]!.write('GET /admin/keys HTTP/1.1\r\n')
  await sleep(SETTLE_MS)

  const exit = await terminate(srv)
  // The drain's deadline: SHUTDOWN_TIMEOUT less the quarter left to closing the rest.
  t.ok(exit.afterMs >= 1_500, `waited for the drain's deadline (${exit.afterMs} ms)`)
  t.ok(exit.afterMs < 6_000, `then exited (${exit.afterMs} ms after the signal)`)
  t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'exit code 0: the stop asked for happened')
  await Promise.all(stuck.map((s) => s.closed))
  t.match(
    srv.logs.find((l) => l.level === 40),
    { destroyed: 2, msg: /destroyed/ },
    'a warning with the count of connections destroyed',
  )
  t.match(srv.logs.find((l) => l.msg === 'shut down'), { destroyed: 2 })
})

t.test('a database that stops answering (a half-open connection) does not hold the exit past SHUTDOWN_TIMEOUT', { skip: !process.env['DATABASE_URL'] && 'needs Postgres: the embedded database has no connection to stall' }, async (t) => {
  const database = (await isolatedDatabase())!
  t.teardown(() => database.drop())
  const proxy = await TcpProxy.forDatabase(database.url)
  t.teardown(() => proxy.close())
  // Both the pool and the feed's LISTEN session go through the proxy (DATABASE_LISTEN_URL
  // defaults to DATABASE_URL).
  const srv = await spawnServer(t, {
    DATABASE_URL: proxy.url(database.url),
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    SHUTDOWN_TIMEOUT: '2',
  })
  // Pooled connections in use a moment ago, an audit event buffered, and the feed leased.
  t.ok((await adminToken(srv)).length > 0)
  for (let waited = 0; ((await (await fetch(`${srv.url}/readyz`)).json()) as { view?: string }).view !== 'leased'; waited += 20) {
    if (waited > 30_000) throw new Error('never leased')
    await sleep(20)
  }
  proxy.stall()

  const exit = await terminate(srv, 15_000)
  t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'exit code 0, not killed')
  // The deadline, and the second exitWhenIdle allows for pino's last lines.
  t.ok(exit.afterMs < 3_500, `exited ${exit.afterMs} ms after the signal (SHUTDOWN_TIMEOUT 2 s)`)
  t.match(
    srv.logs.find((l) => l.level === 40 && /shutdown deadline/.test(String(l.msg))),
    { msg: /the database did not answer by the shutdown deadline/ },
    'a warning says what was cut off',
  )
  t.match(srv.logs.find((l) => l.msg === 'shut down'), { destroyed: 0 })
})
