// Tessera as a separate process (the built CLI, `tessera serve`), for tests of several instances
// over one database. Requires `npm run build` (the test scripts run it first).
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { packageRoot } from '../../src/paths.js'

export interface ServerProcess {
  url: string
  adminUrl: string
  child: ChildProcess
  /** Every log line so far, parsed. */
  logs: any[]
  /** Everything written to stderr so far. */
  stderr(): string
  stop(): Promise<void>
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export const cliPath = join(packageRoot, 'dist', 'src', 'cli', 'main.js')

/**
 * An empty working directory for the processes tests spawn: the CLI reads `.env` from its working
 * directory, and a developer's .env in the repository (DATABASE_URL, say) must not reach them.
 */
export const neutralCwd = mkdtempSync(join(tmpdir(), 'tessera-cwd-'))

/**
 * Starts `tessera serve` with this environment on ephemeral ports; resolves once both listen.
 * `uninstrumented`: without the module tap adds to every Node process a test spawns (through
 * NODE_OPTIONS, whatever `env` says), for measuring the server itself. `nodeArgs` go to node
 * before the script (`--import` a module, say).
 */
export function spawnServer(
  t: Teardown,
  env: Record<string, string>,
  opts: { uninstrumented?: boolean; nodeArgs?: string[] } = {},
): Promise<ServerProcess> {
  const node = [...(opts.nodeArgs ?? []), cliPath, 'serve']
  const command: [string, string[]] = opts.uninstrumented
    ? ['env', ['-u', 'NODE_OPTIONS', process.execPath, ...node]]
    : [process.execPath, node]
  const child = spawn(...command, {
    env: { PATH: process.env['PATH'] ?? '', PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: neutralCwd,
  })
  const logs: any[] = []
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  let stopping = false
  const stop = async () => {
    stopping = true
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
  t.teardown(stop)
  // A server that dies on its own mid-test says why, instead of leaving only "connection refused".
  child.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`tessera serve exited unexpectedly (code ${code}, signal ${signal})\n${stderr}\n`)
  })
  return new Promise((resolve, reject) => {
    let url: string | undefined
    let adminUrl: string | undefined
    const timer = setTimeout(() => reject(new Error(`server did not start in time\n${stderr}`)), 60_000)
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`server exited with ${code}\n${stderr}`))
    })
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: any
      try {
        entry = JSON.parse(line)
      } catch {
        return
      }
      logs.push(entry)
      if (entry.msg === 'listening' && entry.url) url = entry.url
      if (entry.msg === 'listening' && entry.adminUrl) adminUrl = entry.adminUrl
      if (url !== undefined && adminUrl !== undefined) {
        clearTimeout(timer)
        resolve({ url, adminUrl, child, logs, stderr: () => stderr, stop })
        url = undefined
      }
    })
  })
}

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * `tessera <args…>` from the build, with a clean environment (PATH and `env` only: nothing of the
 * test runner's leaks in), in `cwd` (default an empty directory, so no .env is read), and `input`
 * on stdin (a pipe, so never a terminal; empty when not given).
 */
export function runCli(args: string[], opts: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [cliPath, ...args], {
    env: { PATH: process.env['PATH'] ?? '', ...opts.env },
    cwd: opts.cwd ?? neutralCwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  // A command that never reads stdin may exit before the write lands.
  child.stdin!.on('error', () => undefined)
  child.stdin!.end(opts.input ?? '')
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}
