import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { InitReport } from './embedded-init-process.js'

/** The embedded database could not be created; the message is one line, meant for the operator. */
export class EmbeddedInitError extends Error {
  override name = 'EmbeddedInitError'
}

const STAGING_PREFIX = 'pgdata.init-'

/**
 * Makes sure DATA_DIR/pgdata holds a database cluster, creating it in a separate process on the
 * first start; returns its path. The caller holds DATA_DIR's lock (lockDataDir), so nobody else
 * is initialising here.
 *
 * The cluster is created in a staging directory beside pgdata and renamed into place once
 * complete, so pgdata is either absent or whole: a start interrupted during the init leaves only
 * a staging directory, which the next start removes before initialising again.
 */
export async function ensureCluster(dataDir: string, log: Logger): Promise<string> {
  const pgdata = join(dataDir, 'pgdata')
  for (const name of readdirSync(dataDir)) {
    if (name.startsWith(STAGING_PREFIX)) rmSync(join(dataDir, name), { recursive: true, force: true })
  }
  // PG_VERSION is what PGlite looks for to decide that a directory holds a database.
  if (existsSync(join(pgdata, 'PG_VERSION'))) return pgdata
  // An empty pgdata is what an older Tessera left when it stopped during its in-process init;
  // the rename below replaces it. Anything else in it is not ours to remove.
  if (existsSync(pgdata) && readdirSync(pgdata).length > 0) {
    throw new EmbeddedInitError(`${pgdata} exists but holds no database: move it away to create a new one`)
  }

  const staging = join(dataDir, `${STAGING_PREFIX}${randomBytes(6).toString('hex')}`)
  const started = performance.now()
  try {
    const { peakRssBytes } = await runInitProcess(staging)
    renameSync(staging, pgdata)
    log.info(
      { path: pgdata, ms: Math.round(performance.now() - started), initPeakRssBytes: peakRssBytes },
      'embedded database initialised',
    )
  } catch (err) {
    rmSync(staging, { recursive: true, force: true })
    throw new EmbeddedInitError(`cannot create the embedded database in ${pgdata}: ${oneLine(err)}`)
  }
  return pgdata
}

// Beside this module, with its extension: .js when built, .ts when the tests run the sources
// (the child inherits the parent's loader through execArgv).
const here = fileURLToPath(import.meta.url)
const initProcessModule = join(dirname(here), `embedded-init-process${extname(here)}`)

/** Runs the init process on `dir` (which it creates) and resolves with its report. */
function runInitProcess(dir: string): Promise<{ peakRssBytes: number }> {
  return new Promise((resolve, reject) => {
    const child = fork(initProcessModule, [dir], {
      // The peak of this process is nearly all PGlite's own (two instances of Postgres, one with
      // its heap copied); these trim what is left, about 23 MB: V8's young-generation
      // semi-spaces at 1 MB instead of 16, and one glibc malloc arena instead of one per thread.
      // --expose-gc lets it collect initdb's garbage (see the init process). A debugger flag
      // would make the child fight the parent for its port.
      execArgv: [...process.execArgv.filter((a) => !a.startsWith('--inspect')), '--max-semi-space-size=1', '--expose-gc'],
      env: { ...process.env, MALLOC_ARENA_MAX: '1' },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    })
    let report: InitReport | undefined
    let stderr = ''
    child.on('message', (m) => {
      report = m as InitReport
    })
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000)
    })
    child.once('error', (err) => reject(new Error(`cannot start the init process: ${err.message}`)))
    child.once('exit', (code, signal) => {
      if (report?.ok === true && code === 0) return resolve({ peakRssBytes: report.peakRssBytes })
      if (report?.ok === false) return reject(new Error(report.error))
      // It died before it could report: out of memory, or a crash inside the WebAssembly.
      const how = signal !== null ? `was killed (${signal})` : `exited with ${code}`
      const error = errorLine(stderr)
      reject(new Error(`the init process ${how}${error === undefined ? '' : `: ${error}`}`))
    })
  })
}

const oneLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ').trim()

/** The `SomeError: message` line of what Node prints for an uncaught error. */
const errorLine = (stderr: string) =>
  stderr
    .split('\n')
    .map((l) => l.trim())
    .find((l) => /^[A-Za-z]*(Error|Exception)\b/.test(l))
