// Password guessing, throttled per username and per network address (src/throttle/): counted
// before the password is checked, so a burst checks no more than the budget; refused attempts
// check nothing and look the same for every username; an attacker hammering one username from
// one address cannot keep its owner, elsewhere, out for longer than the (bounded) delay.
import t, { type Test } from 'tap'
import { postFrom } from '../helpers/from.js'
import { TestClock, assertOAuthError, startTestServer, type HttpResult } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(
  t,
  { LOGIN_FREE_FAILURES: '3', LOGIN_MAX_DELAY: '60', LOGIN_ADDRESS_FAILURES: '10', LOGIN_USER_ADDRESSES: '3', HASH_QUEUE: '100' },
  { clock },
)
const app = await srv.createClient({ grant_types: ['password'] })

let nextAddress = 10
/** A source address no other test has used. */
const freshAddress = () => `127.0.${Math.floor(nextAddress / 250)}.${(nextAddress++ % 250) + 2}`

const login = (address: string, username: string, password: string) =>
  postFrom(address, srv.url, '/token', { grant_type: 'password', username, password }, app.auth)

/** argon2 verifications so far, from the server's own metrics. */
async function passwordChecks(): Promise<number> {
  const text = (await srv.admin('GET', '/metrics')).text
  const m = /^tessera_password_hashes_total\{operation="verify"\} (\d+)/m.exec(text)
  return m === null ? 0 : Number(m[1])
}

function assertThrottled(t: Test, r: HttpResult) {
  assertOAuthError(t, r, 429, 'slow_down')
  t.ok(Number(r.headers.get('retry-after')) >= 1, 'Retry-After')
}

t.test('after the free failures a username waits a doubling delay from that address; success clears it', async (t) => {
  await srv.createUser('grace', 'grace password')
  const from = freshAddress()
  for (let i = 0; i < 2; i++) t.equal((await login(from, 'grace', 'guess')).body.error, 'invalid_grant')
  t.equal((await login(from, 'grace', 'grace password')).status, 200, 'failures within the budget do not block')

  for (let i = 0; i < 3; i++) t.equal((await login(from, 'Grace', 'guess')).body.error, 'invalid_grant', 'checked')
  const blocked = await login(from, 'grace', 'grace password')
  assertThrottled(t, blocked)
  t.equal(blocked.headers.get('retry-after'), '1', 'the first delay is one second')

  clock.advance(1)
  t.equal((await login(from, 'grace', 'grace password')).status, 200, 'let in once the delay has passed')
  t.equal((await login(from, 'grace', 'grace password')).status, 200, 'and the success cleared the count')
})

t.test('across addresses, the delay doubles and is capped at LOGIN_MAX_DELAY', async (t) => {
  await srv.createUser('hank', 'hank password')
  for (let i = 0; i < 3 + 8; i++) {
    await login(freshAddress(), 'hank', 'guess')
    clock.advance(60)
  }
  await login(freshAddress(), 'hank', 'guess')
  const r = await login(freshAddress(), 'hank', 'hank password')
  assertThrottled(t, r)
  t.equal(r.headers.get('retry-after'), '60', 'never longer than LOGIN_MAX_DELAY')
  clock.advance(59)
  assertThrottled(t, await login(freshAddress(), 'hank', 'hank password'))
  clock.advance(1)
  t.equal((await login(freshAddress(), 'hank', 'hank password')).status, 200)
})

t.test('a burst of concurrent wrong guesses checks no more passwords than the free budget', async (t) => {
  await srv.createUser('ivan', 'ivan password')
  const before = await passwordChecks()
  // From many addresses, so that the per-address budget is not what stops them.
  const answers = await Promise.all(Array.from({ length: 60 }, () => login(freshAddress(), 'ivan', 'guess')))
  const checked = (await passwordChecks()) - before
  t.ok(checked <= 3, `${checked} passwords checked of 60 guesses (free budget 3)`)
  t.equal(answers.filter((r) => r.status === 400).length, checked, 'each checked guess failed as a guess')
  t.equal(answers.filter((r) => r.status === 429).length, 60 - checked, 'every other guess was refused unchecked')
  clock.advance(60)
})

t.test('throttling is no oracle: an unknown username is refused the same way, and nothing is checked', async (t) => {
  await srv.createUser('judy', 'judy password')
  for (const name of ['judy', 'nobody-at-all']) for (let i = 0; i < 3; i++) await login(freshAddress(), name, 'guess')
  const before = await passwordChecks()
  const known = await login(freshAddress(), 'judy', 'guess')
  const unknown = await login(freshAddress(), 'nobody-at-all', 'guess')
  t.equal((await passwordChecks()) - before, 0, 'refused without hashing')
  t.equal(known.status, unknown.status)
  t.same(known.body, unknown.body, 'the same body')
  t.equal(known.headers.get('retry-after'), unknown.headers.get('retry-after'), 'the same Retry-After')
  clock.advance(60)
})

