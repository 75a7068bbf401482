// A database that takes the feed's session but refuses its renewals (a read-only failover target,
// a full disk): the instance keeps one notification session at most, retries with a backoff
// rather than in a storm, takes its lease again once writes are back, and leaves no session
// behind when it stops (src/view/feed.ts). Postgres only (npm run test:pg).
import pg from 'pg'
import t from 'tap'
import { startTestServer } from '../helpers/server.js'

if (!process.env['DATABASE_URL']) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const srv = await startTestServer(t)
  const observer = new pg.Client({ connectionString: srv.env['DATABASE_URL'] })
  await observer.connect()
  t.teardown(() => observer.end())
  const feedPids = async () =>
    (await observer.query<{ pid: number }>('select pid from pg_stat_activity where application_name = $1', [`tessera feed ${process.pid}`])).rows.map(
      (r) => r.pid,
    )
  const state = async () => ((await srv.get('/readyz')).body as { view?: string }).view
  const until = async (what: string, check: () => Promise<boolean>, ms = 10_000) => {
    const end = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  t.test('renewals refused: one session at most, retried with a backoff, and the lease back after', async (t) => {
    await until('the lease', async () => (await state()) === 'leased')
    // What a demoted primary answers to every write.
    await observer.query(`
      create function refuse_writes() returns trigger language plpgsql as $$
      begin raise exception 'cannot execute % in a read-only transaction', tg_op using errcode = '25006'; end $$;
      create trigger refuse_writes before insert or update on instances for each row execute function refuse_writes()`)
    let most = 0
    const seen = new Set<number>()
    const end = Date.now() + 3000
    while (Date.now() < end) {
      const pids = await feedPids()
      most = Math.max(most, pids.length)
      for (const pid of pids) seen.add(pid)
      await new Promise((r) => setTimeout(r, 10))
    }
    t.equal(most, 1, 'never more than one notification session')
    // 100 ms doubling to 2 s, with jitter down to half: at most 7 attempts in 3 s (fewer may be seen).
    t.ok(seen.size >= 2 && seen.size <= 7, `${seen.size} sessions seen in 3 s`)
    t.not(await state(), 'leased', 'no lease while renewals fail')
    await observer.query('drop trigger refuse_writes on instances; drop function refuse_writes()')
    await until('the lease again', async () => (await state()) === 'leased')
    t.pass('the lease is back once writes are')
    t.equal((await feedPids()).length, 1, 'on one session')
    await srv.tessera.feed.stop()
    await until('no session', async () => (await feedPids()).length === 0, 2000)
    t.pass('and none once the feed has stopped')
  })
}
