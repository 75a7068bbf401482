// The security events of the token endpoint: logins that succeed, fail and are throttled, and
// client authentication that fails or is throttled, each with the address it came from.
import t from 'tap'
import { postFrom } from '../helpers/from.js'
import { startTestServer } from '../helpers/server.js'
import { eventually } from './support.js'

const srv = await startTestServer(t, { LOGIN_FREE_FAILURES: '2', LOGIN_USER_ADDRESSES: '2', CLIENT_AUTH_FAILURES: '2' })
const app = await srv.createClient({ grant_types: ['password', 'client_credentials'] })
const userId = await srv.createUser('rosa', 'rosa password')
const login = (address: string, username: string, password: string) =>
  postFrom(address, srv.url, '/token', { grant_type: 'password', username, password }, app.auth)

t.test('a login that succeeds, fails or is throttled is on record with its address', async (t) => {
  t.equal((await login('127.5.0.2', 'rosa', 'rosa password')).status, 200)
  t.equal((await login('127.5.0.3', 'rosa', 'wrong')).status, 400)
  t.equal((await login('127.5.0.4', 'nobody', 'wrong')).status, 400)
  t.equal((await login('127.5.0.5', 'rosa', 'wrong')).status, 400)
  t.equal((await login('127.5.0.6', 'rosa', 'rosa password')).status, 429)

  const [succeeded] = await eventually(srv, { type: 'login.succeeded', user: userId }, (e) => e.length >= 1)
  t.match(succeeded, { address: '127.5.0.2', client_id: app.id, user_id: userId, username: 'rosa' })
  const failed = await eventually(srv, { type: 'login.failed' }, (e) => e.length >= 3)
  t.match(failed.find((e) => e.address === '127.5.0.3'), { user_id: userId, details: { reason: 'invalid_password' } })
  t.match(failed.find((e) => e.address === '127.5.0.4'), { user_id: null, username: null, details: { reason: 'unknown_user' } })
  const [throttled] = await eventually(srv, { type: 'login.throttled' }, (e) => e.length >= 1)
  t.match(throttled, { address: '127.5.0.6', client_id: app.id, details: { by: 'username' } })
  t.ok(Date.parse(throttled.details.blocked_until) > Date.parse(throttled.at), 'until when')
})

t.test('a failed or throttled client authentication is on record, never with the secret', async (t) => {
  for (let i = 0; i < 2; i++) await postFrom('127.5.1.2', srv.url, '/token', { grant_type: 'client_credentials' }, [app.id, 'not-the-secret'])
  const failed = await eventually(srv, { type: 'client.authentication_failed', client: app.id }, (e) => e.length >= 2)
  t.match(failed[0], { address: '127.5.1.2', client_id: app.id, details: { method: 'client_secret_basic', reason: 'invalid_credentials' } })
  const [throttled] = await eventually(srv, { type: 'client.throttled', client: app.id }, (e) => e.length >= 1)
  t.match(throttled, { address: '127.5.1.2', details: { by: 'client' } })
  t.notOk(JSON.stringify([...failed, throttled]).includes('not-the-secret'))
})
