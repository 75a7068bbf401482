// The admin commands as an administrator runs them: the built CLI as a child process against a
// real server, checked by what it prints, its exit code, and what changed on the server.
import t from 'tap'
import { createServer } from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, type CliResult } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, decodeJwt, startTestServer } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient({ grant_types: ['password', 'refresh_token'], scopes: ['read', 'write'] })

interface CliOptions {
  /** What stdin holds; empty when not given. */
  input?: string
  env?: Record<string, string>
  /** Pass the bootstrap admin's credentials in the environment (default true). */
  credentials?: boolean
  cwd?: string
}

/** `tessera <args…>` with a clean environment, and the admin's credentials unless told otherwise. */
function cli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return runCli(args, {
    env: {
      ...(opts.credentials !== false && { TESSERA_ADMIN_CLIENT_ID: ADMIN_ID, TESSERA_ADMIN_CLIENT_SECRET: ADMIN_SECRET }),
      ...opts.env,
    },
    ...(opts.cwd !== undefined && { cwd: opts.cwd }),
    ...(opts.input !== undefined && { input: opts.input }),
  })
}

/** An admin command against this test's server. */
const admin = (args: string[], opts: CliOptions = {}) => cli([...args, '--admin-url', srv.adminUrl], opts)

const login = (username: string, password: string) => srv.post('/token', { grant_type: 'password', username, password }, app.auth)
const clientToken = (id: string, secret: string) => srv.post('/token', { grant_type: 'client_credentials' }, [id, secret])
const noStackTrace = (stderr: string) => !/\n\s+at /.test(stderr)

t.test('client create prints the secret once, with a warning, and the client works', async (t) => {
  const r = await admin(['client', 'create', '--name', 'billing job', '--grant-types', 'client_credentials', '--scopes', 'read, write'])
  t.equal(r.code, 0, r.stderr)
  const id = /^client_id:\s+(\S+)$/m.exec(r.stdout)?.[1]
  const secret = /^client_secret:\s+(\S+)$/m.exec(r.stdout)?.[1]
  t.ok(id && secret, 'id and secret printed')
  t.match(r.stdout, /^name:\s+billing job$/m)
  t.match(r.stderr, /shown only now/)

  const token = await clientToken(id!, secret!)
  t.equal(token.status, 200)
  t.equal(token.body.scope, 'read write')

  const shown = await admin(['client', 'show', id!, '--json'])
  t.equal(shown.code, 0)
  const body = JSON.parse(shown.stdout)
  t.equal(body.client_id, id)
  t.same(body.grant_types, ['client_credentials'])
  t.notOk('client_secret' in body, 'show never prints a secret')

  const listed = await admin(['client', 'list'])
  t.equal(listed.code, 0)
  t.match(listed.stdout, /^CLIENT_ID\s+NAME/)
  t.match(listed.stdout, new RegExp(`^${id}\\s+billing job\\s+client_credentials\\s+read,write`, 'm'))
  t.match(listed.stdout, new RegExp(`^${ADMIN_ID}\\s`, 'm'))
})

t.test('client create --json passes every setting, and --token-url skips discovery', async (t) => {
  const r = await cli([
    'client', 'create', '--json',
    '--name', 'api caller',
    '--grant-types', 'client_credentials',
    '--scopes', 'read',
    '--audiences', 'https://api.example,https://billing.example',
    '--resource-identifiers', 'https://rs.example',
    '--access-token-ttl', '60',
    '--refresh-token-ttl', '3600',
    '--admin-url', srv.adminUrl,
    '--token-url', `${srv.url}/token`,
  ])
  t.equal(r.code, 0, r.stderr)
  const body = JSON.parse(r.stdout)
  t.same(body.audiences, ['https://api.example', 'https://billing.example'])
  t.same(body.resource_identifiers, ['https://rs.example'])
  t.equal(body.access_token_ttl, 60)
  t.equal(body.refresh_token_ttl, 3600)
  t.type(body.client_secret, 'string')
  t.match(r.stderr, /shown only now/, 'the warning goes to stderr, leaving stdout pure JSON')

  const token = await clientToken(body.client_id, body.client_secret)
  t.equal(token.body.expires_in, 60)
  t.equal(decodeJwt(token.body.access_token).payload.aud, 'https://api.example')
})

