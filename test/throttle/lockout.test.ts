// Nobody can keep a user out (SECURITY.md): a network guessing a username is slowed on its own,
// the owner from any other network gets in at once with the right password, and only a spread
// of networks (LOGIN_USER_ADDRESSES) delays the username for everyone. The throttle table keeps
// usernames as an HMAC, never as typed.
import t from 'tap'
import { postFrom } from '../helpers/from.js'
import { TestClock, assertOAuthError, startTestServer } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(
  t,
  { LOGIN_FREE_FAILURES: '3', LOGIN_MAX_DELAY: '60', LOGIN_ADDRESS_FAILURES: '50', LOGIN_USER_ADDRESSES: '4', HASH_QUEUE: '100' },
  { clock },
)
const app = await srv.createClient({ grant_types: ['password'] })
const login = (address: string, username: string, password: string) =>
  postFrom(address, srv.url, '/token', { grant_type: 'password', username, password }, app.auth)

t.test('one network guessing at a username, each time its delay ends, never keeps the owner out', async (t) => {
  await srv.createUser('olga', 'olga password')
  const attacker = '127.6.0.2'
  let checked = 0
  let refused = 0
  // The attack of issue 15 (3): guess, and guess again the moment Retry-After says the delay is
  // over; each checked guess used to start the username's next delay, for everyone.
  for (let i = 0; i < 11; i++) {
    const guess = await login(attacker, 'olga', 'guess')
    if (guess.status === 429) {
      refused++
      clock.advance(Number(guess.headers.get('retry-after')))
    } else {
      t.equal(guess.status, 400, 'a guess that is let through is checked')
      checked++
    }
  }
  t.equal(checked, 3 + 4, 'the network checks its free failures, then one guess per doubling delay')
  t.equal(refused, 4)
  assertOAuthError(t, await login(attacker, 'olga', 'olga password'), 429, 'slow_down')
  // Right after a checked guess, with the guessing network's delay in force:
  t.equal((await login('127.6.1.2', 'olga', 'olga password')).status, 200, 'the owner, from another network, gets in at once')
  t.equal((await login('127.6.1.3', 'olga', 'olga password')).status, 200, 'and from any other')
  clock.advance(3600)
})

t.test('fewer networks than LOGIN_USER_ADDRESSES never delay the owner; that many delay every network', async (t) => {
  await srv.createUser('pavel', 'pavel password')
  const guessers = ['127.6.2.2', '127.6.2.3', '127.6.2.4', '127.6.2.5']
  for (const from of guessers.slice(0, 3)) for (let i = 0; i < 3; i++) t.equal((await login(from, 'pavel', 'guess')).status, 400)
  t.equal((await login('127.6.3.2', 'pavel', 'pavel password')).status, 200, 'three networks guessing: the owner gets in')
  t.equal((await login(guessers[3]!, 'pavel', 'guess')).status, 400, 'the fourth network is checked, and starts the delay')
  const delayed = await login('127.6.3.3', 'pavel', 'pavel password')
  assertOAuthError(t, delayed, 429, 'slow_down')
  t.equal(delayed.headers.get('retry-after'), '1', 'for a second at first')
  assertOAuthError(t, await login(guessers[0]!, 'pavel', 'guess'), 429, 'slow_down')
  clock.advance(1)
  t.equal((await login('127.6.3.3', 'pavel', 'pavel password')).status, 200, 'the owner once it is over')
  clock.advance(3600)
})

t.test('the throttle table keeps usernames as a keyed hash, never as typed', async (t) => {
  await login('127.6.4.2', 'Typed.Name@Example', 'guess')
  await login('127.6.4.3', 'typed.name@EXAMPLE', 'guess')
  const rows = await srv.tessera.db.selectFrom('throttle').select(['kind', 'key']).execute()
  const leaks = rows.filter((r) => r.key.toLowerCase().includes('typed') || r.key.toLowerCase().includes('example'))
  t.same(leaks, [], 'no key holds the username')
  const users = rows.filter((r) => r.kind === 'login_user')
  const usernameRows = users.filter((r) => rows.filter((p) => p.kind === 'login_pair' && p.key.startsWith(`${r.key} `)).length === 2)
  t.equal(usernameRows.length, 1, 'both spellings are one username, counted for two networks')
  t.equal(await srv.tessera.db.selectFrom('throttle').select('failures').where('key', '=', usernameRows[0]!.key).executeTakeFirstOrThrow().then((r) => r.failures), 2)
})
