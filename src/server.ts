import { randomBytes } from 'node:crypto'
import { chmodSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildAdminApp, buildPublicApp } from './app.js'
import { systemClock, type Clock } from './clock.js'
import { listenerUrl, parseKeyEncryptionKey, type Config } from './config.js'
import { ListenUrlMismatchError, openDatabase, type DatabaseHandle } from './db/connect.js'
import { migrate } from './db/migrate.js'
import { drainable, type Drain } from './http/drain.js'
import { createLogger } from './log.js'
import { createTessera, type Tessera } from './tessera.js'
import { startTracing, type Tracing } from './tracing.js'

export interface RunningServer {
  url: string
  adminUrl: string
  tessera: Tessera
  /** The shutdown (see startServer). `destroyed`: connections cut off at the deadline. */
  close(): Promise<{ destroyed: number }>
}

export interface StartOptions {
  log?: Logger
  clock?: Clock
  /** Where the credentials of a newly created admin client are printed. */
  announce?: (text: string) => void
  /** Default: what the OTEL_* variables of the process environment ask for (src/tracing.ts). */
  tracing?: Tracing
}

const isMemory = (dataDir: string) => dataDir.startsWith('memory://')

/**
 * In embedded mode the key-encryption key lives beside the data, made on first start. That
 * protects the keys only as well as DATA_DIR is protected; with Postgres, KEY_ENCRYPTION_KEY is
 * required, so that a database dump alone does not hand over the signing keys.
 */
function embeddedKeyEncryptionKey(dataDir: string): Buffer {
  if (isMemory(dataDir)) return randomBytes(32)
  const path = join(dataDir, 'key-encryption-key')
  try {
    writeFileSync(path, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  return parseKeyEncryptionKey(readFileSync(path, 'utf8').trim(), path)
}

/** config → database → services → listeners. Resolves once both listeners accept connections. */
export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.logLevel)
  const clock = opts.clock ?? systemClock
  const tracing = opts.tracing ?? (await startTracing(process.env, log))
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    listenUrl: config.databaseListenUrl,
    dataDir: config.dataDir,
    timeoutMs: config.databaseTimeoutMs,
    log,
    ...(tracing.enabled && { wrapDialect: (dialect) => tracing.instrumentDatabase(dialect) }),
  }).catch(async (err: unknown) => {
    await tracing.shutdown()
    throw err
  })
  let tessera: Tessera | undefined
  const apps: Array<{ app: FastifyInstance; drain: Drain }> = []
  // The shutdown, in order; also what a failed start undoes, so each step allows for the parts
  // not made yet. Each step starts when the one before has finished. SHUTDOWN_TIMEOUT bounds the
  // whole of it: an orchestrator kills the process at its own deadline (docker stop's 10 s, a
  // pod's grace period), and a database that stopped answering (a half-open connection after a
  // failover) would otherwise hold the steps after the drain for minutes.
  const close = async () => {
    const deadline = performance.now() + config.shutdownTimeout * 1000
    const left = () => Math.max(0, deadline - performance.now())
    // 1. Both listeners stop accepting, answer what is in flight and close every connection,
    //    leaving the steps after it a share of SHUTDOWN_TIMEOUT; they take milliseconds when the
    //    database answers.
    const reserve = Math.min(CLOSE_RESERVE_MS, (config.shutdownTimeout * 1000) / 4)
    const cut = await Promise.all(apps.map(({ drain }) => drain(Math.max(0, left() - reserve))))
    const destroyed = cut.reduce((a, b) => a + b, 0)
    if (destroyed > 0) log.warn({ destroyed }, 'connections still open at the shutdown deadline were destroyed')
    const rest = (async () => {
      // 2. fastify's own onClose hooks (its server is closed already).
      for (const { app } of apps) await app.close()
      // 3. The lease (given up, so that no writer waits for it), the change feed, the key schedule
      //    and housekeeping; waits for a key tick under way; then writes the audit events still
      //    buffered (after the drain, so the requests answered in it are on record).
      await tessera?.stop()
      // 4. The database: every step before may still use it.
      await database.close()
    })()
    const finished = await settlesWithin(rest, left())
    if (finished) await rest
    else {
      // Whatever still waits on the database fails now (the lease then runs out by itself, and
      // audit events not yet written are lost: the warning says so).
      log.warn({ timeoutSeconds: config.shutdownTimeout }, 'the database did not answer by the shutdown deadline: its connections were destroyed; audit events still buffered may be lost')
      database.abort()
    }
    // 5. The spans still buffered, the shutdown's own among them, in what time is left.
    await settlesWithin(tracing.shutdown(), left())
    return { destroyed }
  }
  try {
    const { applied } = await migrate(database.db)
    if (applied.length > 0) log.info({ applied }, 'migrations applied')
    const kek = config.keyEncryptionKey ?? embeddedKeyEncryptionKey(config.dataDir)
    let issuer = config.issuer
    let adminUrl = config.adminUrl
    tessera = createTessera({
      config,
      database,
      clock,
      log,
      keyEncryptionKey: kek,
      previousKeyEncryptionKey: config.keyEncryptionKeyPrevious,
      tracing,
      issuer: () => {
        if (issuer === undefined) throw new Error('issuer not known before listening')
        return issuer
      },
      adminUrl: () => {
        if (adminUrl === undefined) throw new Error('admin URL not known before listening')
        return adminUrl
      },
    })
    await bootstrapAdmin(tessera, config, opts.announce ?? ((text) => process.stderr.write(text)))
    await checkListenUrl(database, config, log)
    await tessera.start()

    // Under node:cluster every worker's n-th listen on port 0 gets the same port (WEB_CONCURRENCY):
    // the public listener first, then the admin one, in every worker.
    const publicApp = await buildPublicApp(tessera)
    apps.push({ app: publicApp, drain: drainable(publicApp.server) })
    await publicApp.listen({ host: config.host, port: config.port })
    const port = (publicApp.server.address() as { port: number }).port
    issuer ??= `http://localhost:${port}`
    const url = listenerUrl(config.host, port)
    log.info({ url, issuer, backend: database.backend }, 'listening')

    const adminApp = await buildAdminApp(tessera, () => publicApp.swagger())
    apps.push({ app: adminApp, drain: drainable(adminApp.server) })
    await adminApp.listen({ host: config.adminHost, port: config.adminPort })
    const adminListening = listenerUrl(config.adminHost, (adminApp.server.address() as { port: number }).port)
    adminUrl ??= adminListening
    log.info({ adminUrl: adminListening }, 'listening')
    return { url, adminUrl: adminListening, tessera, close }
  } catch (err) {
    await close().catch(() => undefined)
    throw err
  }
}

