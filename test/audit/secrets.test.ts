// What the audit keeps and logs: one pino line per event, and never a password, client secret or
// token, in the table or in any log line, after a run that used all of them.
import { Writable } from 'node:stream'
import t from 'tap'
import { createLogger } from '../../src/log.js'
import { ADMIN_SECRET, startTestServer } from '../helpers/server.js'
import { atLeast, freshAdminToken } from './support.js'

const lines: any[] = []
const raw: string[] = []
const sink = new Writable({
  write(chunk, _encoding, done) {
    raw.push(chunk.toString())
    for (const line of chunk.toString().split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line))
    done()
  },
})
const srv = await startTestServer(t, {}, { log: createLogger('info', sink) })

t.test('a run with passwords, secrets and tokens leaves none of them in the audit or the log', async (t) => {
  const secrets: string[] = [ADMIN_SECRET]
  const app = await srv.createClient()
  secrets.push(app.secret)
  const userId = await srv.createUser('rosa', 'rosa-password-one')
  secrets.push('rosa-password-one')

  const post = (form: Record<string, string>, auth: [string, string] = app.auth) => srv.post('/token', form, auth)
  const login = await post({ grant_type: 'password', username: 'rosa', password: 'rosa-password-one' })
  t.equal(login.status, 200)
  secrets.push(login.body.access_token, login.body.refresh_token)
  t.equal((await post({ grant_type: 'password', username: 'rosa', password: 'rosa-wrong-password' })).status, 400)
  t.equal((await post({ grant_type: 'password', username: 'rosa-typed-password-as-username', password: 'x' })).status, 400)
  secrets.push('rosa-wrong-password', 'rosa-typed-password-as-username')
  t.equal((await post({ grant_type: 'client_credentials' }, [app.id, 'not-the-app-secret-at-all'])).status, 401)
  secrets.push('not-the-app-secret-at-all')

  const refreshed = await post({ grant_type: 'refresh_token', refresh_token: login.body.refresh_token })
  t.equal(refreshed.status, 200)
  secrets.push(refreshed.body.access_token, refreshed.body.refresh_token)
  t.equal((await post({ grant_type: 'refresh_token', refresh_token: login.body.refresh_token })).status, 400, 'reuse')
  const again = await post({ grant_type: 'password', username: 'rosa', password: 'rosa-password-one' })
  secrets.push(again.body.access_token, again.body.refresh_token)
  await srv.post('/introspect', { token: again.body.access_token }, app.auth)
  await srv.post('/revoke', { token: again.body.access_token }, app.auth)
  await srv.post('/revoke', { token: again.body.refresh_token }, app.auth)

  const admin = await freshAdminToken(srv)
  secrets.push(admin)
  t.equal((await srv.admin('POST', `/admin/users/${userId}/password`, { password: 'rosa-password-two' }, admin)).status, 204)
  t.equal((await srv.admin('PATCH', `/admin/users/${userId}`, { password: 'rosa-password-three' }, admin)).status, 400)
  t.equal((await srv.admin('POST', '/admin/users', { username: ' bad ', password: 'rosa-password-four' }, admin)).status, 400)
  t.equal((await srv.admin('POST', '/admin/clients', { name: 'x', grant_types: ['password'], scopes: [], client_secret: 'chosen-secret-refused' }, admin)).status, 400)
  secrets.push('rosa-password-two', 'rosa-password-three', 'rosa-password-four', 'chosen-secret-refused')
  const rotated = await srv.admin('POST', `/admin/clients/${app.id}/secret`, {}, admin)
  secrets.push(rotated.body.client_secret)

  // As the token endpoint records logins: a password typed into the username field.
  srv.tessera.audit.record({ type: 'login.failed', address: '127.0.0.1', clientId: app.id, username: 'rosa-password-in-the-name-field' })
  srv.tessera.audit.record({ type: 'client.authentication_failed', address: '127.0.0.1', clientId: app.id, method: 'client_secret_basic', reason: 'invalid_secret' })
  secrets.push('rosa-password-in-the-name-field')

  // Every event of the run is stored: the last one recorded is.
  await atLeast(srv, { type: 'client.authentication_failed' })
  await srv.tessera.audit.flush()
  const rows = await srv.tessera.db.selectFrom('audit_events').selectAll().execute()
  t.ok(rows.length >= 10, `${rows.length} events`)
  t.ok(rows.some((r) => r.type === 'refresh_token.reused'))
  t.ok(rows.some((r) => r.type === 'token.revoked'))
  const stored = JSON.stringify(rows)
  const logged = raw.join('')
  for (const secret of secrets) {
    t.notOk(stored.includes(secret), `not in the audit table: ${secret.slice(0, 12)}…`)
    t.notOk(logged.includes(secret), `not in the log: ${secret.slice(0, 12)}…`)
  }
  const typedHash = srv.tessera.audit.hashUsername('ROSA-password-in-the-name-field')
  const typed = rows.find((r) => r.type === 'login.failed' && r.username_hash === typedHash)!
  t.match(typed, { user_id: null, username: null, username_hash: /^[\w-]{22}$/ }, 'a typed username only as a keyed hash')
  t.ok(rows.some((r) => r.type === 'login.failed' && r.user_id === userId), "the token endpoint's own failed login, by user id")
})

t.test('one log line per event, at info, told apart by msg "audit" and its audit field', async (t) => {
  await srv.tessera.audit.flush()
  const rows = await srv.tessera.db.selectFrom('audit_events').select(['type', 'occurred_at']).execute()
  const auditLines = lines.filter((l) => l.msg === 'audit')
  t.equal(auditLines.length, rows.length, 'as many lines as stored events')
  for (const l of auditLines) {
    t.equal(l.level, 30)
    t.equal(l.component, 'audit')
    t.type(l.audit.type, 'string')
    t.type(l.audit.at, 'string')
  }
  t.same(auditLines.map((l) => l.audit.type).sort(), rows.map((r) => r.type).sort())
  t.notOk(lines.some((l) => l.msg !== 'audit' && l.audit !== undefined), 'no other line has the field')
})
