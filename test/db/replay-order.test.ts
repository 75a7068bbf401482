// The replay guard's batch insert (src/replay/guard.ts) between two instances whose batches share
// jtis in opposite order (issue 15 item 10). Unsorted, each statement inserts its first row and
// then waits for the other's: a deadlock, and one whole batch fails (40P01). The order of events
// is forced: a side session holds a jti both batches contain, uncommitted, until both statements
// are seen waiting for it, then lets go; whichever takes it next needs a row the other has
// inserted. Postgres only: the embedded database has one connection.
import t from 'tap'
import pg from 'pg'
import { openDatabase, type DatabaseHandle } from '../../src/db/connect.js'
import { migrate } from '../../src/db/migrate.js'
import { createLogger } from '../../src/log.js'
import { ReplayGuard } from '../../src/replay/guard.js'
import { systemClock } from '../../src/clock.js'
import { isolatedDatabase } from '../helpers/server.js'

const database = await isolatedDatabase()
if (database === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const log = createLogger('silent')
  const handles: DatabaseHandle[] = []
  // Each instance's sessions are named (after this file's schema, so that another run of it is
  // not counted), so that the test can see when both are waiting.
  const run = /search_path=(\w+)/.exec(new URL(database.url).searchParams.get('options') ?? '')?.[1] ?? 'here'
  const open = async (name: string) => {
    const url = new URL(database.url)
    url.searchParams.set('application_name', name)
    const handle = await openDatabase({ databaseUrl: url.toString(), dataDir: 'memory://', log })
    handles.push(handle)
    return handle.db
  }
  const [one, two] = [await open(`replay-order ${run} one`), await open(`replay-order ${run} two`)]
  await migrate(one)
  const side = new pg.Client({ connectionString: database.url, application_name: 'replay-order side' })
  await side.connect()
  // pg_stat_activity is read once per transaction: it is watched from a session outside one.
  const watch = new pg.Client({ connectionString: database.url, application_name: 'replay-order watch' })
  await watch.connect()
  t.teardown(async () => {
    await side.end()
    await watch.end()
    for (const h of handles) await h.close()
    await database.drop()
  })

  t.test('two instances recording overlapping jtis in opposite order both get an answer, and each jti is new exactly once', async (t) => {
    const expires = new Date(Date.now() + 3600_000)
    await side.query('begin')
    await side.query(`insert into replay_guard (kind, jti, expires_at) values ('dpop', 'm', $1)`, [expires])

    const [first, second] = [new ReplayGuard(one, systemClock), new ReplayGuard(two, systemClock)]
    // Each guard gathers the uses of one turn of the event loop into one statement, in this order.
    const batch = (guard: ReplayGuard, jtis: string[]) => Promise.allSettled(jtis.map((jti) => guard.firstUse('dpop', jti, expires)))
    const a = batch(first, ['a', 'm', 'z'])
    const b = batch(second, ['z', 'm', 'a'])

    // Both statements are waiting (for the side session's row, or for each other's) before it goes away.
    for (;;) {
      const { rows } = await watch.query(
        `select count(*)::int as n from pg_stat_activity
          where application_name in ($1, $2) and wait_event_type = 'Lock' and datname = current_database()`,
        [`replay-order ${run} one`, `replay-order ${run} two`],
      )
      if (rows[0].n >= 2) break
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await side.query('rollback')

    const results = [...(await a), ...(await b)]
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as { code?: string }).code ?? r.reason)] : []))
    t.same(failures, [], 'no batch failed (no 40P01 deadlock)')
    const firstUses = (rs: PromiseSettledResult<boolean>[]) => rs.map((r) => r.status === 'fulfilled' && r.value)
    const [ra, rb] = [firstUses(await a), firstUses(await b)]
    // ['a', 'm', 'z'] and ['z', 'm', 'a']: each jti is new for exactly one of them.
    t.same([ra[0]! !== rb[2]!, ra[1]! !== rb[1]!, ra[2]! !== rb[0]!], [true, true, true], 'each jti new exactly once')
  })
}