/**
 * Refuses to start with a DATABASE_LISTEN_URL that reaches another database or schema than
 * DATABASE_URL (checkSameDatabase says why that matters). The feed checks the same on every
 * connect and never leases on a mismatch, but it keeps retrying, which hides the mistake in a
 * warning; at start it is a configuration error, said once. A listen URL that cannot be reached
 * now is not refused: the instance reads the database per call until the feed connects.
 */
async function checkListenUrl(database: DatabaseHandle, config: Config, log: Logger): Promise<void> {
  if (database.backend !== 'postgres' || !config.serveFromMemory || config.databaseListenUrl === config.databaseUrl) return
  try {
    await (await database.openFeedConnection()).close()
  } catch (err) {
    if (err instanceof ListenUrlMismatchError) throw err
    log.warn({ err: err instanceof Error ? err.message : String(err) }, 'DATABASE_LISTEN_URL could not be checked at start')
  }
}

// Of SHUTDOWN_TIMEOUT, what the drain leaves to the steps after it (at most a quarter).
const CLOSE_RESERVE_MS = 2000

/** Whether `work` settled (either way) within `ms`; it is not waited for after that. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const done = work.then(
    () => true,
    () => true,
  )
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([done, late])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * The first admin client: the one the environment names, or, when there is no admin client at
 * all, a new one whose secret is shown once. In embedded mode the secret goes to
 * DATA_DIR/admin-client.json (mode 0600) only, and the announcement says where: stderr is what log
 * pipelines collect, and a secret there is kept wherever the logs are. With Postgres or an
 * in-memory DATA_DIR there is no such file, and stderr is the only place to show it.
 */
async function bootstrapAdmin(t: Tessera, config: Config, announce: (text: string) => void): Promise<void> {
  if (config.bootstrapAdmin !== undefined) {
    await t.clients.ensureAdminClient(config.bootstrapAdmin.clientId, config.bootstrapAdmin.clientSecret)
    return
  }
  const created = await t.clients.createAdminClientIfNone()
  if (created === undefined) return
  const shown = [
    '',
    'Tessera created an admin client. Its secret is shown only now:',
    `  client_id:     ${created.clientId}`,
    `  client_secret: ${created.secret}`,
    '',
  ].join('\n')
  if (!isMemory(config.dataDir) && config.databaseUrl === undefined) {
    const path = join(config.dataDir, 'admin-client.json')
    try {
      writePrivateFile(path, `${JSON.stringify({ client_id: created.clientId, client_secret: created.secret }, null, 2)}\n`)
    } catch (err) {
      // The client exists now and no later start makes another: lost, its secret would be for good.
      announce(`${shown}  (could not be written to ${path}: ${(err as Error).message})\n\n`)
      throw err
    }
    announce(
      [
        '',
        `Tessera created an admin client, ${created.clientId}. Its id and secret are in ${path}`,
        '(readable by this user only); the secret is written nowhere else.',
        '',
        '',
      ].join('\n'),
    )
    return
  }
  announce(shown)
}

/**
 * Writes `text` to `path` readable by its owner only, from the first byte: a new file made with
 * mode 0600, then renamed over whatever was there (an older file's mode would otherwise stay).
 */
function writePrivateFile(path: string, text: string): void {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    writeFileSync(temporary, text, { mode: 0o600, flag: 'wx' })
    chmodSync(temporary, 0o600)
    renameSync(temporary, path)
  } catch (err) {
    rmSync(temporary, { force: true })
    throw err
  }
}
