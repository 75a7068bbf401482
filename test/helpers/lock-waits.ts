// Orders of events on Postgres forced with row locks: a side session holds a lock, and the test
// waits until the server's statement is actually queued behind it (pg_locks), not for a while.
import pg from 'pg'
import type { TestServer } from './server.js'

interface Teardown {
  teardown(fn: () => unknown): void
}

/** A session of its own on the server's database and schema, ended at teardown. */
export async function sideSession(t: Teardown, srv: TestServer): Promise<pg.Client> {
  const url = new URL(srv.env['DATABASE_URL']!)
  const client = new pg.Client({ connectionString: process.env['DATABASE_URL'], options: url.searchParams.get('options') ?? undefined })
  await client.connect()
  t.teardown(() => client.end())
  return client
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Resolves once `count` sessions are waiting for a lock that `holder` holds (directly, or queued
 * behind another session that waits for it), each running a statement that matches `statement`;
 * rejects after `timeoutMs` with what was waiting. Read from a session of its own: a transaction
 * sees the activity of others as it was when it first looked.
 */
export async function blockedBy(holder: pg.Client, statement: RegExp, count = 1, timeoutMs = 20_000): Promise<void> {
  const holderPid = (holder as unknown as { processID: number }).processID
  const monitor = new pg.Client({ connectionString: process.env['DATABASE_URL'] })
  await monitor.connect()
  try {
    const deadline = Date.now() + timeoutMs
    let seen: string[] = []
    while (Date.now() < deadline) {
      const r = await monitor.query<{ pid: number; query: string; blockers: number[] }>(
        `select distinct a.pid, a.query, pg_blocking_pids(a.pid) as blockers
         from pg_locks l join pg_stat_activity a on a.pid = l.pid where not l.granted`,
      )
      // The sessions that wait for the holder, through any chain of waits.
      const behind = new Set([holderPid])
      for (let grew = true; grew; ) {
        grew = false
        for (const w of r.rows) {
          if (!behind.has(w.pid) && w.blockers.some((b) => behind.has(b))) {
            behind.add(w.pid)
            grew = true
          }
        }
      }
      seen = r.rows.filter((w) => w.pid !== holderPid && behind.has(w.pid)).map((w) => w.query)
      if (seen.filter((q) => statement.test(q)).length >= count) return
      await sleep(5)
    }
    throw new Error(`not ${count} statement(s) like ${statement} waiting for the side session; waiting: ${JSON.stringify(seen)}`)
  } finally {
    await monitor.end()
  }
}
