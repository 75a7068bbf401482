// The first start on an empty DATA_DIR creates the embedded database in a separate process: what
// happens when two servers start at once, when a start is killed during the init, and when
// DATA_DIR/pgdata holds something else.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { cliPath, neutralCwd, spawnServer } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, basic } from '../helpers/server.js'

const env = (dataDir: string) => ({ DATA_DIR: dataDir, BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID, BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET })

function tempDataDir(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-init-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const staging = (dataDir: string) => readdirSync(dataDir).filter((n) => n.startsWith('pgdata.init-'))

async function tokenStatus(url: string): Promise<number> {
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=admin',
  })
  await res.arrayBuffer()
  return res.status
}

/** Pids of processes whose command line mentions `text` (Linux). */
function processesMentioning(text: string): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text)
      } catch {
        return false
      }
    })
    .map(Number)
}

t.test('two servers started at once on an empty DATA_DIR: one serves, the other refuses in one line', async (t) => {
  const dataDir = tempDataDir(t)
  const results = await Promise.allSettled([spawnServer(t, env(dataDir)), spawnServer(t, env(dataDir))])
  const served = results.filter((r) => r.status === 'fulfilled')
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
  t.equal(served.length, 1, 'one serves')
  t.equal(refused.length, 1, 'one refuses')
  const stderr = String(refused[0]?.reason?.message ?? '')
    .split('\n')
    .slice(1)
    .join('\n')
    .trim()
  t.match(stderr, /^tessera: .* is in use by process \d+: one process at a time may open the embedded database/)
  t.equal(stderr.split('\n').length, 1, 'one line, no stack trace')
  t.equal(await tokenStatus(served[0]!.value.url), 200, 'the one that serves is unharmed')
  t.same(staging(dataDir), [])
})

t.test('an unfinished init is redone: a start killed during it, an empty pgdata of an older version', { skip: !existsSync('/proc/self/cmdline') && 'reads /proc' }, async (t) => {
  const dataDir = tempDataDir(t)
  const killed = spawn(process.execPath, [cliPath, 'serve'], {
    env: { PATH: process.env['PATH'] ?? '', PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'silent', ...env(dataDir) },
    stdio: 'ignore',
    cwd: neutralCwd,
  })
  t.teardown(() => {
    killed.kill('SIGKILL')
  })
  let during: string[] = []
  for (let i = 0; i < 600 && during.length === 0; i++) {
    await sleep(50)
    during = staging(dataDir)
  }
  t.equal(during.length, 1, 'the init works in a staging directory')
  killed.kill('SIGKILL')
  await new Promise((resolve) => killed.once('exit', resolve))
  t.notOk(existsSync(join(dataDir, 'pgdata')), 'no pgdata until the init is complete')
  t.ok(existsSync(join(dataDir, 'pgdata.lock')), 'the killed server left its lock behind')
  // Without its parent the init process stops too, instead of finishing work nobody will use.
  for (let i = 0; i < 200 && processesMentioning(during[0]!).length > 0; i++) await sleep(50)
  t.same(processesMentioning(during[0]!), [], 'the init process is gone')

  mkdirSync(join(dataDir, 'pgdata'))
  const server = await spawnServer(t, env(dataDir))
  t.ok(server.logs.some((l) => l.msg === 'embedded database initialised'), 'initialised again')
  t.same(staging(dataDir), [], 'the staging directory is removed')
  t.ok(existsSync(join(dataDir, 'pgdata', 'PG_VERSION')))
  t.equal(await tokenStatus(server.url), 200)
})

t.test('a pgdata that holds something else is left alone, and the start fails in one line', async (t) => {
  const dataDir = tempDataDir(t)
  mkdirSync(join(dataDir, 'pgdata'))
  writeFileSync(join(dataDir, 'pgdata', 'notes.txt'), 'mine\n')
  const run = spawnSync(process.execPath, [cliPath, 'serve'], {
    env: { PATH: process.env['PATH'] ?? '', PORT: '0', ADMIN_PORT: '0', ...env(dataDir) },
    encoding: 'utf8',
    timeout: 60_000,
  })
  t.equal(run.status, 1)
  t.match(run.stderr, /^tessera: \S+pgdata exists but holds no database: move it away/)
  t.equal(run.stderr.trim().split('\n').length, 1, 'one line, no stack trace')
  t.equal(readFileSync(join(dataDir, 'pgdata', 'notes.txt'), 'utf8'), 'mine\n')
  t.equal(spawnSync('flock', ['-x', '-n', join(dataDir, 'pgdata.lock'), 'true']).status, 0, 'the lock is given back')
})
