// WEB_CONCURRENCY > 1: a primary process that serves nothing itself and keeps that many workers
// running, each a whole Tessera instance (its own database pool, key manager and listeners) on
// the listeners the workers share through node:cluster.
import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry, type Registry } from 'prom-client'
import type { Config } from './config.js'
import { openDatabase } from './db/connect.js'
import { migrate } from './db/migrate.js'
import { exitWhenIdle } from './exit.js'
import { createLogger } from './log.js'

const READY = 'tessera:ready'
const METRICS_REQUEST = 'tessera:metrics-request'
const METRICS_ANSWER = 'tessera:metrics-answer'
// A scrape waits this long for the workers' metrics before it fails.
const METRICS_TIMEOUT_MS = 4000

/** In a worker: tells the primary that this instance serves (both listeners are up). */
export function announceReady(): void {
  if (cluster.isWorker) process.send?.(READY)
}

/**
 * In a worker: offers this instance's metrics to the primary's aggregation. A scrape through the
 * shared listener reaches one worker at random, so a worker's own counters alone would jump from
 * scrape to scrape; prom-client's AggregatorRegistry answers for all of them.
 */
export function shareMetrics(registry: Registry): void {
  if (!cluster.isWorker) return
  AggregatorRegistry.setRegistries([registry])
  // Constructing one installs prom-client's listener that answers the primary's requests.
  new AggregatorRegistry()
}

let metricsRequests = 0
/** In a worker: every worker's metrics, aggregated by the primary (see each metric's aggregator). */
export function clusterMetrics(): Promise<string> {
  const id = ++metricsRequests
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.off('message', onMessage)
      reject(new Error('the primary did not answer with the workers\' metrics in time'))
    }, METRICS_TIMEOUT_MS)
    const onMessage = (message: unknown) => {
      const m = message as { type?: unknown; id?: unknown; text?: unknown; error?: unknown }
      if (m?.type !== METRICS_ANSWER || m.id !== id) return
      clearTimeout(timer)
      process.off('message', onMessage)
      if (typeof m.text === 'string') resolve(m.text)
      else reject(new Error(typeof m.error === 'string' ? m.error : 'no metrics'))
    }
    process.on('message', onMessage)
    process.send?.({ type: METRICS_REQUEST, id })
  })
}

// A worker that exits this many times in a row before it is ready is not going to start (a port
// taken, a database refusing connections): the primary gives up rather than retry forever.
const MAX_START_FAILURES = 5
// A crash is restarted after 100 ms, then 200 ms, 400 ms, … up to 10 s while the worker keeps
// crashing; a worker that has served for a minute starts the count again.
const FIRST_RESTART_DELAY_MS = 100
const MAX_RESTART_DELAY_MS = 10_000
const STABLE_AFTER_MS = 60_000
// Beyond SHUTDOWN_TIMEOUT, for the worker's own steps after the drain (closing the database).
const SHUTDOWN_GRACE_MS = 5_000

interface Slot {
  worker: Worker | undefined
  readyAt: number | undefined
  /** Exits in a row without an intervening stable run. */
  crashes: number
  /** Exits in a row before the worker was ready. */
  startFailures: number
  restart: NodeJS.Timeout | undefined
}

/**
 * Forks config.webConcurrency workers and keeps them running until SIGTERM or SIGINT, which it
 * passes on to every worker; each drains its connections and exits (the same shutdown as a single
 * process), then the primary exits: 0 if every worker shut down cleanly.
 */
