// The configuration as an operator meets it: `.env` in the working directory, `tessera config`,
// and one clear line for a bad value on every command that reads the configuration. Each case is
// the built CLI as a child process in a directory of its own.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { packageRoot } from '../../src/paths.js'
import { runCli, type CliResult } from '../helpers/process.js'

const tessera = (args: string[], cwd: string, env: Record<string, string> = {}): Promise<CliResult> => runCli(args, { env, cwd })

const noStackTrace = (text: string) => !/\n\s+at /.test(text)

/** Every variable .env.example documents for the server (the CLI's TESSERA_* and Compose's POSTGRES_* aside). */
const documented = readFileSync(join(packageRoot, '.env.example'), 'utf8')
  .split('\n')
  .map((l) => /^#?\s*([A-Z][A-Z0-9_]*)=/.exec(l)?.[1])
  .filter((n): n is string => n !== undefined && !n.startsWith('TESSERA_') && !n.startsWith('POSTGRES_'))

t.test('tessera config shows every documented variable with its effective value and source; secrets masked', async (t) => {
  const dir = t.testdir({})
  const kek = randomBytes(32).toString('base64')
  const env = {
    DATABASE_URL: 'postgres://tessera:hunter2-db-password@db.internal:5432/tessera',
    DATABASE_LISTEN_URL: 'postgresql://tessera:hunter2-listen-password@db-direct.internal/tessera',
    KEY_ENCRYPTION_KEY: kek,
    BOOTSTRAP_ADMIN_CLIENT_ID: 'admin',
    BOOTSTRAP_ADMIN_CLIENT_SECRET: 'bootstrap-secret-0123456789',
    ACCESS_TOKEN_TTL: '300',
  }
  const text = await tessera(['config'], dir, env)
  t.equal(text.code, 0, text.stderr)
  for (const secret of ['hunter2-db-password', 'hunter2-listen-password', kek, 'bootstrap-secret-0123456789']) {
    t.notOk(text.stdout.includes(secret), 'a secret is never printed')
  }
  t.match(text.stdout, /^DATABASE_URL=postgres:\/\/tessera:\*\*\*\*@db\.internal:5432\/tessera\s+# environment$/m)
  t.match(text.stdout, /^KEY_ENCRYPTION_KEY=\*\*\*\*\s+# environment: sha256:[0-9a-f]{8}$/m)
  t.match(text.stdout, /^BOOTSTRAP_ADMIN_CLIENT_SECRET=\*\*\*\*\s+# environment$/m)
  t.match(text.stdout, /^ACCESS_TOKEN_TTL=300\s+# environment$/m)
  t.match(text.stdout, /^REFRESH_TOKEN_TTL=1209600\s+# default$/m, 'defaults are shown too')
  t.match(text.stdout, /^TRUST_PROXY=\s+# unset$/m)
  for (const name of documented) t.match(text.stdout, new RegExp(`^${name}=`, 'm'), `${name} is shown`)

  const json = await tessera(['config', '--json'], dir, env)
  t.equal(json.code, 0, json.stderr)
  const body = JSON.parse(json.stdout)
  t.equal(body.env_file, null, 'no .env here')
  t.same(Object.keys(body.variables).sort(), [...documented].sort(), 'the same variables as .env.example, no more')
  t.same(body.variables.ACCESS_TOKEN_TTL, { value: '300', source: 'environment' })
  t.same(body.variables.SIGNING_ALG, { value: 'ES256', source: 'default' })
  t.equal(body.variables.KEY_ENCRYPTION_KEY.value, '****')
  t.notOk(json.stdout.includes(kek))

  // The same fingerprint for the same key: how an operator compares two instances' keys.
  const again = JSON.parse((await tessera(['config', '--json'], dir, env)).stdout)
  t.equal(again.variables.KEY_ENCRYPTION_KEY.note, body.variables.KEY_ENCRYPTION_KEY.note)
  const other = JSON.parse((await tessera(['config', '--json'], dir, { ...env, KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') })).stdout)
  t.not(other.variables.KEY_ENCRYPTION_KEY.note, body.variables.KEY_ENCRYPTION_KEY.note)

  const wrong = await tessera(['config', '--yaml'], dir)
  t.equal(wrong.code, 2)
})

t.test('.env in the working directory is read; the environment wins over it', async (t) => {
  const dir = t.testdir({
    '.env': [
      '# a comment',
      'PORT=9090',
      'export ACCESS_TOKEN_TTL=60',
      'LOG_LEVEL="warn"  # a trailing comment',
      'BOOTSTRAP_ADMIN_CLIENT_ID=admin',
      "BOOTSTRAP_ADMIN_CLIENT_SECRET='from .env: 0123456789'",
      '',
    ].join('\n'),
  })
  const r = await tessera(['config', '--json'], dir, { ACCESS_TOKEN_TTL: '120' })
  t.equal(r.code, 0, r.stderr)
  const { env_file, variables } = JSON.parse(r.stdout)
  t.equal(env_file, join(dir, '.env'))
  t.same(variables.PORT, { value: '9090', source: '.env' })
  t.same(variables.ACCESS_TOKEN_TTL, { value: '120', source: 'environment' }, 'the environment wins')
  t.same(variables.LOG_LEVEL, { value: 'warn', source: '.env' })
  t.same(variables.BOOTSTRAP_ADMIN_CLIENT_SECRET, { value: '****', source: '.env' })
  t.equal(variables.ISSUER.value, 'http://localhost:9090', 'defaults follow the values read')

  const text = await tessera(['config'], dir)
  t.match(text.stdout, new RegExp(`then ${join(dir, '.env').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, then the defaults`))
  t.match(text.stdout, /^PORT=9090\s+# \.env$/m)
})

t.test('a malformed .env is refused in one line naming the line, never quoting it', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['PORT=8080\nthis line is my-secret-password\n', /^tessera: \.env line 2: expected NAME=value/],
    ['PORT=8080\n\nISSUER="https://auth.example.com\n', /^tessera: \.env line 3: the quoted value of ISSUER is never closed\n$/],
    ['1PORT=8080\n', /^tessera: \.env line 1: expected NAME=value/],
  ]
  for (const [content, expected] of cases) {
    const dir = t.testdir({ '.env': content })
    for (const command of ['serve', 'config', 'doctor', 'migrate']) {
      const r = await tessera([command], dir)
      t.equal(r.code, 1, `${command}: exit 1`)
      t.match(r.stderr, expected, `${command}: ${r.stderr.trim()}`)
      t.equal(r.stderr.split('\n').length, 2, 'one line')
      t.notOk(r.stderr.includes('my-secret-password'))
    }
  }
  // A quoted value may span lines; the line after it is read as its own.
  const multi = t.testdir({ '.env': 'NOTES="first line\n# not a comment, still the value\n"\nPORT=9091\n' })
  const ok = await tessera(['config', '--json'], multi)
  t.equal(ok.code, 0, ok.stderr)
  t.same(JSON.parse(ok.stdout).variables.PORT, { value: '9091', source: '.env' })
})

t.test('a bad value stops every command that reads the configuration with one line naming the variable', async (t) => {
  const kek = randomBytes(32).toString('base64')
  const pg = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', KEY_ENCRYPTION_KEY: kek }
  const cases: Array<{ command: string; env?: Record<string, string>; file?: string; expected: RegExp }> = [
    { command: 'serve', env: { PORT: 'eighty' }, expected: /^tessera: PORT must be a whole number, got "eighty"\n$/ },
    { command: 'serve', env: { LOG_LEVEL: 'loud' }, expected: /^tessera: LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, silent, got "loud"\n$/ },
    { command: 'serve', env: { HOST: 'not a host' }, expected: /^tessera: HOST must be an IP address or a host name/ },
    // The cluster's primary reads the configuration before it forks anything.
    { command: 'serve', env: { ...pg, WEB_CONCURRENCY: '2', SIGNING_ALG: 'HS256' }, expected: /^tessera: SIGNING_ALG must be one of ES256, EdDSA, RS256, PS256, got "HS256"\n$/ },
    { command: 'serve', env: { ...pg, WEB_CONCURRENCY: 'lots' }, expected: /^tessera: WEB_CONCURRENCY must be a whole number from 1 to 64 or "auto"/ },
    { command: 'serve', file: 'JWKS_MAX_AGE=forever\n', expected: /^tessera: JWKS_MAX_AGE must be a whole number, got "forever"\n$/ },
    { command: 'migrate', env: { DATABASE_URL: 'mysql://root:db-secret@127.0.0.1/x', KEY_ENCRYPTION_KEY: kek }, expected: /^tessera: DATABASE_URL must be a postgres:\/\/ URL, got a mysql: URL\n$/ },
    { command: 'migrate', env: { DATABASE_URL: 'postgres://127.0.0.1/x' }, expected: /^tessera: KEY_ENCRYPTION_KEY is required when DATABASE_URL is set/ },
    { command: 'config', env: { KEY_ENCRYPTION_KEY: 'too-short' }, expected: /^tessera: KEY_ENCRYPTION_KEY must be 32 bytes encoded in base64/ },
    { command: 'config', env: { DATABASE_LISTEN_URL: 'postgres://u:db-secret@[bad' , ...pg }, expected: /^tessera: DATABASE_LISTEN_URL must be a postgres:\/\/ URL/ },
    { command: 'config', env: { ISSUER: 'https://auth.example.com/?tenant=1' }, expected: /^tessera: ISSUER must be an http\(s\) URL with no query or fragment/ },
    // The admin commands are HTTP clients, but the same environment would stop the server.
    { command: 'client list', env: { PORT: 'eighty' }, expected: /^tessera: PORT must be a whole number, got "eighty"\n$/ },
    { command: 'audit', env: { KEY_ENCRYPTION_KEY_PREVIOUS: 'too-short' }, expected: /^tessera: KEY_ENCRYPTION_KEY_PREVIOUS must be 32 bytes encoded in base64/ },
    { command: 'config', env: { KEY_ENCRYPTION_KEY: kek, KEY_ENCRYPTION_KEY_PREVIOUS: kek }, expected: /^tessera: KEY_ENCRYPTION_KEY_PREVIOUS is the same key as KEY_ENCRYPTION_KEY/ },
  ]
  for (const c of cases) {
    const dir = t.testdir(c.file === undefined ? {} : { '.env': c.file })
    const r = await tessera(c.command.split(' '), dir, c.env)
    t.equal(r.code, 1, `${c.command} ${JSON.stringify(c.env ?? c.file)}: exit 1`)
    t.match(r.stderr, c.expected, r.stderr.trim())
    t.equal(r.stderr.split('\n').length, 2, 'one line')
    t.ok(noStackTrace(r.stderr), 'no stack trace')
    t.notOk(r.stderr.includes('db-secret'), 'no password from a URL')
    t.equal(r.stdout, '')
  }

  // doctor reports it as its first check, in its own format, and exits 1.
  const doctor = await tessera(['doctor'], t.testdir({}), { TRUST_PROXY: 'everyone' })
  t.equal(doctor.code, 1)
  t.match(doctor.stdout, /^fail: config: TRUST_PROXY must list IP addresses or CIDR blocks separated by commas, got "everyone" — fix: /m)
  t.ok(noStackTrace(doctor.stdout + doctor.stderr))
})

t.test('.env also configures the admin commands (where the admin API is)', async (t) => {
  const dir = t.testdir({ '.env': 'TESSERA_ADMIN_URL=http://127.0.0.1:1\nTESSERA_ADMIN_CLIENT_ID=a\nTESSERA_ADMIN_CLIENT_SECRET=b\n' })
  const r = await tessera(['client', 'list'], dir)
  t.equal(r.code, 1)
  t.match(r.stderr, /^tessera: cannot reach http:\/\/127\.0\.0\.1:1\//, 'the URL from .env was used')
})

// Written here so that the file stays an example of the format as the tests above read it.
t.test('.env.example itself is a valid .env', async (t) => {
  const dir = t.testdir({})
  writeFileSync(join(dir, '.env'), readFileSync(join(packageRoot, '.env.example')))
  const r = await tessera(['config', '--json'], dir)
  t.equal(r.code, 0, r.stderr)
  t.equal(JSON.parse(r.stdout).variables.PORT.source, '.env')
})
