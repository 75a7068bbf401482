import { mkdirSync } from 'node:fs'
import { Kysely, PGliteDialect, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Logger } from 'pino'
import { lockDataDir } from './data-dir-lock.js'
import { ensureCluster } from './embedded-init.js'
import { EMBEDDED_START_PARAMS, useBaselineWasmCompiler } from './pglite-settings.js'
import type { Database } from './schema.js'

export interface DatabaseHandle {
  db: Kysely<Database>
  backend: 'postgres' | 'pglite'
  close(): Promise<void>
}

export interface DatabaseOptions {
  databaseUrl: string | undefined
  dataDir: string
  log: Logger
}

/** The one place that picks the backend: Postgres through a pg Pool, or embedded PGlite. */
export async function openDatabase(opts: DatabaseOptions): Promise<DatabaseHandle> {
  if (opts.databaseUrl !== undefined) return openPostgres(opts.databaseUrl, opts.log)
  return openPglite(opts.dataDir, opts.log)
}

function openPostgres(connectionString: string, log: Logger): DatabaseHandle {
  const pool = new pg.Pool({ connectionString, max: 10, idleTimeoutMillis: 30_000 })
  // An idle client whose connection drops emits 'error' on the pool; a checked-out one emits it on
  // the client itself, and unhandled it would kill the process. The query in flight fails and
  // the request gets an error answer; the pool replaces the connection.
  pool.on('error', (err) => log.warn({ err: err.message }, 'idle database connection failed'))
  pool.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err: err.message }, 'database connection failed'))
  })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  return { db, backend: 'postgres', close: () => db.destroy() }
}

async function openPglite(dataDir: string, log: Logger): Promise<DatabaseHandle> {
  useBaselineWasmCompiler()
  const { PGlite } = await import('@electric-sql/pglite')
  const startParams = [...PGlite.defaultStartParams, ...EMBEDDED_START_PARAMS]
  const handle = (pglite: InstanceType<typeof PGlite>, release = () => {}): DatabaseHandle => {
    const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) })
    return { db, backend: 'pglite', close: () => db.destroy().finally(release) }
  }
  // In memory (the tests) there is nothing to keep apart or to leave behind, and initdb runs here.
  if (dataDir.startsWith('memory://')) return handle(await PGlite.create(dataDir, { startParams }))

  // DATA_DIR also holds the key-encryption key and the admin client's credentials; the database
  // gets a folder of its own in it.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const release = lockDataDir(dataDir)
  try {
    const pgdata = await ensureCluster(dataDir, log)
    const pglite = await PGlite.create(pgdata, { startParams }).catch((err: unknown) => {
      const reason = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ')
      throw new Error(`cannot open the embedded database in ${pgdata}: ${reason}`)
    })
    return handle(pglite, release)
  } catch (err) {
    release()
    throw err
  }
}