t.test('client rotate-secret: the old secret stops at once, or after the grace period', async (t) => {
  const c = await srv.createClient({ grant_types: ['client_credentials'] })
  const r = await admin(['client', 'rotate-secret', c.id])
  t.equal(r.code, 0, r.stderr)
  const secret = /^client_secret:\s+(\S+)$/m.exec(r.stdout)?.[1]
  t.ok(secret)
  t.match(r.stderr, /shown only now/)
  t.match(r.stderr, /old secret no longer works/)
  t.equal((await clientToken(c.id, c.secret)).status, 401, 'old secret refused')
  t.equal((await clientToken(c.id, secret!)).status, 200, 'new secret works')

  const graced = await admin(['client', 'rotate-secret', c.id, '--grace-seconds', '300', '--json'])
  t.equal(graced.code, 0, graced.stderr)
  const next = JSON.parse(graced.stdout).client_secret as string
  t.equal((await clientToken(c.id, secret!)).status, 200, 'old secret works during the grace period')
  t.equal((await clientToken(c.id, next)).status, 200)
})

t.test('client revoke-tokens and delete', async (t) => {
  const c = await srv.createClient({ grant_types: ['client_credentials'] })
  const token = (await clientToken(c.id, c.secret)).body.access_token as string
  const revoked = await admin(['client', 'revoke-tokens', c.id])
  t.equal(revoked.code, 0, revoked.stderr)
  t.same((await srv.post('/introspect', { token }, c.auth)).body, { active: false })

  const deleted = await admin(['client', 'delete', c.id])
  t.equal(deleted.code, 0, deleted.stderr)
  t.match(deleted.stdout, `deleted client ${c.id}`)
  const gone = await admin(['client', 'show', c.id])
  t.equal(gone.code, 1)
  t.match(gone.stderr, /^tessera: not_found: client not found\n$/)
  t.equal(gone.stdout, '')
})

t.test('user create reads the password from stdin, and the user can log in', async (t) => {
  const r = await admin(['user', 'create', 'Bob', '--scopes', 'read'], { input: 'hunter2 with spaces\n' })
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^username:\s+Bob$/m)
  t.match(r.stdout, /^status:\s+enabled$/m)
  const id = /^id:\s+(\S+)$/m.exec(r.stdout)?.[1]
  const token = await login('bob', 'hunter2 with spaces')
  t.equal(token.status, 200, 'the trailing newline is not part of the password')
  t.equal(token.body.scope, 'read', '--scopes narrows the user')
  t.equal(decodeJwt(token.body.access_token).payload.sub, id)

  const duplicate = await admin(['user', 'create', 'BOB'], { input: 'another password\n' })
  t.equal(duplicate.code, 1)
  t.match(duplicate.stderr, /^tessera: conflict/)

  const noPassword = await admin(['user', 'create', 'carol'])
  t.equal(noPassword.code, 1, 'empty stdin is no password')
  t.match(noPassword.stderr, /no password/)
})

t.test('user disable, enable (by username or id), set-password, revoke-tokens, delete', async (t) => {
  const id = await srv.createUser('dave', 'first password')

  const disabled = await admin(['user', 'disable', 'DAVE'])
  t.equal(disabled.code, 0, disabled.stderr)
  t.equal(disabled.stdout, `disabled user dave (${id})\n`)
  const refused = await login('dave', 'first password')
  t.equal(refused.status, 400)
  t.equal(refused.body.error, 'invalid_grant')

  const enabled = await admin(['user', 'enable', id, '--json'])
  t.equal(enabled.code, 0, enabled.stderr)
  t.equal(JSON.parse(enabled.stdout).disabled, false)
  t.equal((await login('dave', 'first password')).status, 200)

  const changed = await admin(['user', 'set-password', 'dave'], { input: 'second password\r\n' })
  t.equal(changed.code, 0, changed.stderr)
  t.equal((await login('dave', 'first password')).status, 400, 'the old password is refused')
  t.equal((await login('dave', 'second password')).status, 200, 'the new one works (CRLF stripped)')

  const listed = await admin(['user', 'list', '--json'])
  t.equal(listed.code, 0)
  t.ok(JSON.parse(listed.stdout).users.some((u: { id: string }) => u.id === id))

  const refresh = (await login('dave', 'second password')).body.refresh_token as string
  t.same((await srv.post('/introspect', { token: refresh }, app.auth)).body.active, true)
  const revoked = await admin(['user', 'revoke-tokens', 'dave'])
  t.equal(revoked.code, 0, revoked.stderr)
  t.same((await srv.post('/introspect', { token: refresh }, app.auth)).body, { active: false })

  const deleted = await admin(['user', 'delete', 'dave'])
  t.equal(deleted.code, 0, deleted.stderr)
  t.equal((await login('dave', 'second password')).status, 400)
  const gone = await admin(['user', 'show', id])
  t.equal(gone.code, 1)
  t.match(gone.stderr, /not_found/)
})

