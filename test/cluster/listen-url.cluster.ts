// DATABASE_LISTEN_URL must reach the database and schema DATABASE_URL does: an instance whose
// listener reached another deployment's schema would load that deployment's view and renew its
// lease where no writer of its own looks, answering from memory what was revoked here. Refused
// at start, in one line. Postgres only (npm run test:pg); needs `npm run build` first.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { Cluster } from '../helpers/cluster.js'
import { runCli, spawnServer } from '../helpers/process.js'
import { isolatedDatabase } from '../helpers/server.js'

const ADMIN: [string, string] = ['listen-admin', 'listen-admin-secret-0123456789']

const main = await isolatedDatabase()
if (main === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  t.teardown(() => main.drop())
  const kek = randomBytes(32).toString('base64')
  const env = (listenUrl: string) => ({
    DATABASE_URL: main.url,
    DATABASE_LISTEN_URL: listenUrl,
    KEY_ENCRYPTION_KEY: kek,
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN[0],
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN[1],
  })
  const refusal = (err: unknown) =>
    String((err as Error).message)
      .split('\n')
      .slice(1)
      .join('\n')
      .trim()
  const MESSAGE =
    'tessera: DATABASE_LISTEN_URL does not reach the database and schema that DATABASE_URL does: a value written through DATABASE_URL could not be read through it. ' +
    'Point both at the same database, with the same search_path (options=-c search_path=...), or leave DATABASE_LISTEN_URL unset'

  t.test('a listener on another deployment\'s schema (migrated, so it would load and lease there): refused at start', async (t) => {
    const other = (await isolatedDatabase())!
    t.teardown(() => other.drop())
    const migrated = await runCli(['migrate'], { env: { DATABASE_URL: other.url, KEY_ENCRYPTION_KEY: kek } })
    t.equal(migrated.code, 0, migrated.stderr)
    const started = await spawnServer(t, env(other.url)).then(
      () => 'started',
      (err: unknown) => refusal(err),
    )
    t.equal(started, MESSAGE, 'one line that says what is wrong and what to do')
  })

  t.test('a listener on a schema without our tables: refused the same way', async (t) => {
    const empty = (await isolatedDatabase())!
    t.teardown(() => empty.drop())
    const started = await spawnServer(t, env(empty.url)).then(
      () => 'started',
      (err: unknown) => refusal(err),
    )
    t.equal(started, MESSAGE)
  })

  t.test('the same database and schema by another URL: starts, and leases', async (t) => {
    const same = new URL(main.url)
    same.searchParams.set('application_name', 'tessera listener')
    const srv = await spawnServer(t, env(same.toString()))
    t.ok(await new Cluster(ADMIN).leased(srv, 15_000), 'leased')
  })
}
