import t from 'tap'
import { startTestServer, assertOAuthError } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient()

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/


const passwordGrant = (username: string, password: string, extra: Record<string, string> = {}) =>
  srv.post('/token', { grant_type: 'password', username, password, ...extra }, app.auth)
const refresh = (token: string) => srv.post('/token', { grant_type: 'refresh_token', refresh_token: token }, app.auth)
const introspect = async (token: string) => (await srv.post('/introspect', { token }, app.auth)).body

async function allUsers(): Promise<any[]> {
  return (await srv.admin('GET', '/admin/users?limit=1000')).body.users
}

t.test('create: 201 with an id and the username as given, never a password or hash', async (t) => {
  const r = await srv.admin('POST', '/admin/users', { username: 'Carol', password: 'carol secret pw', scopes: ['read'] })
  t.equal(r.status, 201)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.match(r.body.id, UUID)
  t.match(r.body, { username: 'Carol', disabled: false, scopes: ['read'] })
  t.type(r.body.created_at, 'string')
  t.notMatch(r.text, /password|hash|argon/i)
  t.notOk(r.text.includes('carol secret pw'))
  const noScopes = await srv.admin('POST', '/admin/users', { username: 'dave', password: 'dave password' })
  t.equal(noScopes.status, 201)
  t.equal(noScopes.body.scopes, null, 'no scopes: whatever the client allows')
  t.equal((await passwordGrant('carol', 'carol secret pw')).body.scope, 'read')
  t.equal((await passwordGrant('dave', 'dave password')).body.scope, 'read write')
})

t.test('a duplicate username, in any case, is 409 conflict and writes nothing', async (t) => {
  await srv.createUser('Erin', 'erin password')
  const before = await allUsers()
  for (const username of ['Erin', 'erin', 'ERIN', 'eRiN']) {
    assertOAuthError(t, await srv.admin('POST', '/admin/users', { username, password: 'other pw' }), 409, 'conflict')
  }
  // Compared after Unicode NFC normalisation: é precomposed and as e + combining accent are one name.
  await srv.createUser('Ren\u00e9', 'rene password')
  assertOAuthError(t, await srv.admin('POST', '/admin/users', { username: 'RENE\u0301', password: 'another password' }), 409, 'conflict')
  const after = await allUsers()
  t.equal(after.length, before.length + 1)
  t.equal((await passwordGrant('erin', 'erin password')).status, 200, 'the original password still works')
  t.equal((await passwordGrant('erin', 'other pw')).status, 400)
})

t.test('list: ?username= matches case-insensitively', async (t) => {
  const id = await srv.createUser('Frank', 'frank pw')
  for (const q of ['Frank', 'frank', 'FRANK']) {
    const r = await srv.admin('GET', `/admin/users?username=${q}`)
    t.equal(r.status, 200)
    t.equal(r.headers.get('cache-control'), 'no-store')
    t.equal(r.body.users.length, 1)
    t.equal(r.body.users[0].id, id)
    t.equal(r.body.users[0].username, 'Frank')
    t.notMatch(r.text, /password|hash/i)
  }
  t.same((await srv.admin('GET', '/admin/users?username=nobody')).body, { users: [] })
  assertOAuthError(t, await srv.admin('GET', '/admin/users?username=a&username=b'), 400, 'invalid_request')
})

t.test('list: ?limit= and ?after= walk every user once', async (t) => {
  for (let i = 0; i < 4; i++) await srv.createUser(`paged-${i}`, 'paged password')
  const everything = (await allUsers()).map((u) => u.id)
  t.ok(everything.length >= 5)
  t.same([...everything].sort(), everything, 'ordered by id')
  for (const limit of [1, 2, 3]) {
    const seen: string[] = []
    let after: string | undefined
    for (let pages = 0; pages < 100; pages++) {
      const r = await srv.admin('GET', `/admin/users?limit=${limit}${after === undefined ? '' : `&after=${after}`}`)
      t.equal(r.status, 200)
      t.ok(r.body.users.length <= limit)
      seen.push(...r.body.users.map((u: any) => u.id))
      if (r.body.next === undefined) break
      after = r.body.next
    }
    t.same(seen, everything, `limit ${limit}`)
  }
  const afterLast = await srv.admin('GET', `/admin/users?after=${everything.at(-1)}`)
  t.same(afterLast.body, { users: [] })
  for (const q of ['limit=0', 'limit=-1', 'limit=abc', 'limit=2.5', 'limit=100000', 'after=not-a-uuid', 'after=1&after=2']) {
    assertOAuthError(t, await srv.admin('GET', `/admin/users?${q}`), 400, 'invalid_request')
  }
})