t.test('user unlock clears failed logins, so the user logs in at once', async (t) => {
  await srv.createUser('erin', 'erin password')
  for (let i = 0; i < 5; i++) await login('erin', 'a guess')
  t.equal((await login('erin', 'erin password')).status, 429, 'delayed after the free failures')
  const unlocked = await admin(['user', 'unlock', 'erin'])
  t.equal(unlocked.code, 0, unlocked.stderr)
  t.match(unlocked.stdout, /^cleared the failed logins of user erin \(/)
  t.equal((await login('erin', 'erin password')).status, 200, 'logs in at once')
})

t.test('keys list and rotate; rotate --immediate takes the old keys out of /jwks', async (t) => {
  const before = await admin(['keys', 'list', '--json'])
  t.equal(before.code, 0, before.stderr)
  const keys = JSON.parse(before.stdout).keys as { kid: string; state: string }[]
  const active = keys.find((k) => k.state === 'active')
  t.ok(active)

  const rotated = await admin(['keys', 'rotate'])
  t.equal(rotated.code, 0, rotated.stderr)
  const kid = /^kid:\s+(\S+)$/m.exec(rotated.stdout)?.[1]
  t.match(rotated.stdout, /^state:\s+next$/m, 'published before it signs')
  const listed = await admin(['keys', 'list'])
  t.match(listed.stdout, /^KID\s+ALG\s+STATE/)
  t.match(listed.stdout, new RegExp(`^${kid}\\s+ES256\\s+next`, 'm'))
  t.match(listed.stdout, new RegExp(`^${active!.kid}\\s+ES256\\s+active`, 'm'))
  t.ok((await srv.get('/jwks')).body.keys.some((k: { kid: string }) => k.kid === kid), 'the new key is published')

  const immediate = await admin(['keys', 'rotate', '--immediate', '--json'])
  t.equal(immediate.code, 0, immediate.stderr)
  const emergency = JSON.parse(immediate.stdout)
  t.equal(emergency.state, 'active')
  t.same((await srv.get('/jwks')).body.keys.map((k: { kid: string }) => k.kid), [emergency.kid])
})

t.test('credentials from DATA_DIR/admin-client.json', async (t) => {
  const dir = t.testdir({})
  const missing = await admin(['client', 'list'], { credentials: false, env: { DATA_DIR: dir } })
  t.equal(missing.code, 1)
  t.match(missing.stderr, /no admin credentials.*TESSERA_ADMIN_CLIENT_ID/)

  writeFileSync(join(dir, 'admin-client.json'), JSON.stringify({ client_id: ADMIN_ID, client_secret: ADMIN_SECRET }))
  const fromFile = await admin(['client', 'list', '--json'], { credentials: false, env: { DATA_DIR: dir } })
  t.equal(fromFile.code, 0, fromFile.stderr)
  t.ok(JSON.parse(fromFile.stdout).clients.some((c: { client_id: string }) => c.client_id === ADMIN_ID))
})

t.test('errors: bad credentials, API refusals and an unreachable server exit 1 with one line', async (t) => {
  const bad = await admin(['client', 'list'], { env: { TESSERA_ADMIN_CLIENT_SECRET: 'not-the-secret' } })
  t.equal(bad.code, 1)
  t.match(bad.stderr, /cannot get an admin token.*invalid_client: client authentication failed.*TESSERA_ADMIN_CLIENT_ID/)
  t.ok(noStackTrace(bad.stderr))

  const invalid = await admin(['client', 'create', '--name', 'x', '--grant-types', 'implicit'])
  t.equal(invalid.code, 1)
  t.match(invalid.stderr, /^tessera: invalid_request: /)
  t.ok(noStackTrace(invalid.stderr))

  // A port that was free a moment ago: nothing listens there.
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })
  const down = await cli(['keys', 'list', '--admin-url', `http://127.0.0.1:${port}`])
  t.equal(down.code, 1)
  t.equal(
    down.stderr,
    `tessera: cannot reach http://127.0.0.1:${port}/.well-known/oauth-authorization-server: ECONNREFUSED — fix: start \`tessera serve\` ` +
      '(its admin API listens on ADMIN_HOST:ADMIN_PORT, default 127.0.0.1:8081), or pass --admin-url (or set TESSERA_ADMIN_URL) ' +
      'to the admin URL of a running server\n',
    'what to do, as doctor says it',
  )
  t.ok(noStackTrace(down.stderr))
})

