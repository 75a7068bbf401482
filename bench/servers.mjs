// Starting and stopping what the benchmark measures, each as a child process of its own so that
// it never shares an event loop or CPU accounting with the load generator or with another server,
// and reading their CPU time and memory from /proc over the whole process tree (a server started
// with WEB_CONCURRENCY=2 is a node:cluster primary and its worker processes). Every child started
// here is tracked and killed by `stopAll`, even after an error; `killAllNow` is the synchronous
// last resort for process 'exit'.
import { execFileSync, fork, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const benchDir = dirname(fileURLToPath(import.meta.url))
export const root = join(benchDir, '..')
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
    alive: () => child.exitCode === null && child.signalCode === null,
    async stop() {
      if (handle.alive()) {
        // The whole tree: a cluster primary normally takes its workers down with it, but should it
        // not, its workers must not outlive the benchmark.
        const tree = processTree(child.pid)
        child.kill('SIGTERM')
        const timer = setTimeout(() => killPids(processTree(child.pid).concat(tree), 'SIGKILL'), 5000)
        await exited
        clearTimeout(timer)
        const left = tree.filter((pid) => pid !== child.pid && isAlive(pid))
        if (left.length > 0) {
          await new Promise((r) => setTimeout(r, 1000))
          killPids(left.filter(isAlive), 'SIGKILL')
        }
      }
      children.delete(handle)
    },
  }
  children.add(handle)
  return handle
}

function isAlive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function killPids(pids, signal) {
  for (const pid of new Set(pids)) {
    try {
      process.kill(pid, signal)
    } catch {
      // already gone
    }
  }
}

export async function stopAll() {
  await Promise.all([...children].map((c) => c.stop()))
}

/** Synchronous last resort for process 'exit': no awaiting is possible there. */
export function killAllNow() {
  for (const c of children) {
    if (c.alive()) killPids(processTree(c.pid), 'SIGKILL')
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
 * `tessera serve` from the build: on Postgres when `databaseUrl` is given (with a fresh
 * KEY_ENCRYPTION_KEY), else embedded in `dataDir`. `webConcurrency`, when given, is passed as
 * WEB_CONCURRENCY; after /readyz answers, we wait (a little) for the worker processes to appear.
 * LOG_LEVEL defaults to `warn`: at `info` Tessera writes one line per request and oidc-provider
 * logs nothing, so `info` would measure pino, not OAuth.
 */
export async function startTessera({
  name,
  databaseUrl,
  dataDir,
  webConcurrency,
  logLevel = 'warn',
  nodeArgs = [],
  env: extraEnv = {},
  // Several instances over one database share these (bench/revocation-storm.mjs).
  keyEncryptionKey = randomBytes(32).toString('base64'),
  adminSecret = randomBytes(24).toString('base64url'),
}) {
  const [port, adminPort] = [await freePort(), await freePort()]
  const adminId = 'bench-admin'
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
    ...(webConcurrency === undefined ? {} : { WEB_CONCURRENCY: String(webConcurrency) }),
    // 50 connections of password logins queue for argon2 instead of being turned away with 503
    // (what a production server does with more than it can hash): the bench measures throughput.
    HASH_QUEUE: '1000',
    // Every request of the bench comes from 127.0.0.1, where in production 50 connections of
    // logins are 50 people: the per-address budget (LOGIN_ADDRESS_FAILURES, which counts a login
    // until it succeeds) is raised so that it is not what is measured. The counting still runs.
    LOGIN_ADDRESS_FAILURES: '100000',
    ...extraEnv,
    ...(databaseUrl === undefined
      ? { DATA_DIR: dataDir }
      : { DATABASE_URL: databaseUrl, KEY_ENCRYPTION_KEY: keyEncryptionKey }),
  }
  const child = spawn(process.execPath, [...nodeArgs, tesseraCli, 'serve'], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const handle = track(child, name)
  const url = `http://127.0.0.1:${port}`
  const adminUrl = `http://127.0.0.1:${adminPort}`
  await waitReady(`${url}/readyz`, handle)
  if (webConcurrency > 1) {
    // A primary and its workers, forked by the time the first worker answers; until the server
    // honours WEB_CONCURRENCY it stays one process, which the report shows in its process count.
    const deadline = Date.now() + 3_000
    while (processTree(child.pid).length < webConcurrency + 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  return { ...handle, url, adminUrl, adminId, adminSecret }
}

/** node-oidc-provider in bench/reference-server.mjs; resolves with the URL and paths it printed. */
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

/**
 * bench/argon2-ceiling.mjs: argon2.verify as fast as the machine allows, on request.
 * `run({ warmup, duration, onOpen, onClose })` calls onOpen and onClose at the edges of the
 * measured window and resolves with { verifies, failures, seconds, p50, p99 } (latencies in ms).
 */
export async function startArgon2Ceiling({ name, threads, concurrency }) {
  const child = fork(join(benchDir, 'argon2-ceiling.mjs'), [], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', UV_THREADPOOL_SIZE: String(threads), HASH_CONCURRENCY: String(concurrency) },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  })
  const handle = track(child, name)
  const ready = await Promise.race([new Promise((resolve) => child.once('message', resolve)), failOnExit(handle)])
  const run = ({ warmup, duration, onOpen, onClose }) => {
    const result = new Promise((resolve) => {
      const onMessage = (m) => {
        if (m.event === 'open') onOpen()
        else if (m.event === 'close') onClose()
        else if (m.event === 'result') {
          child.off('message', onMessage)
          resolve(m)
        }
      }
      child.on('message', onMessage)
    })
    child.send({ run: { warmup, duration } })
    return Promise.race([result, failOnExit(handle)])
  }
  return { ...handle, run, ...ready }
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

// ---------------------------------------------------------------------------------------------
// /proc (Linux). Elsewhere the CPU and memory columns stay empty.

const clockTicks = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** The fields of /proc/<pid>/stat after the command name (which may contain spaces). */
function statFields(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** `root` and all its descendants that are alive now, found by their parent pid in /proc. */
export function processTree(rootPid) {
  const parentOf = new Map()
  let entries
  try {
    entries = readdirSync('/proc')
  } catch {
    return [rootPid]
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    const fields = statFields(entry)
    if (fields !== undefined) parentOf.set(Number(entry), Number(fields[1]))
  }
  if (!parentOf.has(rootPid)) return []
  const tree = [rootPid]
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parentOf) if (ppid === tree[i]) tree.push(pid)
  }
  return tree
}

/**
 * CPU seconds (user + system) the tree has used so far: each live process's own time plus that of
 * its children it has reaped (cutime, cstime), so a worker that exits mid-run is still counted
 * once, in its parent. Undefined without /proc.
 */
export function treeCpuSeconds(pids) {
  let ticks = 0
  let seen = false
  for (const pid of pids) {
    const f = statFields(pid)
    if (f === undefined) continue
    seen = true
    // utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the command name.
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
  }
  return seen ? ticks / clockTicks : undefined
}

/** Resets the peak resident set size (VmHWM) of each process (Linux ≥ 4.0; ours to write). */
export function resetPeakRss(pids) {
  let ok = pids.length > 0
  for (const pid of pids) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, '5')
    } catch {
      ok = false
    }
  }
  return ok
}

/** Peak resident set size (VmHWM) per process, in bytes; processes already gone are left out. */
export function peakRss(pids) {
  const peaks = []
  for (const pid of pids) {
    try {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (m) peaks.push(Number(m[1]) * 1024)
    } catch {
      // gone
    }
  }
  return peaks
}

/** CPU seconds this process (the load generator) has used so far. */
export function selfCpuSeconds() {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1e6
}
