// What a client is answered when the database refuses a statement: for each SQLSTATE class the
// decision written in src/db/errors.ts, over HTTP, on this run's backend. The errors are real
// database errors: a trigger on the clients table raises the SQLSTATE a side session chose, or
// the database is made read-only as a demoted primary is.
import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { isDatabaseUnavailable } from '../../src/db/errors.js'
import { assertOAuthError, backend, isolatedDatabase, startTestServer, type HttpResult, type TestServer } from '../helpers/server.js'

/** Runs statements on the server's database from outside its request path. */
async function sideSession(srv: TestServer): Promise<{ run(statement: string): Promise<void>; close(): Promise<void> }> {
  const url = srv.env['DATABASE_URL']
  // Embedded: the one PGlite session, shared with the server (not inside any transaction here).
  if (url === undefined) return { run: async (s) => void (await sql.raw(s).execute(srv.tessera.db)), close: async () => undefined }
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  return { run: async (s) => void (await client.query(s)), close: () => client.end() }
}

const createClient = (srv: TestServer) =>
  srv.admin('POST', '/admin/clients', { name: 'faulty', grant_types: ['client_credentials'], scopes: ['read'] })

function unavailable(t: Test, r: HttpResult, what: string) {
  t.equal(r.status, 503, `${what}: 503`)
  assertOAuthError(t, r, 503, 'temporarily_unavailable')
  t.equal(r.headers.get('retry-after'), '2', `${what}: Retry-After`)
}

// One code or more of each class decided "unavailable" in src/db/errors.ts.
const UNAVAILABLE = [
  '08006', '25006', '25P03', '28P01', '3D000', '40000', '40001', '40003', '40P01', '53000', '53100', '53200', '53300', '53400',
  '54000', '54001', '55P03', '57000', '57014', '57P01', '57P04', '58000', '58030', '72000', 'F0000',
]
// And of each decided "our bug": a 500 that is logged as an error.
const BUGS = ['0A000', '22012', '23514', '25001', '25P02', '40002', '42703', '42883', '55000', '55006', 'P0001', 'XX000', 'XX001', 'XX002']

t.test('a SQLSTATE raised by the database: 503 where the database cannot serve now, 500 where the statement is ours to fix', async (t) => {
  const srv = await startTestServer(t)
  const side = await sideSession(srv)
  t.teardown(() => side.close())
  const ok = await createClient(srv)
  t.equal(ok.status, 201, 'without a fault the client is created')
  await side.run('create table fault (code text)')
  await side.run(`create function raise_fault() returns trigger language plpgsql as $$
    declare c text;
    begin
      select code into c from fault;
      if c is not null then raise exception 'injected %', c using errcode = c; end if;
      return new;
    end $$`)
  await side.run('create trigger raise_fault before insert on clients for each row execute function raise_fault()')
  await side.run('insert into fault values (null)')
  for (const code of UNAVAILABLE) {
    await side.run(`update fault set code = '${code}'`)
    unavailable(t, await createClient(srv), code)
  }
  for (const code of BUGS) {
    await side.run(`update fault set code = '${code}'`)
    assertOAuthError(t, await createClient(srv), 500, 'server_error')
  }
  await side.run('update fault set code = null')
  t.equal((await createClient(srv)).status, 201, 'and once it passes, the same request succeeds')
})

t.test('errno of the network under the database connection', async (t) => {
  for (const code of ['EHOSTDOWN', 'ENETDOWN', 'ENETRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'ECONNREFUSED', 'EADDRNOTAVAIL']) {
    const err = Object.assign(new Error(`connect ${code} 10.0.0.1:5432`), { code, errno: -1, syscall: 'connect' })
    t.equal(isDatabaseUnavailable(err), true, code)
  }
  t.equal(isDatabaseUnavailable(Object.assign(new Error('x'), { code: 'EACCES' })), false, 'EACCES: not the network')
})

t.test('a read-only database (a primary demoted during a failover): writes are answered 503', async (t) => {
  if (backend === 'pglite') {
    // Embedded there is no failover, but the same refusal (25006) comes from the one session.
    const srv = await startTestServer(t)
    t.equal((await createClient(srv)).status, 201)
    await sql`set default_transaction_read_only = on`.execute(srv.tessera.db)
    unavailable(t, await createClient(srv), 'read-only')
    await sql`set default_transaction_read_only = off`.execute(srv.tessera.db)
    t.equal((await createClient(srv)).status, 201, 'and writable again, written again')
    return
  }
  // Postgres: a role of its own whose sessions are made read-only, then every session of it ended
  // by the server, as a failover ends them; the pool reconnects to a database that refuses writes.
  const base = process.env['DATABASE_URL']!
  const suffix = randomBytes(6).toString('hex')
  const role = `r_${suffix}`
  const schema = `t_${suffix}`
  const admin = new pg.Client({ connectionString: base })
  await admin.connect()
  await admin.query(`create role ${role} login`)
  await admin.query(`create schema ${schema} authorization ${role}`)
  t.teardown(async () => {
    await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where usename = '${role}'`)
    await admin.query(`drop schema ${schema} cascade`)
    await admin.query(`drop role ${role}`)
    await admin.end()
  })
  const url = new URL(base)
  url.username = role
  url.searchParams.set('options', `-c search_path=${schema}`)
  const srv = await startTestServer(t, { DATABASE_URL: url.toString() })
  t.equal((await createClient(srv)).status, 201)

  await admin.query(`alter role ${role} set default_transaction_read_only = on`)
  await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where usename = '${role}'`)
  // Until the pool has seen every old session end, a request may still meet one and be answered
  // 503 for that reason: wait until no pooled connection is older than the change.
  const pool = srv.tessera.metrics.sources.pool!
  for (;;) {
    const { rows } = await admin.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity where usename = $1 and application_name not like 'tessera feed%'`,
      [role],
    )
    if (pool()!.total <= rows[0]!.n) break
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  unavailable(t, await createClient(srv), 'read-only')
})

t.test('a lock held elsewhere past lock_timeout (55P03), a statement past statement_timeout (57014): 503', { skip: backend !== 'postgres' && 'needs Postgres: timeouts of a server session' }, async (t) => {
  for (const [setting, code] of [['lock_timeout', '55P03'], ['statement_timeout', '57014']] as const) {
    const database = (await isolatedDatabase())!
    t.teardown(() => database.drop())
    const url = new URL(database.url)
    url.searchParams.set('options', `${url.searchParams.get('options')} -c ${setting}=300`)
    const srv = await startTestServer(t, { DATABASE_URL: url.toString() })
    await srv.adminToken()
    // A side session holds the table against inserts (reads still pass) until the answer is in.
    const side = new pg.Client({ connectionString: database.url })
    await side.connect()
    await side.query('begin')
    await side.query('lock table clients in exclusive mode')
    const r = await createClient(srv)
    await side.query('rollback')
    await side.end()
    unavailable(t, r, `${setting} (${code})`)
    t.equal((await createClient(srv)).status, 201, 'and with the lock gone, it succeeds')
  }
})
