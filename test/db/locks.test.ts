// The advisory locks that keep scheduled work to one instance at a time (src/db/locks.ts) belong
// to one deployment, that is one schema: instances over the same schema exclude each other, and a
// deployment in another schema of the same database neither waits for them nor makes their
// try-lock skip its step. Postgres only: the embedded database has one connection.
import t from 'tap'
import { openDatabase, type DatabaseHandle } from '../../src/db/connect.js'
import { tryLock, withLock } from '../../src/db/locks.js'
import { createLogger } from '../../src/log.js'
import { isolatedDatabase } from '../helpers/server.js'

const [here, elsewhere] = [await isolatedDatabase(), await isolatedDatabase()]
if (here === undefined || elsewhere === undefined) {
  t.plan(0, 'needs Postgres: DATABASE_URL is unset')
} else {
  const log = createLogger('silent')
  const handles: DatabaseHandle[] = []
  const open = async (url: string) => {
    const handle = await openDatabase({ databaseUrl: url, dataDir: 'memory://', log })
    handles.push(handle)
    return handle.db
  }
  const holder = await open(here.url)
  const sameSchema = await open(here.url)
  const otherSchema = await open(elsewhere.url)
  t.teardown(async () => {
    for (const h of handles) await h.close()
    await here.drop()
    await elsewhere.drop()
  })

  t.test('a lock held in one schema excludes that schema only', async (t) => {
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let held!: () => void
    const holding = new Promise<void>((resolve) => (held = resolve))
    const holderDone = holder.transaction().execute(async (trx) => {
      await withLock(trx, 'keys')
      held()
      await released
    })
    await holding
    try {
      t.equal(await sameSchema.transaction().execute((trx) => tryLock(trx, 'keys')), false, 'another instance of the same deployment is kept out')
      t.equal(await otherSchema.transaction().execute((trx) => tryLock(trx, 'keys')), true, 'a deployment in another schema is not')
      t.equal(await sameSchema.transaction().execute((trx) => tryLock(trx, 'migrate')), true, 'and other kinds of work are not either')
    } finally {
      release()
      await holderDone
    }
    t.equal(await sameSchema.transaction().execute((trx) => tryLock(trx, 'keys')), true, 'free once the holder commits')
  })
}
