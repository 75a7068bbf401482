import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { Socket } from 'node:net'
import { Kysely, PGliteDialect, sql, PostgresDialect, type Dialect, type PostgresPool, type PostgresPoolClient } from 'kysely'
import pg from 'pg'
import type { Logger } from 'pino'
import type { PoolStats } from '../metrics.js'
import { lockDataDir } from './data-dir-lock.js'
import { ensureCluster } from './embedded-init.js'
import { EMBEDDED_START_PARAMS, useBaselineWasmCompiler } from './pglite-settings.js'
import type { Database } from './schema.js'

export interface DatabaseHandle {
  db: Kysely<Database>
  backend: 'postgres' | 'pglite'
  /**
   * A connection of its own for change notifications (see FeedConnection); on Postgres, proved
   * to reach the pool's database and schema first (checkSameDatabase).
   */
  openFeedConnection(): Promise<FeedConnection>
  /** The pool's occupancy, for metrics; absent on the embedded database, which has no pool. */
  poolStats?: () => PoolStats
  close(): Promise<void>
  /**
   * Destroys every connection at once, the feed's too: what waits on them fails now. For a
   * shutdown past its deadline, when close() waits on a connection that no longer answers (a
   * half-open TCP connection can take minutes to be noticed).
   */
  abort(): void
}

/**
 * A session that receives notifications (LISTEN) and runs the few queries of whoever listens, so
 * that they never wait behind the request path's pool. On Postgres it is a direct connection of
 * its own; embedded, it is the one PGlite session.
 */
export interface FeedConnection {
  /** Queries on this connection only. */
  db: Kysely<Database>
  /** Starts delivering the payloads sent to `channel` (pg_notify) after their transaction commits. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<void>
  /** Called at most once, when the connection fails; it is of no use after that. */
  onLost(callback: (err: Error) => void): void
  close(): Promise<void>
}

export interface DatabaseOptions {
  databaseUrl: string | undefined
  /** A direct (session) connection for notifications; defaults to databaseUrl. */
  listenUrl?: string | undefined
  dataDir: string
  log: Logger
  /** Bounds the wait for a pooled connection and each statement, in milliseconds. */
  timeoutMs?: number
  /** Wraps the request path's dialect (tracing, src/tracing.ts); not the feed's own session. */
  wrapDialect?: (dialect: Dialect) => Dialect
}

const DEFAULT_TIMEOUT_MS = 5000

/** The one place that picks the backend: Postgres through a pg Pool, or embedded PGlite. */
export async function openDatabase(opts: DatabaseOptions): Promise<DatabaseHandle> {
  const wrap = opts.wrapDialect ?? ((dialect: Dialect) => dialect)
  if (opts.databaseUrl !== undefined) {
    return openPostgres(opts.databaseUrl, opts.listenUrl ?? opts.databaseUrl, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, opts.log, wrap)
  }
  return openPglite(opts.dataDir, opts.log, wrap)
}

function openPostgres(connectionString: string, listenUrl: string, timeoutMs: number, log: Logger, wrap: (d: Dialect) => Dialect): DatabaseHandle {
  // Every socket under every client, pooled or the feed's, made here so that abort() can reach it.
  const sockets = new Set<Socket>()
  const stream = () => {
    const socket = new Socket()
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    return socket
  }
  // Bounded waits: with the database gone, a request fails within the timeout (and is answered
  // 503) instead of queueing behind connections that will never come.
  const pool = new pg.Pool({
    connectionString,
    max: 10,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    keepAlive: true,
    stream,
  })
  // An idle client whose connection drops emits 'error' on the pool; a checked-out one emits it on
  // the client itself, and unhandled it would kill the process. The query in flight fails and
  // the request gets an error answer; the pool replaces the connection.
  pool.on('error', (err) => log.warn({ err: err.message }, 'idle database connection failed'))
  pool.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err: err.message }, 'database connection failed'))
  })
  const db = new Kysely<Database>({ dialect: wrap(new PostgresDialect({ pool })) })
  return {
    db,
    backend: 'postgres',
    openFeedConnection: async () => {
      const feed = await openPostgresFeed(listenUrl, timeoutMs, stream)
      try {
        await checkSameDatabase(db, feed.db)
      } catch (err) {
        await feed.close()
        throw err
      }
      return feed
    },
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max }),
    close: () => db.destroy(),
    abort: () => {
      for (const socket of sockets) socket.destroy()
    },
  }
}

