import t from 'tap'
import { TestClock, startTestServer } from '../helpers/server.js'

// Signature checks are remembered per token string; what they must not remember is anything
// that can change: expiry, the key's publication, revocation.
const clock = new TestClock()
const srv = await startTestServer(t, {}, { clock })
const client = await srv.createClient({ access_token_ttl: 60 })

async function token() {
  const r = await srv.post('/token', { grant_type: 'client_credentials' }, client.auth)
  return r.body.access_token as string
}
const introspect = async (tok: string) => (await srv.post('/introspect', { token: tok }, client.auth)).body

t.test('a token seen before still expires', async (t) => {
  const tok = await token()
  t.equal((await introspect(tok)).active, true)
  t.equal((await introspect(tok)).active, true, 'seen twice')
  clock.advance(60)
  t.same(await introspect(tok), { active: false })
  t.equal(await srv.tessera.accessTokens.verify(tok), undefined)
})

t.test('a token seen before is still revoked', async (t) => {
  const tok = await token()
  t.equal((await introspect(tok)).active, true)
  await srv.post('/revoke', { token: tok }, client.auth)
  t.same(await introspect(tok), { active: false })
})

t.test('a token seen before stops verifying once its key is removed', async (t) => {
  const tok = await token()
  t.ok(await srv.tessera.accessTokens.verify(tok))
  t.equal((await srv.admin('POST', '/admin/keys/rotate?immediate=true')).status, 200)
  t.equal(await srv.tessera.accessTokens.verify(tok), undefined)
  t.same(await introspect(tok), { active: false })
})
