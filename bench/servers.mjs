// Starting and stopping the servers under test, each as a child process of its own so that a
// server never shares an event loop or CPU accounting with the load generator or with the other
// server. Every child started here is tracked and killed by `stopAll`, even after an error.
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

const benchDir = dirname(fileURLToPath(import.meta.url))
const root = join(benchDir, '..')
export const tesseraCli = join(root, 'dist', 'src', 'cli', 'main.js')

const children = new Set()

/** A free loopback port, picked by the kernel; the tiny window before the child binds it is accepted. */
async function freePort() {
  const server = createServer()
  await new Promise((resolve, reject) => server.listen(0, '127.0.0.1', resolve).once('error', reject))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

function track(child, name) {
  let stderr = ''
  child.stderr?.on('data', (d) => {
    stderr = (stderr + d.toString()).slice(-8000)
  })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const handle = {
    name,
    child,
    pid: child.pid,
    stderr: () => stderr,
    exited,
    async stop() {
      children.delete(handle)
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
  children.add(handle)
  return handle
}

export async function stopAll() {
  await Promise.all([...children].map((c) => c.stop()))
}

/** Synchronous last resort for process 'exit': no awaiting is possible there. */
export function killAllNow() {
  for (const c of children) {
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL')
  }
}

/** Rejects as soon as the child exits, with what it wrote on stderr. */
function failOnExit(handle) {
  return handle.exited.then(({ code, signal }) => {
    throw new Error(`${handle.name} exited (code ${code}, signal ${signal}) before it was ready\n${handle.stderr()}`)
  })
}

async function waitReady(url, handle, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  const poll = (async () => {
    while (Date.now() < deadline) {
      try {
        const res = await fetch(url)
        if (res.status === 200) return
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`${handle.name} not ready after ${timeoutMs} ms\n${handle.stderr()}`)
  })()
  await Promise.race([poll, failOnExit(handle)])
}

/**
 * `tessera serve` from the build. LOG_LEVEL defaults to `warn` here: at `info` Tessera writes one
 * line per request, and oidc-provider logs nothing, so `info` would measure pino, not OAuth.
 */
export async function startTessera({ name, databaseUrl, logLevel = 'warn', nodeArgs = [] }) {
  const [port, adminPort] = [await freePort(), await freePort()]
  const adminId = 'bench-admin'
  const adminSecret = randomBytes(24).toString('base64url')
  const env = {
    PATH: process.env.PATH ?? '',
    HOST: '127.0.0.1',
    PORT: String(port),
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: String(adminPort),
    ISSUER: `http://127.0.0.1:${port}`,
    LOG_LEVEL: logLevel,
    BOOTSTRAP_ADMIN_CLIENT_ID: adminId,
    BOOTSTRAP_ADMIN_CLIENT_SECRET: adminSecret,
    ...(databaseUrl === undefined
      ? { DATA_DIR: 'memory://' }
      : { DATABASE_URL: databaseUrl, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') }),
  }
  const child = spawn(process.execPath, [...nodeArgs, tesseraCli, 'serve'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const handle = track(child, name)
  const url = `http://127.0.0.1:${port}`
  const adminUrl = `http://127.0.0.1:${adminPort}`
  await waitReady(`${url}/readyz`, handle)
  return { ...handle, url, adminUrl, adminId, adminSecret }
}

/** node-oidc-provider in bench/reference-server.mjs; resolves with the URL it printed. */
export async function startReference({ name, clientId, clientSecret, scope, resource }) {
  const child = spawn(
    process.execPath,
    [join(benchDir, 'reference-server.mjs'), JSON.stringify({ clientId, clientSecret, scope, resource })],
    { cwd: root, env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production' }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const handle = track(child, name)
  const info = await Promise.race([
    new Promise((resolve) => {
      createInterface({ input: child.stdout }).once('line', (line) => resolve(JSON.parse(line)))
    }),
    failOnExit(handle),
  ])
  return { ...handle, ...info }
}

/** Whether something accepts TCP connections at host:port within `ms`. */
export function reachable(host, port, ms = 500) {
  return new Promise((resolve) => {
    const socket = connect({ host, port })
    const done = (ok) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(ms, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/**
 * CPU seconds (user + system) a process has used so far, from /proc (Linux). Undefined elsewhere.
 * Per request, this is steadier than throughput on a machine shared with other work.
 */
const clockTicks = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may contain spaces; the fields after its closing paren are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    return ticks / clockTicks
  } catch {
    return undefined
  }
}