async function openPostgresFeed(connectionString: string, timeoutMs: number, stream: () => Socket): Promise<FeedConnection> {
  const client = new pg.Client({
    connectionString,
    stream,
    keepAlive: true,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    // So that an operator (or a test) can tell which session is whose feed.
    application_name: `tessera feed ${process.pid}`,
  })
  let lost: ((err: Error) => void) | undefined
  let failed: Error | undefined
  const fail = (err: Error) => {
    if (failed !== undefined) return
    failed = err
    lost?.(err)
  }
  // Handled from the start: an unhandled 'error' on a client kills the process.
  client.on('error', fail)
  client.on('end', () => fail(new Error('notification connection ended')))
  try {
    await client.connect()
  } catch (err) {
    await client.end().catch(() => undefined)
    throw err
  }
  const listeners = new Map<string, (payload: string) => void>()
  client.on('notification', (msg) => {
    if (msg.payload !== undefined) listeners.get(msg.channel)?.(msg.payload)
  })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: singleClientPool(client) }) })
  return {
    db,
    async listen(channel, onNotify) {
      listeners.set(channel, onNotify)
      await client.query(`listen ${pg.escapeIdentifier(channel)}`)
    },
    onLost(callback) {
      lost = callback
      if (failed !== undefined) callback(failed)
    },
    async close() {
      failed ??= new Error('closed')
      await client.end().catch(() => undefined)
    },
  }
}

/** DATABASE_LISTEN_URL reaches another database, or another schema, than DATABASE_URL. */
export class ListenUrlMismatchError extends Error {
  override name = 'ListenUrlMismatchError'
}

/**
 * Proves that the feed's session reaches the database and schema the pool does, by a random
 * value written through the pool and read back through the feed. A feed elsewhere would load its
 * view from another deployment's tables and renew its lease in an `instances` table no writer of
 * this one reads, so that it answered from memory what writers here had revoked; one on a database
 * without our tables would fail later with a less helpful error. Names alone (database, schema,
 * host) prove nothing: two clusters, or a pooler and a replica, can answer to the same ones.
 * Both statements run outside any transaction, so a transaction-mode pooler in DATABASE_URL
 * commits the write before the read.
 */
export async function checkSameDatabase(pool: Kysely<Database>, feed: Kysely<Database>): Promise<void> {
  const token = randomBytes(16).toString('hex')
  await sql`insert into listen_probes (token) values (${token})`.execute(pool)
  try {
    let seen: boolean
    try {
      seen = (await sql`select 1 from listen_probes where token = ${token}`.execute(feed)).rows.length === 1
    } catch (err) {
      // undefined_table: a database or schema without Tessera's tables.
      if ((err as { code?: unknown }).code !== '42P01') throw err
      seen = false
    }
    if (!seen) {
      throw new ListenUrlMismatchError(
        'DATABASE_LISTEN_URL does not reach the database and schema that DATABASE_URL does: a value written through DATABASE_URL could not be read through it. ' +
          'Point both at the same database, with the same search_path (options=-c search_path=...), or leave DATABASE_LISTEN_URL unset',
      )
    }
  } finally {
    await sql`delete from listen_probes where token = ${token} or created_at < now() - interval '1 hour'`.execute(pool).catch(() => undefined)
  }
}

/**
 * A "pool" of one client, so that kysely can run queries on the notification session itself.
 * Queries are issued one after the other: a pg client queues overlapping ones itself, but that
 * is deprecated.
 */
function singleClientPool(client: pg.Client): PostgresPool {
  let last: Promise<unknown> = Promise.resolve()
  const borrowed: PostgresPoolClient = {
    query: ((text: string, values: unknown[]) => {
      const run = last.then(() => client.query(text, values))
      last = run.catch(() => undefined)
      return run
    }) as unknown as PostgresPoolClient['query'],
    release: () => undefined,
  }
  return { connect: async () => borrowed, end: async () => undefined, options: {} }
}

async function openPglite(dataDir: string, log: Logger, wrap: (d: Dialect) => Dialect): Promise<DatabaseHandle> {
  useBaselineWasmCompiler()
  const { PGlite } = await import('@electric-sql/pglite')
  const startParams = [...PGlite.defaultStartParams, ...EMBEDDED_START_PARAMS]
  const handle = (pglite: InstanceType<typeof PGlite>, release = async () => {}): DatabaseHandle => {
    const db = new Kysely<Database>({ dialect: wrap(new PGliteDialect({ pglite })) })
    // One session serves everything, notifications included; it is never lost.
    const feed: FeedConnection = {
      db,
      async listen(channel, onNotify) {
        await pglite.listen(channel, onNotify)
      },
      onLost: () => undefined,
      close: async () => undefined,
    }
    // In-process, with nothing on the network to wait for: there is nothing to abort.
    return { db, backend: 'pglite', openFeedConnection: async () => feed, close: () => db.destroy().finally(release), abort: () => undefined }
  }
  // In memory (the tests) there is nothing to keep apart or to leave behind, and initdb runs here.
  if (dataDir.startsWith('memory://')) return handle(await PGlite.create(dataDir, { startParams }))

  // DATA_DIR also holds the key-encryption key and the admin client's credentials; the database
  // gets a folder of its own in it.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const release = await lockDataDir(dataDir)
  try {
    const pgdata = await ensureCluster(dataDir, log)
    const pglite = await PGlite.create(pgdata, { startParams }).catch((err: unknown) => {
      const reason = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ')
      throw new Error(`cannot open the embedded database in ${pgdata}: ${reason}`)
    })
    return handle(pglite, release)
  } catch (err) {
    await release()
    throw err
  }
}