t.test('read one; a non-UUID or unknown id is 404', async (t) => {
  const id = await srv.createUser('Grace', 'grace pw', { scopes: ['write'] })
  const r = await srv.admin('GET', `/admin/users/${id}`)
  t.equal(r.status, 200)
  t.match(r.body, { id, username: 'Grace', disabled: false, scopes: ['write'] })
  t.notMatch(r.text, /password|hash/i)
  t.equal((await srv.admin('GET', `/admin/users/${id.toUpperCase()}`)).body.id, id, 'UUIDs in any case')
  for (const bad of ['not-a-uuid', '123', '00000000-0000-4000-8000-000000000000', `${id}x`, "1' or '1'='1"]) {
    const path = `/admin/users/${encodeURIComponent(bad)}`
    assertOAuthError(t, await srv.admin('GET', path), 404, 'not_found')
    assertOAuthError(t, await srv.admin('PATCH', path, { disabled: true }), 404, 'not_found')
    assertOAuthError(t, await srv.admin('DELETE', path), 404, 'not_found')
    assertOAuthError(t, await srv.admin('POST', `${path}/password`, { password: 'x' }), 404, 'not_found')
  }
})

t.test('PATCH scopes changes only scopes, and narrows tokens', async (t) => {
  const id = await srv.createUser('Heidi', 'heidi pw')
  const before = (await srv.admin('GET', `/admin/users/${id}`)).body
  const r = await srv.admin('PATCH', `/admin/users/${id}`, { scopes: ['read'] })
  t.equal(r.status, 200)
  t.same({ ...r.body, scopes: null, updated_at: null }, { ...before, scopes: null, updated_at: null })
  t.same(r.body.scopes, ['read'])
  t.equal((await passwordGrant('heidi', 'heidi pw')).body.scope, 'read')
  const cleared = await srv.admin('PATCH', `/admin/users/${id}`, { scopes: null })
  t.equal(cleared.body.scopes, null)
  t.equal((await passwordGrant('heidi', 'heidi pw')).body.scope, 'read write')
})

t.test('a disabled user cannot get tokens or refresh; enabling restores it', async (t) => {
  const id = await srv.createUser('Ivan', 'ivan password')
  const issued = await passwordGrant('ivan', 'ivan password')
  t.equal(issued.status, 200)
  const r = await srv.admin('PATCH', `/admin/users/${id}`, { disabled: true })
  t.equal(r.status, 200)
  t.equal(r.body.disabled, true)
  t.equal(r.body.username, 'Ivan', 'untouched')
  assertOAuthError(t, await passwordGrant('ivan', 'ivan password'), 400, 'invalid_grant')
  assertOAuthError(t, await refresh(issued.body.refresh_token), 400, 'invalid_grant')
  t.same(await introspect(issued.body.access_token), { active: false }, 'live tokens stop too')

  const enabled = await srv.admin('PATCH', `/admin/users/${id}`, { disabled: false })
  t.equal(enabled.body.disabled, false)
  t.equal((await passwordGrant('ivan', 'ivan password')).status, 200)
  t.equal((await refresh(issued.body.refresh_token)).status, 200, 'disabling revoked nothing')
})

