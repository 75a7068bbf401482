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

/**
 * Waits for a transaction-scoped advisory lock. Transaction-scoped (not session) locks, because a
 * transaction-mode pgbouncer hands each transaction a different server session.
 */
export async function withLock(trx: Transaction<Database>, name: LockName): Promise<void> {
  await sql`select pg_advisory_xact_lock(${LOCKS[name]})`.execute(trx)
}

/** Takes the lock if it is free; false means another instance holds it right now. */
export async function tryLock(trx: Transaction<Database>, name: LockName): Promise<boolean> {
  const r = await sql<{ locked: boolean }>`select pg_try_advisory_xact_lock(${LOCKS[name]}) as locked`.execute(trx)
  return r.rows[0]?.locked === true
}
