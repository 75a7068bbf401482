// Input that cannot be text, or that no client means, is refused as 400 invalid_request before it
// reaches the database (src/input.ts), on every route and both backends: NUL and control
// characters, invalid UTF-8 in raw bytes and in %XX, unpaired surrogates, over-long values.
import t, { type Test } from 'tap'
import { RawConnection } from '../helpers/connections.js'
import { assertOAuthError, basic, startTestServer, toResult, type HttpResult } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient({ audiences: ['https://api.example'] })
const userId = await srv.createUser('alice', 'alice password')
const FORM = 'application/x-www-form-urlencoded'

/** A public endpoint with a body sent byte for byte. */
async function postRaw(path: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<HttpResult> {
  return toResult(await fetch(`${srv.url}${path}`, { method: 'POST', headers: { 'content-type': FORM, ...headers }, body }))
}

/** An admin request with a body sent byte for byte. */
async function adminRaw(method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<HttpResult> {
  const res = await fetch(`${srv.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${await srv.adminToken()}`, 'content-type': 'application/json', ...headers },
    ...(body !== undefined && { body }),
  })
  return toResult(res)
}

const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))))

/** 400 invalid_request whose description matches `about`, and never quotes `secret`. */
function refused(t: Test, r: HttpResult, about: RegExp, secret?: string): void {
  assertOAuthError(t, r, 400, 'invalid_request')
  t.match(r.body?.error_description, about)
  if (secret !== undefined) t.notOk(r.text.includes(secret), 'the value is not echoed')
}

const passwordGrant = (username: string, password: string) =>
  srv.post('/token', { grant_type: 'password', username, password }, app.auth)

async function stillWorks(t: Test): Promise<void> {
  const r = await passwordGrant('alice', 'alice password')
  t.equal(r.status, 200, 'the server still serves a password grant')
}

t.test('a NUL in a form parameter is refused, and the server keeps working', async (t) => {
  refused(t, await postRaw('/token', 'grant_type=password&username=al%00ice&password=x', { authorization: basic(...app.auth) }), /parameter "username" contains a NUL/)
  refused(t, await postRaw('/token', 'grant_type=password&username=alice&password=alice%00password', { authorization: basic(...app.auth) }), /parameter "password" contains a NUL/)
  refused(t, await postRaw('/token', 'grant_type=client_credentials&client_id=a%00b&client_secret=x'), /parameter "client_id" contains a NUL/)
  refused(t, await postRaw('/token', `grant_type=client_credentials&client_id=${app.id}&client_secret=s%00`), /parameter "client_secret" contains a NUL/)
  refused(t, await postRaw('/token', 'grant_type=refresh_token&refresh_token=abc%00', { authorization: basic(...app.auth) }), /parameter "refresh_token"/)
  refused(t, await postRaw('/token', 'grant_type=client_credentials&scope=read%00', { authorization: basic(...app.auth) }), /parameter "scope"/)
  refused(t, await postRaw('/token', 'grant_type=client_credentials&resource=https://api.example%00', { authorization: basic(...app.auth) }), /parameter "resource"/)
  refused(t, await postRaw('/token', 'grant_type=client%00credentials', { authorization: basic(...app.auth) }), /parameter "grant_type"/)
  refused(t, await postRaw('/introspect', 'token=abc%00def', { authorization: basic(...app.auth) }), /parameter "token" contains a NUL/)
  refused(t, await postRaw('/revoke', 'token=abc%00def', { authorization: basic(...app.auth) }), /parameter "token" contains a NUL/)
  refused(t, await postRaw('/introspect', `token=x&client_id=${app.id}%00&client_secret=${app.secret}`), /parameter "client_id"/)
  refused(t, await postRaw('/token', 'grant_type=client_credentials&na%00me=x', { authorization: basic(...app.auth) }), /a parameter name contains a NUL/)
  await stillWorks(t)
})

