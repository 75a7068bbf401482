// Keeps the embedded server light: its resident memory once it serves, on the first start (the
// database created in a separate init process) and on a restart. MB here is what /proc counts:
// KiB / 1024. The server runs without tap's process tracker, which would add its own 30 MB.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, basic } from '../helpers/server.js'

const MB = 1024 * 1024
const SERVING_RSS_LIMIT = 220 * MB
const PEAK_LIMIT = 400 * MB

/** VmRSS and VmHWM (the peak) of a process, in bytes. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024
  return { rss: kib('VmRSS'), peak: kib('VmHWM') }
}

const mb = (bytes: number) => `${(bytes / MB).toFixed(0)} MB`

async function tokenRequest(server: ServerProcess): Promise<number> {
  const res = await fetch(`${server.url}/token`, {
    method: 'POST',
    headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=admin',
  })
  await res.arrayBuffer()
  return res.status
}

/** Checks the serving process once it listens and once it has answered a token request. */
async function checkServing(t: Test, server: ServerProcess, start: string): Promise<void> {
  const pid = server.child.pid!
  const listening = memory(pid)
  t.ok(listening.rss < SERVING_RSS_LIMIT, `${start}: ${mb(listening.rss)} resident once listening (limit ${mb(SERVING_RSS_LIMIT)})`)
  t.equal(await tokenRequest(server), 200, `${start}: a client_credentials token`)
  const served = memory(pid)
  t.ok(served.rss < SERVING_RSS_LIMIT, `${start}: ${mb(served.rss)} resident after a token request (limit ${mb(SERVING_RSS_LIMIT)})`)
  t.ok(served.peak < PEAK_LIMIT, `${start}: serving process peak ${mb(served.peak)} (limit ${mb(PEAK_LIMIT)})`)
}

t.test('the embedded server stays light on its first start and on a restart', { skip: !existsSync('/proc/self/status') && 'reads /proc' }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tessera-memory-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const env = { DATA_DIR: dataDir, BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID, BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET }

  const first = await spawnServer(t, env, { uninstrumented: true })
  const init = first.logs.filter((l) => l.msg === 'embedded database initialised')
  t.equal(init.length, 1, 'the first start creates the database, in one log line')
  t.equal(init[0]?.path, join(dataDir, 'pgdata'))
  const initPeak = init[0]?.initPeakRssBytes as number
  t.ok(initPeak > 50 * MB && initPeak < PEAK_LIMIT, `init process peak ${mb(initPeak)} (limit ${mb(PEAK_LIMIT)})`)
  await checkServing(t, first, 'first start')
  await first.stop()

  const again = await spawnServer(t, env, { uninstrumented: true })
  t.notOk(again.logs.some((l) => l.msg === 'embedded database initialised'), 'a restart opens the database as it is')
  await checkServing(t, again, 'restart')
  await again.stop()
})
