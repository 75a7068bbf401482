// `tessera audit` as an administrator runs it: the built CLI as a child process against a real
// server, checked by what it prints and its exit code.
import t from 'tap'
import { runCli } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, startTestServer } from '../helpers/server.js'
import { atLeast } from './support.js'

const srv = await startTestServer(t)

/** `tessera <args…> --admin-url <this server>` with a clean environment and the admin's credentials. */
const tessera = (args: string[]) =>
  runCli([...args, '--admin-url', srv.adminUrl], { env: { TESSERA_ADMIN_CLIENT_ID: ADMIN_ID, TESSERA_ADMIN_CLIENT_SECRET: ADMIN_SECRET } })

const app = await srv.createClient()
const userId = await srv.createUser('sam', 'sam password')
await srv.admin('POST', `/admin/users/${userId}/revoke-tokens`)
// Stored before the next one is recorded, so that the order below is certain.
await atLeast(srv, { type: 'admin.change', user: userId }, 2)
// As the token endpoint records a failed client authentication; the id is what the caller sent.
srv.tessera.audit.record({ type: 'client.authentication_failed', address: '198.51.100.7', clientId: 'evil\u001b[31m', reason: 'unknown_client' })
await atLeast(srv, { type: 'client.authentication_failed' })

t.test('prints the events as a table, newest first', async (t) => {
  const r = await tessera(['audit'])
  t.equal(r.code, 0, r.stderr)
  const lines = r.stdout.trimEnd().split('\n')
  t.match(lines[0], /^TIME\s+TYPE\s+ADDRESS\s+ADMIN\s+CLIENT\s+USER\s+DETAILS$/)
  t.match(lines[1], /^\S+Z\s+client\.authentication_failed\s+198\.51\.100\.7\s+-\s+evil\\u001b\[31m\s+-\s+reason=unknown_client$/, 'control characters escaped')
  t.match(lines[2], new RegExp(`^\\S+\\s+admin\\.change\\s+127\\.0\\.0\\.1\\s+${ADMIN_ID}\\s+-\\s+${userId}\\s+method=POST route=/admin/users/:id/revoke-tokens status=204$`))
  t.match(lines[3], new RegExp(`^\\S+\\s+token\\.revoked\\s+127\\.0\\.0\\.1\\s+${ADMIN_ID}\\s+-\\s+${userId}\\s+via=admin`))
  t.match(r.stdout, new RegExp(`admin\\.change.*${app.id}.*route=/admin/clients status=201 changes=\\{"name":"test client"`))
  t.match(r.stdout, /key\.created\s+-\s+-\s+-\s+-\s+kid=\S+ alg=ES256 state=active/)
  t.notOk(r.stdout.includes('\u001b'))
  t.equal(r.stderr, '')
})

t.test('filters: --type, --user (by username or id), --client, --since and --until', async (t) => {
  const json = async (args: string[]) => {
    const r = await tessera(['audit', '--json', ...args])
    t.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout).events as any[]
  }
  t.same((await json(['--type', 'token.revoked'])).map((e) => e.user_id), [userId])
  t.same((await json(['--type', 'token.revoked,client.authentication_failed'])).map((e) => e.type), ['client.authentication_failed', 'token.revoked'])
  const byName = await json(['--user', 'SAM'])
  t.same(byName.map((e) => e.type), ['admin.change', 'token.revoked', 'admin.change'])
  t.same(await json(['--user', userId]), byName)
  t.same((await json(['--client', app.id])).map((e) => e.details.route), ['/admin/clients'])
  t.same(await json(['--since', '2999-01-01']), [])
  t.equal((await json(['--until', '2999-01-01'])).length, byName.length + 3, '…and the client, the first key and the failed authentication')
  const none = await tessera(['audit', '--client', 'nobody'])
  t.equal(none.code, 0)
  t.equal(none.stdout, 'no events\n')
})

t.test('--limit prints that many; --json gives the next page to --after', async (t) => {
  const all = JSON.parse((await tessera(['audit', '--json'])).stdout)
  t.notOk('next' in all)
  const two = await tessera(['audit', '--limit', '2'])
  t.equal(two.code, 0)
  t.equal(two.stdout.trimEnd().split('\n').length, 3, 'a header and two events')
  t.match(two.stderr, /^\(more: --after \d+-\d+\)\n$/)
  const first = JSON.parse((await tessera(['audit', '--json', '--limit', '2'])).stdout)
  t.equal(first.events.length, 2)
  t.type(first.next, 'string')
  const rest = JSON.parse((await tessera(['audit', '--json', '--after', first.next])).stdout)
  t.same([...first.events, ...rest.events], all.events)
})

t.test('mistakes: a bad flag is a usage error (2); a value the server refuses is 1, in one line', async (t) => {
  const [help, badLimit, extra, badType, badSince, unknownUser] = await Promise.all([
    tessera(['audit', '--help']),
    tessera(['audit', '--limit', 'lots']),
    tessera(['audit', 'everything']),
    tessera(['audit', '--type', 'login']),
    tessera(['audit', '--since', 'yesterday']),
    tessera(['audit', '--user', 'nobody-at-all']),
  ])
  t.equal(help.code, 0)
  t.match(help.stdout, /^usage: tessera audit \[--type LIST\]/)
  t.match(help.stdout, /--admin-url URL/)
  t.equal(badLimit.code, 2)
  t.match(badLimit.stderr, /--limit must be a whole number[\s\S]*usage: tessera audit/)
  t.equal(extra.code, 2)
  t.match(extra.stderr, /audit takes no arguments/)
  t.equal(badType.code, 1)
  t.match(badType.stderr, /^tessera: invalid_request: type must be one or more of login\.succeeded, /)
  t.equal(badSince.code, 1)
  t.match(badSince.stderr, /^tessera: invalid_request: since must be an ISO 8601 time/)
  t.equal(unknownUser.code, 1)
  t.match(unknownUser.stderr, /^tessera: not_found: no user with id or username "nobody-at-all"\n$/)
  for (const r of [badType, badSince, unknownUser]) t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
})
