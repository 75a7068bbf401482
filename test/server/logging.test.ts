import { Writable } from 'node:stream'
import t from 'tap'
import { createLogger } from '../../src/log.js'
import { startTestServer } from '../helpers/server.js'

// Everything the server logs, as parsed lines.
const lines: any[] = []
const sink = new Writable({
  write(chunk, _encoding, done) {
    for (const line of chunk.toString().split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line))
    done()
  },
})
const srv = await startTestServer(t, {}, { log: createLogger('info', sink) })

t.test('secrets never reach the log, and each request is one line', async (t) => {
  const client = await srv.createClient()
  await srv.createUser('erin', 'erin-very-secret-password')
  const before = lines.length
  const login = await srv.post('/token', { grant_type: 'password', username: 'erin', password: 'erin-very-secret-password' }, client.auth)
  t.equal(login.status, 200)
  await srv.post('/token', { grant_type: 'refresh_token', refresh_token: login.body.refresh_token }, client.auth)
  await srv.post('/token', { grant_type: 'client_credentials', client_id: client.id, client_secret: client.secret })
  // A client that puts its secret in the URL: the log line has the path alone.
  await srv.post(`/token?client_secret=${client.secret}&x=1`, { grant_type: 'client_credentials' }, client.auth)
  await srv.post('/token', { grant_type: 'password', username: 'erin', password: 'wrong-password-also-secret' }, client.auth)
  await srv.post('/introspect', { token: login.body.access_token }, client.auth)
  await srv.post('/revoke', { token: login.body.refresh_token }, client.auth)
  await srv.admin('POST', `/admin/users`, { username: 'frank', password: 'frank-secret-password' })
  // The onResponse hook runs after the reply is sent; give the log a moment to catch up.
  await new Promise((resolve) => setImmediate(resolve))

  const text = JSON.stringify(lines)
  for (const secret of [
    client.secret,
    'erin-very-secret-password',
    'wrong-password-also-secret',
    'frank-secret-password',
    login.body.access_token,
    login.body.refresh_token,
    await srv.adminToken(),
  ]) {
    t.notOk(text.includes(secret), `never logged: ${secret.slice(0, 8)}…`)
  }
  const requests = lines.slice(before).filter((l) => l.msg === 'request')
  t.same(
    requests.map((l) => `${l.method} ${l.url} ${l.status}`),
    [
      'POST /token 200',
      'POST /token 200',
      'POST /token 200',
      'POST /token 200',
      'POST /token 400',
      'POST /introspect 200',
      'POST /revoke 200',
      'POST /admin/users 201',
    ],
    'one line per request, each with the path alone',
  )
})

t.test('the logger redacts credentials wherever they are logged', async (t) => {
  const captured: string[] = []
  const log = createLogger('info', new Writable({ write: (c, _e, done) => (captured.push(c.toString()), done()) }))
  log.info({ headers: { authorization: 'Basic c2VjcmV0' }, password: 'p4ss', client_secret: 's3cret', body: { refresh_token: 'rt', token: 'tk' } }, 'x')
  const out = captured.join('')
  for (const s of ['c2VjcmV0', 'p4ss', 's3cret', '"rt"', '"tk"']) t.notOk(out.includes(s), `redacted ${s}`)
})

t.test('ALLOW_INSECURE_JWKS_URI says loudly, at start, that it is for tests only', async (t) => {
  const warned: any[] = []
  const capture = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') warned.push(JSON.parse(line))
      done()
    },
  })
  await startTestServer(t, { ALLOW_INSECURE_JWKS_URI: 'true' }, { log: createLogger('info', capture) })
  const warning = warned.find((l) => l.level === 40 && /ALLOW_INSECURE_JWKS_URI/.test(l.msg))
  t.ok(warning, 'a warning is logged')
  t.match(warning?.msg, /tests only/)
  t.notOk(lines.some((l) => /ALLOW_INSECURE_JWKS_URI/.test(l.msg ?? '')), 'and not without the setting')
})
