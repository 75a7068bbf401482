import { sql } from 'kysely'
import type { Transaction } from 'kysely'
import type { Database } from './schema.js'

// Keys of the advisory locks Tessera takes, one per kind of work that must not run twice at once.
const LOCKS = {
  migrate: 0x7e55_0001,
  bootstrap: 0x7e55_0002,
  keys: 0x7e55_0003,
} as const

export type LockName = keyof typeof LOCKS

// Advisory locks belong to the whole database, but a Tessera deployment is one schema of it: the
// lock is keyed by the schema too, so that deployments (or test runs) in other schemas of the same
// database never hold each other's work up, or make a try-lock skip a scheduled step. coalesce:
// current_schema() is null while the search_path names no existing schema (before a migration
// creates it), and a null key would silently take no lock at all.
const key = (name: LockName) => sql`${LOCKS[name]}::int4, hashtext(coalesce(current_schema(), ''))`

/**
 * Waits for a transaction-scoped advisory lock. Transaction-scoped (not session) locks, because a
 * transaction-mode pgbouncer hands each transaction a different server session.
 */
export async function withLock(trx: Transaction<Database>, name: LockName): Promise<void> {
  await sql`select pg_advisory_xact_lock(${key(name)})`.execute(trx)
}

/** Takes the lock if it is free; false means another instance holds it right now. */
export async function tryLock(trx: Transaction<Database>, name: LockName): Promise<boolean> {
  const r = await sql<{ locked: boolean }>`select pg_try_advisory_xact_lock(${key(name)}) as locked`.execute(trx)
  return r.rows[0]?.locked === true
}