t.test('control characters: refused in identifiers and tokens, allowed in passwords', async (t) => {
  for (const c of ['%01', '%09', '%0A', '%0D', '%1F', '%7F']) {
    refused(t, await postRaw('/token', `grant_type=password&username=al${c}ice&password=x`, { authorization: basic(...app.auth) }), /parameter "username" contains a control character/)
    refused(t, await postRaw('/introspect', `token=abc${c}`, { authorization: basic(...app.auth) }), /parameter "token" contains a control character/)
  }
  // Free text: only NUL is refused, so a password with a tab is simply checked.
  await srv.createUser('tabby', 'tab\there password')
  t.equal((await passwordGrant('tabby', 'tab\there password')).status, 200)
  assertOAuthError(t, await passwordGrant('tabby', 'tab\tthere password'), 400, 'invalid_grant')
  // A parameter the server does not read is ignored (RFC 6749 §3.1), control characters and all.
  const r = await postRaw('/token', 'grant_type=client_credentials&comment=a%09b', { authorization: basic(...app.auth) })
  t.equal(r.status, 200)
})

t.test('%XX that does not decode to UTF-8 is refused, not read as three characters or as U+FFFD', async (t) => {
  for (const bad of ['%FF', '%C3', '%E2%82', '%ED%A0%80', '%C0%AF', '%zz', '%', '%4']) {
    refused(t, await postRaw('/token', `grant_type=password&username=al${bad}ice&password=x`, { authorization: basic(...app.auth) }), /percent-encoded sequence that is not UTF-8/)
  }
  refused(t, await postRaw('/introspect', 'token=%FF', { authorization: basic(...app.auth) }), /the request body has a percent-encoded/)
  refused(t, await postRaw('/revoke', 'token=%FF', { authorization: basic(...app.auth) }), /the request body has a percent-encoded/)
  // Well-formed UTF-8, encoded or raw, is accepted.
  await srv.createUser('José', 'jose password')
  t.equal((await postRaw('/token', 'grant_type=password&username=Jos%C3%A9&password=jose+password', { authorization: basic(...app.auth) })).status, 200)
  t.equal((await postRaw('/token', bytes('grant_type=password&username=Jos', [0xc3, 0xa9], '&password=jose+password'), { authorization: basic(...app.auth) })).status, 200)
  await stillWorks(t)
})

t.test('raw bytes that are not UTF-8 are refused', async (t) => {
  for (const bad of [[0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xfe, 0xff]]) {
    refused(t, await postRaw('/token', bytes('grant_type=password&username=al', bad, 'ice&password=x'), { authorization: basic(...app.auth) }), /the request body is not valid UTF-8/)
  }
  refused(t, await postRaw('/introspect', bytes('token=', [0xff]), { authorization: basic(...app.auth) }), /not valid UTF-8/)
  refused(t, await postRaw('/revoke', bytes('token=', [0xff]), { authorization: basic(...app.auth) }), /not valid UTF-8/)
})