export async function runPrimary(config: Config): Promise<void> {
  const log = createLogger(config.logLevel)
  // Once, before any worker starts, rather than by every worker in turn under the lock (the
  // workers still check, and find nothing to do). A database that is not there fails here, once.
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, log })
  try {
    const { applied } = await migrate(database.db)
    if (applied.length > 0) log.info({ applied }, 'migrations applied')
  } finally {
    await database.close()
  }

  const metrics = new AggregatorRegistry()
  const slots: Slot[] = Array.from({ length: config.webConcurrency }, () => ({
    worker: undefined,
    readyAt: undefined,
    crashes: 0,
    startFailures: 0,
    restart: undefined,
  }))
  let stopping = false
  let clean = true
  let deadline: NodeJS.Timeout | undefined

  const fork = (slot: Slot) => {
    slot.restart = undefined
    slot.readyAt = undefined
    const worker = cluster.fork()
    slot.worker = worker
    worker.on('message', (message: unknown) => {
      const request = message as { type?: unknown; id?: unknown }
      if (request?.type === METRICS_REQUEST) {
        metrics.clusterMetrics().then(
          (text) => worker.send({ type: METRICS_ANSWER, id: request.id, text }),
          (err: unknown) => worker.send({ type: METRICS_ANSWER, id: request.id, error: err instanceof Error ? err.message : String(err) }),
        )
        return
      }
      if (message !== READY) return
      slot.readyAt = Date.now()
      slot.startFailures = 0
      log.info({ worker: worker.process.pid }, 'worker ready')
    })
    worker.on('exit', (code, signal) => exited(slot, worker, code, signal))
  }

  const exited = (slot: Slot, worker: Worker, code: number | null, signal: string | null) => {
    slot.worker = undefined
    const pid = worker.process.pid
    if (stopping) {
      // One that the signal killed outright was still starting: it had nothing in flight.
      const wasStarting = signal !== null && slot.readyAt === undefined
      if (code !== 0 && !wasStarting) clean = false
      log.info({ worker: pid, code, signal }, 'worker stopped')
      if (slots.every((s) => s.worker === undefined)) finish(clean ? 0 : 1)
      return
    }
    const wasReady = slot.readyAt !== undefined
    if (wasReady && Date.now() - slot.readyAt! >= STABLE_AFTER_MS) slot.crashes = 0
    slot.crashes += 1
    if (!wasReady) slot.startFailures += 1
    if (slot.startFailures >= MAX_START_FAILURES) {
      const reason = `workers keep exiting before they serve (${slot.startFailures} times in a row); giving up`
      log.fatal({ worker: pid, code, signal }, reason)
      process.stderr.write(`tessera: ${reason} (see the workers' errors above)\n`)
      clean = false
      stop({ reason: 'crash loop' })
      return
    }
    const delay = Math.min(FIRST_RESTART_DELAY_MS * 2 ** (slot.crashes - 1), MAX_RESTART_DELAY_MS)
    log.error({ worker: pid, code, signal, restartInMs: delay }, 'worker exited unexpectedly')
    slot.restart = setTimeout(() => fork(slot), delay)
  }

  const stop = (why: { signal: string } | { reason: string }) => {
    if (stopping) return
    stopping = true
    log.info(why, 'shutting down')
    for (const slot of slots) {
      if (slot.restart !== undefined) clearTimeout(slot.restart)
      // The workers do the draining: a signal is what makes one start it.
      slot.worker?.process.kill('SIGTERM')
    }
    if (slots.every((s) => s.worker === undefined)) return finish(clean ? 0 : 1)
    deadline = setTimeout(() => {
      const left = slots.flatMap((s) => (s.worker === undefined ? [] : [s.worker]))
      log.error({ workers: left.map((w) => w.process.pid) }, 'workers still running after the shutdown timeout; killing them')
      for (const worker of left) worker.process.kill('SIGKILL')
      finish(1)
    }, config.shutdownTimeout * 1000 + SHUTDOWN_GRACE_MS)
  }

  let finished = false
  const finish = (code: number) => {
    if (finished) return
    finished = true
    clearTimeout(deadline)
    log.info({ code }, 'shut down')
    exitWhenIdle(code)
  }

  process.on('SIGTERM', () => stop({ signal: 'SIGTERM' }))
  process.on('SIGINT', () => stop({ signal: 'SIGINT' }))
  log.info({ workers: slots.length }, 'starting workers')
  for (const slot of slots) fork(slot)
}
