import { randomBytes } from 'node:crypto'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildAdminApp, buildPublicApp } from './app.js'
import { systemClock, type Clock } from './clock.js'
import { parseKeyEncryptionKey, type Config } from './config.js'
import { openDatabase } from './db/connect.js'
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
  // not made yet. Each step starts when the one before has finished.
  const close = async () => {
    // 1. Both listeners stop accepting, answer what is in flight and close every connection,
    //    within SHUTDOWN_TIMEOUT.
    const cut = await Promise.all(apps.map(({ drain }) => drain(config.shutdownTimeout * 1000)))
    const destroyed = cut.reduce((a, b) => a + b, 0)
    if (destroyed > 0) log.warn({ destroyed }, 'connections still open at the shutdown deadline were destroyed')
    // 2. fastify's own onClose hooks (its server is closed already).
    for (const { app } of apps) await app.close()
    // 3. The lease (given up, so that no writer waits for it), the change feed, the key schedule
    //    and housekeeping; waits for a key tick under way; then writes the audit events still
    //    buffered (after the drain, so the requests answered in it are on record).
    await tessera?.stop()
    // 4. The database: every step before may still use it.
    await database.close()
    // 5. The spans still buffered, the shutdown's own among them.
    await tracing.shutdown()
    return { destroyed }
  }
  try {
    const { applied } = await migrate(database.db)
    if (applied.length > 0) log.info({ applied }, 'migrations applied')
    const kek = config.keyEncryptionKey ?? embeddedKeyEncryptionKey(config.dataDir)
    let issuer = config.issuer
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
    })
    await bootstrapAdmin(tessera, config, opts.announce ?? ((text) => process.stderr.write(text)))
    await tessera.start()

    // Under node:cluster every worker's n-th listen on port 0 gets the same port (WEB_CONCURRENCY):
    // the public listener first, then the admin one, in every worker.
    const publicApp = await buildPublicApp(tessera)
    apps.push({ app: publicApp, drain: drainable(publicApp.server) })
    await publicApp.listen({ host: config.host, port: config.port })
    const port = (publicApp.server.address() as { port: number }).port
    issuer ??= `http://localhost:${port}`
    const url = `http://${urlHost(config.host)}:${port}`
    log.info({ url, issuer, backend: database.backend }, 'listening')

    const adminApp = await buildAdminApp(tessera, () => publicApp.swagger())
    apps.push({ app: adminApp, drain: drainable(adminApp.server) })
    await adminApp.listen({ host: config.adminHost, port: config.adminPort })
    const adminUrl = `http://${urlHost(config.adminHost)}:${(adminApp.server.address() as { port: number }).port}`
    log.info({ adminUrl }, 'listening')
    return { url, adminUrl, tessera, close }
  } catch (err) {
    await close().catch(() => undefined)
    throw err
  }
}

const urlHost = (host: string) => (host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host)

/**
 * The first admin client: the one the environment names, or, when there is no admin client at
 * all, a new one whose secret is shown once (and, in embedded mode, kept in DATA_DIR).
 */
async function bootstrapAdmin(t: Tessera, config: Config, announce: (text: string) => void): Promise<void> {
  if (config.bootstrapAdmin !== undefined) {
    await t.clients.ensureAdminClient(config.bootstrapAdmin.clientId, config.bootstrapAdmin.clientSecret)
    return
  }
  const created = await t.clients.createAdminClientIfNone()
  if (created === undefined) return
  announce(
    [
      '',
      'Tessera created an admin client. Its secret is shown only now:',
      `  client_id:     ${created.clientId}`,
      `  client_secret: ${created.secret}`,
      '',
    ].join('\n'),
  )
  if (!isMemory(config.dataDir) && config.databaseUrl === undefined) {
    const path = join(config.dataDir, 'admin-client.json')
    writeFileSync(path, `${JSON.stringify({ client_id: created.clientId, client_secret: created.secret }, null, 2)}\n`, { mode: 0o600 })
    chmodSync(path, 0o600)
    announce(`  (also written to ${path})\n\n`)
  }
}
