// New passwords (NIST SP 800-63B §3.1.1.2), through the admin API and the CLI: 8 to 256
// characters counted as code points after NFC, not the username, not one of the 10,000 most
// common. Each refusal is 400 invalid_request saying which rule failed, never the password.
import t, { type Test } from 'tap'
import { runCli } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, assertOAuthError, startTestServer, type HttpResult } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient({ grant_types: ['password'] })

const login = (username: string, password: string) => srv.post('/token', { grant_type: 'password', username, password }, app.auth)
const create = (username: string, password: string) => srv.admin('POST', '/admin/users', { username, password })
const setPassword = (id: string, password: string) => srv.admin('POST', `/admin/users/${id}/password`, { password })

function refused(t: Test, r: HttpResult, rule: RegExp, password: string): void {
  assertOAuthError(t, r, 400, 'invalid_request')
  t.match(r.body.error_description, rule)
  t.notOk(r.text.includes(password), 'the password is not echoed')
}

const TOO_SHORT = /password is too short: it must have at least 8 characters/
const TOO_LONG = /password is too long: it may have at most 256 characters/
const IS_USERNAME = /password must not be the username/
const COMMON = /password is one of the 10,000 most common passwords/

async function exists(username: string): Promise<boolean> {
  return (await srv.admin('GET', `/admin/users?username=${encodeURIComponent(username)}`)).body.users.length > 0
}

t.test('at least 8 characters, counted as code points after NFC', async (t) => {
  refused(t, await create('ann', 'seven c'), TOO_SHORT, 'seven c')
  refused(t, await create('ann', ''), TOO_SHORT, 'x')
  // Seven emoji: 14 UTF-16 code units, but 7 characters.
  refused(t, await create('ann', '\u{1f511}'.repeat(7)), TOO_SHORT, '\u{1f511}')
  // Four é typed as e + combining accent: 8 code points as sent, 4 characters after NFC.
  refused(t, await create('ann', 'e\u0301'.repeat(4)), TOO_SHORT, 'e\u0301')
  t.notOk(await exists('ann'), 'nothing was written')

  t.equal((await create('ann', 'eight ch')).status, 201)
  t.equal((await login('ann', 'eight ch')).status, 200)
  t.equal((await create('bea', '\u{1f511}'.repeat(8))).status, 201, 'eight emoji are eight characters')
  t.equal((await login('bea', '\u{1f511}'.repeat(8))).status, 200)
})

t.test('at most 256 characters; every password that can be set can be used at the password grant', async (t) => {
  refused(t, await create('cat', 'a'.repeat(257)), TOO_LONG, 'a'.repeat(257))
  refused(t, await create('cat', 'x'.repeat(5000)), TOO_LONG, 'x'.repeat(5000))
  t.notOk(await exists('cat'))
  // The longest in bytes: 256 four-byte characters are the 1 KiB the password grant accepts.
  const longest = '\u{1f511}'.repeat(256)
  t.equal((await create('cat', longest)).status, 201)
  t.equal((await login('cat', longest)).status, 200)
  t.equal((await create('cal', 'b'.repeat(256))).status, 201)
  t.equal((await login('cal', 'b'.repeat(256))).status, 200)
  // 200 Hangul syllables sent decomposed: 200 characters after NFC, but 1800 bytes as sent, which
  // the password grant would refuse; so it cannot be set either.
  const decomposed = '\u1112\u1161\u11ab'.repeat(200)
  t.equal([...decomposed.normalize('NFC')].length, 200)
  refused(t, await create('cat2', decomposed), /password is too long \(at most 1024 bytes\)/, decomposed)
  t.equal((await create('cat2', decomposed.normalize('NFC'))).status, 201, 'the same password sent composed is 600 bytes')
})

t.test('not the username, compared as usernames are (case-insensitively, after NFC)', async (t) => {
  refused(t, await create('dominique', 'dominique'), IS_USERNAME, 'dominique')
  refused(t, await create('Dominique', 'DOMINIQUE'), IS_USERNAME, 'DOMINIQUE')
  refused(t, await create('Zoë Ellison', 'zoe\u0308 ellison'), IS_USERNAME, 'ellison')
  t.notOk(await exists('dominique'))
  t.equal((await create('dominique', 'dominique!')).status, 201, 'containing the username is allowed')
})

t.test('not one of the 10,000 most common passwords, in any case', async (t) => {
  for (const common of ['Password', '12345678', 'iloveyou', 'qwertyuiop', 'PASSWORD1', 'Sunshine', 'trustno1', '11111111']) {
    refused(t, await create('eve', common), COMMON, common)
  }
  t.notOk(await exists('eve'))
  t.equal((await create('eve', 'correct horse battery staple')).status, 201)
})

t.test("a new password follows the same rules, against the user's own username", async (t) => {
  const id = await srv.createUser('Frieda-Maria', 'frieda first password')
  refused(t, await setPassword(id, 'tiny'), TOO_SHORT, 'tiny')
  refused(t, await setPassword(id, 'c'.repeat(257)), TOO_LONG, 'c'.repeat(257))
  refused(t, await setPassword(id, 'FRIEDA-MARIA'), IS_USERNAME, 'FRIEDA-MARIA')
  refused(t, await setPassword(id, 'baseball'), COMMON, 'baseball')
  t.equal((await login('frieda-maria', 'frieda first password')).status, 200, 'the old password still works')
  t.equal((await setPassword(id, 'frieda second password')).status, 204)
  t.equal((await login('frieda-maria', 'frieda second password')).status, 200)
  // An unknown user is not found, whatever the password.
  assertOAuthError(t, await setPassword('00000000-0000-4000-8000-000000000000', 'x'), 404, 'not_found')
})

/** `tessera <args…> --admin-url …` with the password on stdin. */
const cli = (args: string[], input: string) =>
  runCli([...args, '--admin-url', srv.adminUrl], { env: { TESSERA_ADMIN_CLIENT_ID: ADMIN_ID, TESSERA_ADMIN_CLIENT_SECRET: ADMIN_SECRET }, input })

t.test('the CLI reports which rule failed, and creates or changes nothing', async (t) => {
  for (const [username, password, rule] of [
    ['gordon', 'tiny', TOO_SHORT],
    ['gordon', 'q'.repeat(300), TOO_LONG],
    ['Gordon-Freeman', 'gordon-freeman', IS_USERNAME],
    ['gordon', 'football', COMMON],
  ] as const) {
    const r = await cli(['user', 'create', username], `${password}\n`)
    t.equal(r.code, 1, r.stderr)
    t.match(r.stderr, rule)
    t.notOk(r.stderr.includes(password), 'the password is not echoed')
  }
  t.notOk(await exists('gordon'))
  t.notOk(await exists('gordon-freeman'))

  const made = await cli(['user', 'create', 'gordon'], 'crowbar and a hazard suit\n')
  t.equal(made.code, 0, made.stderr)
  for (const [password, rule] of [
    ['letmein1', COMMON],
    ['GORDON', TOO_SHORT],
    ['Gordon', TOO_SHORT],
  ] as const) {
    const r = await cli(['user', 'set-password', 'gordon'], `${password}\n`)
    t.equal(r.code, 1, r.stderr)
    t.match(r.stderr, rule)
  }
  t.equal((await login('gordon', 'crowbar and a hazard suit')).status, 200, 'unchanged by the refused ones')
  const changed = await cli(['user', 'set-password', 'gordon'], 'a resonance cascade\n')
  t.equal(changed.code, 0, changed.stderr)
  t.equal((await login('gordon', 'a resonance cascade')).status, 200)
})
