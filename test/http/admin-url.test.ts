// The admin API's DPoP htu (RFC 9449 §4.3 check 9) is ADMIN_URL, from the configuration: never
// the request's Host header, which the caller writes. Otherwise a proof made for another
// service's URL, where the same token goes, would pass here with that service's name as Host.
import { request } from 'node:http'
import t from 'tap'
import { loadConfig } from '../../src/config.js'
import { ADMIN_ID, ADMIN_SECRET, startTestServer, type TestServer } from '../helpers/server.js'
import { ath, keyPair, proof, type KeyPair } from '../helpers/jwt-clients.js'

/** GET `path` on the admin listener with this Host header, a DPoP-bound token and a proof. */
function adminGet(srv: TestServer, path: string, host: string, token: string, dpop: string): Promise<{ status: number; error?: string }> {
  const { hostname, port } = new URL(srv.adminUrl)
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method: 'GET', headers: { host, authorization: `DPoP ${token}`, dpop } }, (res) => {
      let text = ''
      res.on('data', (d: Buffer) => (text += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode!, ...(text !== '' && { error: JSON.parse(text).error }) }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function boundAdminToken(srv: TestServer, key: KeyPair): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET], {
    dpop: await proof(key, { htu: `${srv.issuer}/token` }),
  })
  if (r.status !== 200 || r.body.token_type !== 'DPoP') throw new Error(`token: ${r.status} ${r.text}`)
  return r.body.access_token
}

t.test('ADMIN_URL: default http://$ADMIN_HOST:$ADMIN_PORT, else as set, checked', async (t) => {
  t.equal(loadConfig({}).adminUrl, 'http://127.0.0.1:8081')
  t.equal(loadConfig({ ADMIN_HOST: '0.0.0.0', ADMIN_PORT: '9000' }).adminUrl, 'http://127.0.0.1:9000', 'the wildcard address as loopback')
  t.equal(loadConfig({ ADMIN_HOST: '::1' }).adminUrl, 'http://[::1]:8081')
  t.equal(loadConfig({ ADMIN_PORT: '0' }).adminUrl, undefined, 'known once it listens')
  t.equal(loadConfig({ ADMIN_URL: 'https://Admin.Example.com/ops/' }).adminUrl, 'https://admin.example.com/ops')
  for (const bad of ['admin.example.com', 'ftp://admin.example.com', 'https://admin.example.com/?x=1', 'https://admin.example.com/#f', 'https://u:p@admin.example.com']) {
    t.throws(() => loadConfig({ ADMIN_URL: bad }), /^ADMIN_URL must be/, bad)
  }
})

t.test('by default, the listening address: a proof for another URL fails whatever the Host header says', async (t) => {
  const srv = await startTestServer(t)
  const key = await keyPair()
  const token = await boundAdminToken(srv, key)
  const path = '/admin/clients'
  const elsewhere = 'http://other-service.example'
  const forElsewhere = await proof(key, { htm: 'GET', htu: `${elsewhere}${path}`, ath: ath(token) })
  t.same(await adminGet(srv, path, 'other-service.example', token, forElsewhere), { status: 401, error: 'invalid_dpop_proof' }, "another service's URL, with its name as Host")
  const forHere = await proof(key, { htm: 'GET', htu: `${srv.adminUrl}${path}`, ath: ath(token) })
  t.same(await adminGet(srv, path, 'other-service.example', token, forHere), { status: 200 }, 'the admin URL, whatever the Host header')
})

t.test('with ADMIN_URL set, proofs name it, path prefix included, and nothing else', async (t) => {
  const adminUrl = 'https://admin.tessera.test/ops'
  const srv = await startTestServer(t, { ADMIN_URL: adminUrl })
  const key = await keyPair()
  const token = await boundAdminToken(srv, key)
  const path = '/admin/keys'
  const good = await proof(key, { htm: 'GET', htu: `${adminUrl}${path}`, ath: ath(token) })
  t.same(await adminGet(srv, path, 'admin.tessera.test', token, good), { status: 200 }, 'ADMIN_URL and the path')
  for (const [what, htu, host] of [
    ['the listening address', `${srv.adminUrl}${path}`, new URL(srv.adminUrl).host],
    ['the Host header with the path', `https://proxy.example${path}`, 'proxy.example'],
    ['ADMIN_URL without its prefix', `https://admin.tessera.test${path}`, 'admin.tessera.test'],
  ] as const) {
    const p = await proof(key, { htm: 'GET', htu, ath: ath(token) })
    t.same(await adminGet(srv, path, host, token, p), { status: 401, error: 'invalid_dpop_proof' }, what)
  }
})