t.test('an address over its budget is refused for every username; other addresses are not', async (t) => {
  await srv.createUser('kate', 'kate password')
  const stuffer = freshAddress()
  // Credential stuffing: one guess each at many usernames, from one address.
  for (let i = 0; i < 10; i++) t.equal((await login(stuffer, `victim${i}`, 'guess')).status, 400)
  const refused = await login(stuffer, 'kate', 'kate password')
  assertThrottled(t, refused)
  t.ok(Number(refused.headers.get('retry-after')) > 60, 'for the rest of the window, not a second')
  t.equal((await login(freshAddress(), 'kate', 'kate password')).status, 200, 'another address logs in')
})

t.test('many people logging in at once from one address (a NAT) are not shut out for the window', async (t) => {
  const office = freshAddress()
  const people = Array.from({ length: 16 }, (_, i) => `office${i}`)
  for (const name of people) await srv.createUser(name, `${name} password`)
  // More correct logins in flight at once than the address's budget (10): each is counted until
  // it succeeds, so some of the burst may be refused, but only while the others are in flight.
  const burst = await Promise.all(people.map((name) => login(office, name, `${name} password`)))
  t.ok(burst.every((r) => r.status === 200 || r.status === 429), 'each let in or refused for now')
  t.ok(burst.filter((r) => r.status === 200).length >= 10, 'as many let in as the budget allows')
  for (const name of people.slice(0, 3)) {
    t.equal((await login(office, name, `${name} password`)).status, 200, 'once they succeeded, the address is let in again')
  }
})

t.test('an attacker hammering a username from one address cannot keep its owner out', async (t) => {
  await srv.createUser('liam', 'liam password')
  const attacker = freshAddress()
  const owner = freshAddress()
  for (let round = 0; round < 4; round++) {
    await Promise.all(Array.from({ length: 15 }, () => login(attacker, 'liam', 'guess')))
  }
  // The attacker's address spent its budget; its guesses no longer reach the username.
  assertThrottled(t, await login(attacker, 'liam', 'guess'))
  clock.advance(60) // the longest delay the username can have
  await Promise.all(Array.from({ length: 15 }, () => login(attacker, 'liam', 'guess')))
  t.equal((await login(owner, 'liam', 'liam password')).status, 200, 'the owner gets in once the delay has passed')
})

t.test('an administrator sees and clears a lockout (GET and DELETE /admin/users/:id/lockout)', async (t) => {
  const id = await srv.createUser('mona', 'mona password')
  const clean = await srv.admin('GET', `/admin/users/${id}/lockout`)
  t.equal(clean.status, 200)
  t.match(clean.body, { user_id: id, username: 'mona', failures: 0, locked: false, locked_until: null })

  for (let i = 0; i < 3; i++) await login(freshAddress(), 'mona', 'guess')
  const locked = await srv.admin('GET', `/admin/users/${id}/lockout`)
  t.match(locked.body, { failures: 3, locked: true })
  t.ok(Date.parse(locked.body.locked_until) > clock.now().getTime(), 'locked_until is ahead')
  assertThrottled(t, await login(freshAddress(), 'mona', 'mona password'))

  t.equal((await srv.admin('DELETE', `/admin/users/${id}/lockout`)).status, 204)
  t.match((await srv.admin('GET', `/admin/users/${id}/lockout`)).body, { failures: 0, locked: false })
  t.equal((await login(freshAddress(), 'mona', 'mona password')).status, 200, 'the user logs in at once')

  assertOAuthError(t, await srv.admin('GET', '/admin/users/00000000-0000-4000-8000-000000000000/lockout'), 404, 'not_found')
  assertOAuthError(t, await srv.admin('DELETE', '/admin/users/not-a-uuid/lockout'), 404, 'not_found')
})

t.test('a full hashing queue answers 503 at once, and counts nothing against anyone', async (t) => {
  const tight = await startTestServer(t, { HASH_CONCURRENCY: '1', HASH_QUEUE: '1', LOGIN_FREE_FAILURES: '3' })
  const client = await tight.createClient({ grant_types: ['password'] })
  await tight.createUser('nina', 'nina password')
  const answers = await Promise.all(
    Array.from({ length: 12 }, (_, i) => postFrom(`127.1.0.${i + 2}`, tight.url, '/token', { grant_type: 'password', username: 'nina', password: 'nina password' }, client.auth)),
  )
  const unavailable = answers.filter((r) => r.status === 503)
  t.ok(unavailable.length > 0, `${unavailable.length} of 12 answered 503`)
  t.ok(answers.every((r) => r.status === 200 || r.status === 503), 'the rest logged in')
  for (const r of unavailable) {
    assertOAuthError(t, r, 503, 'temporarily_unavailable')
    t.ok(Number(r.headers.get('retry-after')) >= 1, 'with Retry-After')
  }
  const lockout = await tight.admin('GET', `/admin/users/${(await tight.admin('GET', '/admin/users?username=nina')).body.users[0].id}/lockout`)
  t.equal(lockout.body.failures, 0, 'no refused request counted as a failure')
})