t.test('usage: help exits 0, a wrong command line exits 2 with the usage', async (t) => {
  // None of these reaches the server, so they run side by side.
  const [help, unknown, unknownSub, passwordFlag, missingFlag, badTtl] = await Promise.all([
    cli(['client', '--help'], { credentials: false }),
    cli(['frobnicate'], { credentials: false }),
    cli(['user', 'promote', 'x'], { credentials: false }),
    cli(['user', 'create', 'eve', '--password', 'secret'], { credentials: false }),
    cli(['client', 'create', '--name', 'x'], { credentials: false }),
    cli(['client', 'create', '--name', 'x', '--grant-types', 'password', '--access-token-ttl', 'soon'], { credentials: false }),
  ])
  t.equal(help.code, 0)
  t.match(help.stdout, /usage: tessera client <command>/)
  t.match(help.stdout, /rotate-secret CLIENT_ID \[--grace-seconds N\]/)

  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command "frobnicate"/)

  t.equal(unknownSub.code, 2)
  t.match(unknownSub.stderr, /usage: tessera user <command>/)

  t.equal(passwordFlag.code, 2, 'never a password on the command line')
  t.match(passwordFlag.stderr, /--password/)
  t.match(passwordFlag.stderr, /usage: tessera user create USERNAME/)

  t.equal(missingFlag.code, 2)
  t.match(missingFlag.stderr, /--grant-types is required/)

  t.equal(badTtl.code, 2)
  t.match(badTtl.stderr, /--access-token-ttl must be a whole number/)
})

t.test('client create --auth-method: private_key_jwt with --jwks, none; neither gets a secret', async (t) => {
  const { generateKeyPair, exportJWK } = await import('jose')
  const { publicKey } = await generateKeyPair('ES256')
  const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'jwks.json')
  writeFileSync(file, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1' }] }))
  const keyed = await admin(['client', 'create', '--name', 'keyed', '--grant-types', 'client_credentials', '--auth-method', 'private_key_jwt', '--jwks', file, '--dpop-bound'])
  t.equal(keyed.code, 0, keyed.stderr)
  t.notMatch(keyed.stdout, /client_secret:/)
  t.match(keyed.stdout, /^token_endpoint_auth_method:\s+private_key_jwt$/m)
  t.match(keyed.stdout, /^jwks:\s+k1$/m)
  t.match(keyed.stdout, /^token_endpoint_auth_signing_alg:\s+ES256$/m)
  t.match(keyed.stdout, /^dpop_bound_access_tokens:\s+yes$/m)
  t.match(keyed.stderr, /no secret/)
  const pub = await admin(['client', 'create', '--name', 'app', '--grant-types', 'password,refresh_token', '--auth-method', 'none', '--json'])
  t.equal(pub.code, 0, pub.stderr)
  const body = JSON.parse(pub.stdout)
  t.equal(body.token_endpoint_auth_method, 'none')
  t.notOk('client_secret' in body)
  const bad = await admin(['client', 'create', '--name', 'x', '--grant-types', 'client_credentials', '--auth-method', 'none'])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /client_credentials/)
})
