// WEB_CONCURRENCY: parsed and checked at start. The workers themselves run on Postgres only
// (test/cluster/web-concurrency.cluster.ts).
import { spawnSync } from 'node:child_process'
import { availableParallelism } from 'node:os'
import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.js'
import { cliPath } from '../helpers/process.js'

const postgres = { DATABASE_URL: 'postgres://127.0.0.1:1/none', KEY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64') }

t.test('a whole number from 1 to 64, or auto for one per core', async (t) => {
  t.equal(loadConfig({}).webConcurrency, 1, 'default 1')
  t.equal(loadConfig({ WEB_CONCURRENCY: '' }).webConcurrency, 1, 'empty is unset')
  t.equal(loadConfig({ WEB_CONCURRENCY: '1' }).webConcurrency, 1)
  t.equal(loadConfig({ ...postgres, WEB_CONCURRENCY: '3' }).webConcurrency, 3)
  t.equal(loadConfig({ ...postgres, WEB_CONCURRENCY: '64' }).webConcurrency, 64)
  t.equal(loadConfig({ ...postgres, WEB_CONCURRENCY: 'auto' }).webConcurrency, Math.min(availableParallelism(), 64))
  for (const bad of ['0', '65', '2.5', 'two', '-1', 'AUTO ish']) {
    t.throws(() => loadConfig({ ...postgres, WEB_CONCURRENCY: bad }), new ConfigError(`WEB_CONCURRENCY must be a whole number from 1 to 64 or "auto", got "${bad}"`))
  }
})

t.test('more than one worker needs Postgres: with the embedded database it is refused', async (t) => {
  for (const value of ['2', 'auto']) {
    t.throws(() => loadConfig({ WEB_CONCURRENCY: value }), /^WEB_CONCURRENCY=\S+ needs DATABASE_URL: the embedded database \(PGlite\)/)
  }
})

t.test('tessera serve refuses at start with one line naming the variable, and no stack trace', async (t) => {
  for (const [value, message] of [
    ['2', /^tessera: WEB_CONCURRENCY=2 needs DATABASE_URL: the embedded database \(PGlite\) can be opened by one process only; set DATABASE_URL to run several workers, or WEB_CONCURRENCY=1\n$/],
    ['lots', /^tessera: WEB_CONCURRENCY must be a whole number from 1 to 64 or "auto", got "lots"\n$/],
  ] as const) {
    const run = spawnSync(process.execPath, [cliPath, 'serve'], {
      env: { PATH: process.env['PATH'] ?? '', DATA_DIR: 'memory://', PORT: '0', ADMIN_PORT: '0', WEB_CONCURRENCY: value },
      encoding: 'utf8',
      timeout: 30_000,
    })
    t.equal(run.status, 1, `WEB_CONCURRENCY=${value}: exit code 1`)
    t.match(run.stderr, message, 'exactly that line on stderr')
    t.equal(run.stdout, '', 'it did not start: nothing logged')
  }
})
