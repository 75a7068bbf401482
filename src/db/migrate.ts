import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { sql, type Kysely } from 'kysely'
import { migrationsDir } from '../paths.js'
import type { Database } from './schema.js'
import { withLock } from './locks.js'

export interface MigrationResult {
  applied: string[]
}

/**
 * Applies the numbered SQL files in migrations/ that have not run yet, forward only, in one
 * transaction under a transaction-scoped advisory lock: two instances starting together apply
 * each migration once, and the lock also works behind a transaction-mode pgbouncer.
 */
export async function migrate(db: Kysely<Database>, dir = migrationsDir): Promise<MigrationResult> {
  const files = await migrationFiles(dir)
  const sources = await Promise.all(files.map(async (f) => [f, await readFile(join(dir, f), 'utf8')] as const))
  return db.transaction().execute(async (trx) => {
    await withLock(trx, 'migrate')
    await sql`create table if not exists schema_migrations (
      name text primary key,
      applied_at timestamptz not null default now()
    )`.execute(trx)
    const done = await sql<{ name: string }>`select name from schema_migrations`.execute(trx)
    const seen = new Set(done.rows.map((r) => r.name))
    const applied: string[] = []
    for (const [name, source] of sources) {
      if (seen.has(name)) continue
      for (const statement of statements(source)) await sql.raw(statement).execute(trx)
      await sql`insert into schema_migrations (name) values (${name})`.execute(trx)
      applied.push(name)
    }
    return { applied }
  })
}

/** The migrations this version has, in the order they apply. */
export async function migrationFiles(dir = migrationsDir): Promise<string[]> {
  return (await readdir(dir)).filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f)).sort()
}

/**
 * The statements of a migration file. PGlite runs one statement per query, so a migration is split
 * at each `;` that ends a line: migrations keep to that (no multi-line bodies with `;` at a line
 * end inside them).
 */
export function statements(source: string): string[] {
  return source
    .split(/;[ \t]*(?:--[^\n]*)?$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '')
}
