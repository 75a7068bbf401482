import t from 'tap'
import { TestClock, startTestServer } from '../helpers/server.js'

const clock = new TestClock()
const srv = await startTestServer(t, { LOGIN_FREE_FAILURES: '3', LOGIN_MAX_DELAY: '60' }, { clock })
const app = await srv.createClient({ grant_types: ['password'] })
await srv.createUser('grace', 'grace password')

const login = (username: string, password: string) =>
  srv.post('/token', { grant_type: 'password', username, password }, app.auth)

t.test('after a few failures a username waits a doubling delay; success clears it', async (t) => {
  for (let i = 0; i < 3; i++) t.equal((await login('grace', 'guess')).body.error, 'invalid_grant')
  t.equal((await login('grace', 'grace password')).status, 200, 'free failures do not block')

  for (let i = 0; i < 4; i++) await login('Grace', 'guess')
  const blocked = await login('grace', 'grace password')
  t.equal(blocked.status, 400, 'blocked even with the right password')
  t.equal(blocked.body.error, 'invalid_grant')
  t.match(blocked.body.error_description, /try again later/)
  t.equal(blocked.headers.get('cache-control'), 'no-store')

  clock.advance(1)
  t.equal((await login('grace', 'grace password')).status, 200, 'the first delay is one second')
  t.equal((await login('grace', 'grace password')).status, 200, 'and success cleared the count')
})

t.test('the delay doubles and is capped', async (t) => {
  for (let i = 0; i < 3 + 10; i++) {
    await login('grace', 'guess')
    clock.advance(60) // every attempt is checked, so every one counts
  }
  await login('grace', 'guess')
  clock.advance(59)
  t.equal((await login('grace', 'grace password')).status, 400, 'still blocked just before the cap')
  clock.advance(1)
  t.equal((await login('grace', 'grace password')).status, 200, 'never longer than LOGIN_MAX_DELAY')
})

t.test('unknown usernames are throttled the same way, so throttling reveals nothing', async (t) => {
  for (let i = 0; i < 4; i++) await login('nobody', 'guess')
  const r = await login('nobody', 'guess')
  t.match(r.body.error_description, /try again later/)
})

t.test('attempts refused while blocked do not lengthen the block', async (t) => {
  for (let i = 0; i < 4; i++) await login('grace', 'guess')
  for (let i = 0; i < 20; i++) await login('grace', 'guess')
  clock.advance(1)
  t.equal((await login('grace', 'grace password')).status, 200)
})
