// Per-address budgets count an IPv6 client by its /64 (THROTTLE_IPV6_PREFIX: /56, /48, ...), as
// one host is handed a whole /64: every address in it shares one budget and one row of the
// throttle table. Played through a trusted proxy (TRUST_PROXY) naming the client in X-Forwarded-For.
import t from 'tap'
import { postFrom } from '../helpers/from.js'
import { assertOAuthError, startTestServer, type TestServer } from '../helpers/server.js'

const PROXY = '127.7.0.2'
const cc = { grant_type: 'client_credentials' }
const settings = { CLIENT_AUTH_ADDRESS_FAILURES: '3', LOGIN_ADDRESS_FAILURES: '3', LOGIN_FREE_FAILURES: '100', TRUST_PROXY: `${PROXY}/32` }

const viaProxy = (srv: TestServer, client: string, form: Record<string, string>, auth: [string, string]) =>
  postFrom(PROXY, srv.url, '/token', form, auth, { 'x-forwarded-for': client })

const rows = (srv: TestServer, kind: string) =>
  srv.tessera.db.selectFrom('throttle').select(['key', 'failures']).where('kind', '=', kind).execute()

t.test('by default a /64 is one client: its failures share one budget and one row', async (t) => {
  const srv = await startTestServer(t, settings)
  const svc = await srv.createClient({ grant_types: ['client_credentials', 'password'] })
  // Failed client authentications from three addresses of one /64, spelled three ways: the third
  // uses the budget up, and is answered 429 like everything from the /64 after it.
  const spellings = ['2001:db8:1:2::1', '2001:0db8:0001:0002:0000:0000:0000:0002', '2001:db8:1:2:ffff:ffff:ffff:ffff']
  for (const from of spellings.slice(0, 2)) assertOAuthError(t, await viaProxy(srv, from, cc, [svc.id, 'wrong']), 401, 'invalid_client')
  assertOAuthError(t, await viaProxy(srv, spellings[2]!, cc, [svc.id, 'wrong']), 429, 'slow_down')
  assertOAuthError(t, await viaProxy(srv, '2001:db8:1:2:abcd::99', cc, svc.auth), 429, 'slow_down')
  t.equal((await viaProxy(srv, '2001:db8:1:3::1', cc, svc.auth)).status, 200, 'the next /64 is another client')
  t.same(await rows(srv, 'client_address'), [{ key: '2001:db8:1:2::/64', failures: 3 }], 'one row for the /64')

  // Password guessing, across usernames, likewise.
  const password = (username: string) => ({ grant_type: 'password', username, password: 'guess' })
  for (let i = 0; i < 3; i++) t.equal((await viaProxy(srv, `2001:db8:9:9::${i + 1}`, password(`someone${i}`), svc.auth)).status, 400, 'checked')
  assertOAuthError(t, await viaProxy(srv, '2001:db8:9:9::4', password('someone3'), svc.auth), 429, 'slow_down')
  t.equal((await viaProxy(srv, '2001:db8:9:a::1', password('someone3'), svc.auth)).status, 400, 'another /64 is checked')
  t.same((await rows(srv, 'login_address')).map((r) => r.key).sort(), ['2001:db8:9:9::/64', '2001:db8:9:a::/64'])
})

t.test('THROTTLE_IPV6_PREFIX=48 counts a /48 as one client; IPv4 is counted per address', async (t) => {
  const srv = await startTestServer(t, { ...settings, THROTTLE_IPV6_PREFIX: '48' })
  const svc = await srv.createClient({ grant_types: ['client_credentials'] })
  for (const from of ['2001:db8:5:1::1', '2001:db8:5:2::1']) assertOAuthError(t, await viaProxy(srv, from, cc, [svc.id, 'wrong']), 401, 'invalid_client')
  assertOAuthError(t, await viaProxy(srv, '2001:db8:5:ff00::1', cc, [svc.id, 'wrong']), 429, 'slow_down')
  assertOAuthError(t, await viaProxy(srv, '2001:db8:5:abcd::1', cc, svc.auth), 429, 'slow_down')
  t.equal((await viaProxy(srv, '2001:db8:6::1', cc, svc.auth)).status, 200, 'the next /48 is another client')
  t.same(await rows(srv, 'client_address'), [{ key: '2001:db8:5::/48', failures: 3 }])

  for (let i = 0; i < 3; i++) await viaProxy(srv, '198.51.100.7', cc, [svc.id, 'wrong'])
  t.equal((await viaProxy(srv, '198.51.100.8', cc, svc.auth)).status, 200, 'the IPv4 neighbour is not refused')
})

t.test('a flood from every address of a /64 adds one row to the throttle table', async (t) => {
  const srv = await startTestServer(t, { ...settings, CLIENT_AUTH_ADDRESS_FAILURES: '1000', CLIENT_AUTH_FAILURES: '1000' })
  for (let i = 0; i < 40; i++) await viaProxy(srv, `2001:db8:7:7:${i.toString(16)}::${((i * 7919) % 65536).toString(16)}`, cc, ['one-client', 'wrong'])
  t.same(await rows(srv, 'client_address'), [{ key: '2001:db8:7:7::/64', failures: 40 }])
})