t.test('over-long values are refused; values within the bounds are answered as usual', async (t) => {
  const long = (n: number) => 'a'.repeat(n)
  refused(t, await passwordGrant(long(2048), 'x'), /parameter "username" is too long \(at most 1024 bytes\)/)
  // Bytes, not characters: 342 three-byte characters are 1026 bytes.
  refused(t, await passwordGrant('€'.repeat(342), 'x'), /username" is too long/)
  assertOAuthError(t, await passwordGrant(long(1024), 'x'), 400, 'invalid_grant')
  refused(t, await passwordGrant('alice', long(2048)), /parameter "password" is too long/, long(2048))
  assertOAuthError(t, await passwordGrant('alice', long(1024)), 400, 'invalid_grant')

  const token9k = long(9 * 1024)
  refused(t, await srv.post('/introspect', { token: token9k }, app.auth), /parameter "token" is too long \(at most 8192 bytes\)/)
  refused(t, await srv.post('/revoke', { token: token9k }, app.auth), /parameter "token" is too long/)
  refused(t, await srv.post('/token', { grant_type: 'refresh_token', refresh_token: token9k }, app.auth), /parameter "refresh_token" is too long/)
  t.same((await srv.post('/introspect', { token: long(8192) }, app.auth)).body, { active: false })
  t.equal((await srv.post('/revoke', { token: long(8192) }, app.auth)).status, 200)
  assertOAuthError(t, await srv.post('/token', { grant_type: 'refresh_token', refresh_token: long(8192) }, app.auth), 400, 'invalid_grant')

  refused(t, await srv.post('/token', { grant_type: 'client_credentials', scope: `read ${long(9000)}` }, app.auth), /parameter "scope" is too long/)
  refused(t, await srv.post('/token', { grant_type: 'client_credentials', resource: `https://api.example/${long(9000)}` }, app.auth), /parameter "resource" is too long/)
  refused(t, await srv.post('/token', { grant_type: long(200) }, app.auth), /parameter "grant_type" is too long/)
  refused(t, await srv.post('/token', { grant_type: 'client_credentials', client_id: long(300), client_secret: 'x' }), /parameter "client_id" is too long \(at most 256 bytes\)/)
  refused(t, await srv.post('/token', { grant_type: 'client_credentials', client_id: app.id, client_secret: long(600) }), /parameter "client_secret" is too long \(at most 512 bytes\)/)
  refused(t, await srv.post('/token', { grant_type: 'client_credentials', [long(200)]: 'x' }, app.auth), /a parameter name is too long/)
  refused(t, await srv.post('/token', { grant_type: 'client_credentials', comment: long(9000) }, app.auth), /parameter "comment" is too long/)
  await stillWorks(t)
})

t.test('the client id and secret of a Basic header are checked like the form parameters', async (t) => {
  const header = (decoded: string | Buffer) => ({ authorization: `Basic ${Buffer.from(decoded).toString('base64')}` })
  const cases: [string | Buffer, RegExp][] = [
    ['a%00b:secret', /the client_id of the Basic credentials contains a NUL/],
    ['a\u0000b:secret', /the client_id of the Basic credentials contains a NUL/],
    ['a%09b:secret', /client_id of the Basic credentials contains a control character/],
    [`${app.id}:s%00`, /the client_secret of the Basic credentials contains a NUL/],
    ['a%FFb:secret', /the client_id of the Basic credentials has a percent-encoded sequence that is not UTF-8/],
    [bytes('a', [0xff], 'b:secret'), /the decoded Basic header is not valid UTF-8/],
    [`${'a'.repeat(300)}:secret`, /client_id of the Basic credentials is too long \(at most 256 bytes\)/],
    [`${app.id}:${'s'.repeat(600)}`, /client_secret of the Basic credentials is too long \(at most 512 bytes\)/],
  ]
  for (const path of ['/token', '/introspect', '/revoke']) {
    for (const [decoded, about] of cases) {
      refused(t, await postRaw(path, 'grant_type=client_credentials&token=x', header(decoded)), about)
    }
  }
  // Not well-formed Basic at all: client authentication answers, as before.
  assertOAuthError(t, await postRaw('/token', 'grant_type=client_credentials', { authorization: 'Basic !!!' }), 401, 'invalid_client')
  assertOAuthError(t, await postRaw('/token', 'grant_type=client_credentials', header('no colon')), 401, 'invalid_client')
  t.equal((await postRaw('/token', 'grant_type=client_credentials', { authorization: basic(...app.auth) })).status, 200)
})

t.test('a URL must be percent-encoded UTF-8, on both listeners', async (t) => {
  refused(t, await toResult(await fetch(`${srv.url}/jwks?x=%FF`)), /the URL has a percent-encoded sequence that is not UTF-8/)
  refused(t, await postRaw('/token?x=%E2%82', 'grant_type=client_credentials', { authorization: basic(...app.auth) }), /the URL/)
  refused(t, await adminRaw('GET', '/admin/users?username=al%FFice'), /the URL has a percent-encoded/)
  refused(t, await adminRaw('GET', '/admin/clients/a%FFb'), /the URL has a percent-encoded/)
  refused(t, await adminRaw('GET', '/admin/users/%zz'), /the URL has a percent-encoded/)
})

t.test('what Node refuses itself (a NUL in a header, raw bytes in the URL, a broken request line) is §5.2 JSON too', async (t) => {
  for (const base of [srv.url, srv.adminUrl]) {
    for (const request of [
      bytes('GET /admin/clients/caf', [0xc3, 0xa9], ' HTTP/1.1\r\nhost: x\r\n\r\n'),
      bytes('GET /admin/clients/a', [0], 'b HTTP/1.1\r\nhost: x\r\n\r\n'),
      bytes('GET /jwks HTTP/1.1\r\nhost: x\r\nif-none-match: "a', [0], 'b"\r\n\r\n'),
      bytes('GET /jwks HTTP/1.1\r\nhost: x\r\nauthorization: Basic a\rb\r\n\r\n'),
      bytes('NOT A REQUEST\r\n\r\n'),
    ]) {
      const conn = await RawConnection.open(base)
      conn.socket.write(request)
      const r = await conn.response()
      t.equal(r.status, 400)
      t.same(r.body, { error: 'invalid_request', error_description: 'malformed HTTP request' })
      t.equal(r.headers['cache-control'], 'no-store')
      t.match(r.headers['content-type'], /^application\/json/)
      await conn.closed
    }
  }
  await stillWorks(t)
})

t.test('admin path parameters: NUL, control characters and over-long ids are refused', async (t) => {
  const c = await srv.createClient()
  for (const [prefix, name, max] of [['/admin/clients', 'client_id', 256], ['/admin/users', 'id', 256]] as const) {
    for (const [id, about] of [
      ['a%00b', new RegExp(`${name} in the path contains a NUL`)],
      ['a%09b', new RegExp(`${name} in the path contains a control character`)],
      ['x'.repeat(max + 1), new RegExp(`${name} in the path is too long \\(at most ${max} bytes\\)`)],
      ['x'.repeat(600), /a segment of the URL path is too long/],
    ] as const) {
      refused(t, await adminRaw('GET', `${prefix}/${id}`), about)
      refused(t, await adminRaw('PATCH', `${prefix}/${id}`, '{"scopes":["read"]}'), about)
      refused(t, await adminRaw('DELETE', `${prefix}/${id}`), about)
      refused(t, await adminRaw('POST', `${prefix}/${id}/revoke-tokens`), about)
    }
    // An id that is well-formed but unknown is still not found.
    assertOAuthError(t, await adminRaw('GET', `${prefix}/${'x'.repeat(max)}`), 404, 'not_found')
  }
  refused(t, await adminRaw('POST', '/admin/clients/a%00b/secret', '{}'), /client_id in the path contains a NUL/)
  refused(t, await adminRaw('POST', '/admin/users/a%00b/password', '{"password":"a good password"}'), /id in the path contains a NUL/)
  t.equal((await adminRaw('GET', `/admin/clients/${c.id}`)).status, 200, 'nothing else changed')
  t.equal((await adminRaw('GET', `/admin/users/${userId}`)).status, 200)
})

t.test('admin query parameters: NUL, control characters and over-long values are refused', async (t) => {
  refused(t, await adminRaw('GET', '/admin/users?username=al%00ice'), /query parameter "username" contains a NUL/)
  refused(t, await adminRaw('GET', '/admin/users?username=al%0Aice'), /query parameter "username" contains a control character/)
  refused(t, await adminRaw('GET', `/admin/users?username=${'a'.repeat(1025)}`), /query parameter "username" is too long \(at most 1024 bytes\)/)
  refused(t, await adminRaw('GET', '/admin/users?after=a%00b'), /query parameter "after" contains a NUL/)
  refused(t, await adminRaw('GET', '/admin/clients?after=a%00b'), /query parameter "after" contains a NUL/)
  refused(t, await adminRaw('GET', `/admin/clients?after=${'a'.repeat(300)}`), /query parameter "after" is too long/)
  refused(t, await adminRaw('GET', '/admin/clients?limit=1%00'), /query parameter "limit" contains a NUL/)
  refused(t, await adminRaw('POST', '/admin/keys/rotate?immediate=%00'), /query parameter "immediate" contains a NUL/)
  refused(t, await adminRaw('GET', '/admin/keys?x%00=1'), /a query parameter name contains a NUL/)
  t.same((await adminRaw('GET', '/admin/users?username=ALICE')).body.users.map((u: any) => u.id), [userId])
  t.equal((await adminRaw('GET', `/admin/clients?after=${'a'.repeat(256)}`)).status, 200)
})

t.test('admin JSON bodies: NUL, unpaired surrogates and bytes that are not UTF-8 are refused', async (t) => {
  const before = (await adminRaw('GET', '/admin/users?limit=1000')).body.users.length
  refused(t, await srv.admin('POST', '/admin/users', { username: 'x\u0000y', password: 'a good password' }), /body\/username contains a NUL/)
  refused(t, await srv.admin('POST', '/admin/users', { username: 'x\ud800y', password: 'a good password' }), /body\/username contains an unpaired UTF-16 surrogate/)
  refused(t, await srv.admin('POST', '/admin/users', { username: 'x\udc00', password: 'a good password' }), /unpaired UTF-16 surrogate/)
  refused(t, await srv.admin('POST', '/admin/users', { username: 'mallory', password: 'a good \ud800 password' }), /body\/password contains an unpaired/, 'a good')
  refused(t, await srv.admin('POST', '/admin/users', { username: 'mallory', password: 'a good \u0000 password' }), /body\/password contains a NUL/)
  refused(t, await srv.admin('POST', '/admin/users', { username: 'mallory', password: 'a good password', scopes: ['re\u0000ad'] }), /body\/scopes\/0 contains a NUL/)
  refused(t, await srv.admin('POST', '/admin/users', { ['user\u0000name']: 'x', password: 'a good password' }), /a property name in body contains a NUL/)
  refused(t, await adminRaw('POST', '/admin/users', bytes('{"username":"x', [0xff], 'y","password":"a good password"}')), /the request body is not valid UTF-8/)
  refused(t, await adminRaw('POST', '/admin/users', bytes('{"username":"x', [0xed, 0xa0, 0x80], 'y","password":"a good password"}')), /not valid UTF-8/)
  refused(t, await srv.admin('POST', `/admin/users/${userId}/password`, { password: 'a good \u0000 password' }), /body\/password contains a NUL/)
  t.equal((await adminRaw('GET', '/admin/users?limit=1000')).body.users.length, before, 'no user was written')

  const client = { grant_types: ['client_credentials'], scopes: ['read'] }
  refused(t, await srv.admin('POST', '/admin/clients', { ...client, name: 'x\u0000y' }), /body\/name contains a NUL/)
  refused(t, await srv.admin('POST', '/admin/clients', { ...client, name: 'x\ud800y' }), /body\/name contains an unpaired/)
  refused(t, await srv.admin('POST', '/admin/clients', { ...client, name: 'n', audiences: ['https://a.example/\u0000'] }), /body\/audiences\/0 contains a NUL/)
  assertOAuthError(t, await srv.admin('POST', '/admin/clients', { ...client, name: 'n', audiences: ['https://a.example/\u0001'] }), 400, 'invalid_request')
  refused(t, await srv.admin('PATCH', `/admin/users/${userId}`, { scopes: ['\ud800'] }), /body\/scopes\/0 contains an unpaired/)
  // A well-paired surrogate (an emoji) is ordinary text.
  const emoji = await srv.admin('POST', '/admin/clients', { ...client, name: 'rocket \ud83d\ude80' })
  t.equal(emoji.status, 201)
  t.equal(emoji.body.name, 'rocket \u{1f680}')
  t.equal((await srv.admin('GET', `/admin/clients/${emoji.body.client_id}`)).body.name, 'rocket \u{1f680}', 'stored as sent')
  await stillWorks(t)
})

t.test('an over-long admin bearer token is invalid_request', async (t) => {
  refused(t, await srv.admin('GET', '/admin/keys', undefined, 'a'.repeat(9 * 1024)), /the access token is too long \(at most 8192 bytes\)/)
  assertOAuthError(t, await srv.admin('GET', '/admin/keys', undefined, 'a'.repeat(8192)), 401, 'invalid_token')
})

t.test('If-None-Match and Content-Type of any shape are answered, never a 5xx', async (t) => {
  const { headers } = await srv.get('/jwks')
  const etag = headers.get('etag')!
  for (const value of [`${'x,'.repeat(4000)}${etag}`, 'W/', ',,,', '*, "x"', `"${'\u00ff'.repeat(100)}"`, `W/${etag}`]) {
    const r = await srv.get('/jwks', { 'if-none-match': value })
    t.ok(r.status === 200 || r.status === 304, `status ${r.status}`)
  }
  for (const type of ['application/x-www-form-urlencoded; charset=latin1', 'application/json', 'text/plain', 'multipart/form-data; boundary=x', 'x', '/', ';;;', 'application/x-www-form-urlencoded;;']) {
    const r = await postRaw('/token', 'grant_type=client_credentials', { authorization: basic(...app.auth), 'content-type': type })
    t.ok(r.status === 200 || r.status === 400, `${type}: status ${r.status}`)
    if (r.status !== 200) assertOAuthError(t, r, 400, 'invalid_request')
  }
})