t.test('bad PATCH bodies are 400 and change nothing', async (t) => {
  const id = await srv.createUser('Judy', 'judy password')
  const before = (await srv.admin('GET', `/admin/users/${id}`)).body
  for (const body of [{}, { disabled: 'yes' }, { disabled: null }, { scopes: 'read' }, { scopes: ['a b'] }, { username: 'judith' }, { password: 'x' }, { id: 'x' }, [], null, 1]) {
    assertOAuthError(t, await srv.admin('PATCH', `/admin/users/${id}`, body), 400, 'invalid_request')
  }
  t.same((await srv.admin('GET', `/admin/users/${id}`)).body, before)
})

t.test('DELETE: 204, then 404; the user can no longer log in or refresh', async (t) => {
  const id = await srv.createUser('Mallory', 'mallory pw')
  const issued = await passwordGrant('mallory', 'mallory pw')
  t.equal(issued.status, 200)
  const del = await srv.admin('DELETE', `/admin/users/${id}`)
  t.equal(del.status, 204)
  t.equal(del.text, '')
  assertOAuthError(t, await srv.admin('GET', `/admin/users/${id}`), 404, 'not_found')
  assertOAuthError(t, await srv.admin('DELETE', `/admin/users/${id}`), 404, 'not_found')
  t.same((await srv.admin('GET', '/admin/users?username=mallory')).body, { users: [] })
  assertOAuthError(t, await refresh(issued.body.refresh_token), 400, 'invalid_grant')
  assertOAuthError(t, await passwordGrant('mallory', 'mallory pw'), 400, 'invalid_grant')
  t.same(await introspect(issued.body.access_token), { active: false })
  const again = await srv.admin('POST', '/admin/users', { username: 'mallory', password: 'mallory again' })
  t.equal(again.status, 201, 'the name is free again')
  t.not(again.body.id, id)
  assertOAuthError(t, await refresh(issued.body.refresh_token), 400, 'invalid_grant')
})

t.test('POST password: 204; the old password stops, the new one works', async (t) => {
  const id = await srv.createUser('Niaj', 'old password')
  const r = await srv.admin('POST', `/admin/users/${id}/password`, { password: 'new password' })
  t.equal(r.status, 204)
  t.equal(r.text, '')
  assertOAuthError(t, await passwordGrant('niaj', 'old password'), 400, 'invalid_grant')
  t.equal((await passwordGrant('niaj', 'new password')).status, 200)
  for (const body of [{}, { password: '' }, { password: 12345678 }, { password: 'a fine password', extra: 1 }, { new_password: 'x' }, null]) {
    assertOAuthError(t, await srv.admin('POST', `/admin/users/${id}/password`, body), 400, 'invalid_request')
  }
  t.equal((await passwordGrant('niaj', 'new password')).status, 200, 'unchanged by the bad requests')
})

t.test('bad create bodies are 400 invalid_request and write nothing', async (t) => {
  const before = await allUsers()
  const bad: unknown[] = [
    { password: 'oscar password' },
    { username: 'oscar' },
    { username: '', password: 'oscar password' },
    { username: ' oscar', password: 'oscar password' },
    { username: 'oscar ', password: 'oscar password' },
    { username: 'os\ncar', password: 'oscar password' },
    { username: 7, password: 'oscar password' },
    { username: 'oscar', password: '' },
    { username: 'oscar', password: 42 },
    { username: 'oscar', password: 'oscar password', scopes: 'read' },
    { username: 'oscar', password: 'oscar password', scopes: ['re ad'] },
    { username: 'oscar', password: 'oscar password', disabled: true },
    { username: 'x'.repeat(201), password: 'oscar password' },
    [],
    'oscar',
    null,
  ]
  for (const body of bad) {
    assertOAuthError(t, await srv.admin('POST', '/admin/users', body), 400, 'invalid_request')
  }
  const res = await fetch(`${srv.adminUrl}/admin/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await srv.adminToken()}`, 'content-type': 'application/json' },
    body: '{"username": "oscar", ',
  })
  t.equal(res.status, 400)
  t.equal(((await res.json()) as { error?: string }).error, 'invalid_request')
  t.same(await allUsers(), before)
})
