// Random requests at every route of both listeners (fast-check): methods, paths with odd segments
// and query strings, Authorization headers (none, a real client's, the admin token, garbage),
// content types, If-None-Match, and bodies (forms, JSON, raw bytes, with NUL, control
// characters, unpaired surrogates, undecodable %XX, bytes that are not UTF-8, over-long values).
// Whatever comes in: never a 5xx, never a stack trace, SQL or internal message in the answer, every
// error a §5.2 JSON object with a known code; and afterwards the server still serves real flows.
//
// Seeded: the seed is printed first, and fast-check prints it again with the failing case.
// FUZZ_SEED=<seed> repeats a run, FUZZ_RUNS=<n> changes its length.
import t from 'tap'
import fc from 'fast-check'
import { ADMIN_ID, ADMIN_SECRET, basic, startTestServer } from '../helpers/server.js'

// Every request comes from 127.0.0.1: with the default budgets the throttles would soon refuse
// the real flows the test makes at the end, which is the throttle tests' business, not this one's.
const srv = await startTestServer(t, {
  LOGIN_FREE_FAILURES: '1000',
  LOGIN_ADDRESS_FAILURES: '1000000',
  CLIENT_AUTH_FAILURES: '1000000',
  CLIENT_AUTH_ADDRESS_FAILURES: '1000000',
})
const API = 'https://api.example'
const app = await srv.createClient({ audiences: [API] })
const userId = await srv.createUser('fuzzy', 'fuzzy password')
// What the random admin calls may change or delete, so that `app` and `fuzzy` keep serving.
const victim = await srv.createClient()
const victimUserId = await srv.createUser('victim', 'victim password')
const adminToken = await srv.adminToken()
const issued = await srv.post('/token', { grant_type: 'password', username: 'fuzzy', password: 'fuzzy password' }, app.auth)
const etag = (await srv.get('/jwks')).headers.get('etag')!

const KNOWN_ERRORS = new Set([
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'invalid_target',
  'invalid_token',
  'insufficient_scope',
  'not_found',
  'conflict',
  'slow_down',
])
// What must never reach a client: a stack frame, a source or module path, SQL or a database's
// message, a JavaScript error name, fastify's internal codes, our own 500 description.
const LEAK =
  /\bat \S+ \(|\bat (file|node):|node_modules|\.[jt]s:\d+|\bselect\b[^"]*\bfrom\b|\binsert into\b|\bsyntax error\b|invalid byte sequence|violates|\b(Type|Range|Syntax|Reference)Error\b|FST_ERR|ECONN|internal error|\bpglite\b|\bkysely\b/i

// Pieces of text: mostly printable ASCII, with the characters that break things mixed in.
const nasty = fc.constantFrom('\0', '\t', '\n', '\r', '\x01', '\x7f', '\ud800', '\udfff', '%', '+', '&', '=', ';', ':', '"', '\\', '/', '?', '#', ' ', 'é', 'e\u0301', '\ufffd', '\u{1f600}')
const char = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 2, arbitrary: nasty },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)) },
)
const text = fc.array(char, { maxLength: 24 }).map((cs) => cs.join(''))
// Text that passes the checks, so that it gets as far as the database.
const cleanText = fc.string({ unit: fc.oneof(fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), fc.constantFrom('é', 'ß', 'Ω', '\u{1f600}')), minLength: 1, maxLength: 24 })
const long = fc.tuple(text, fc.integer({ min: 40, max: 1200 })).map(([s, n]) => (s === '' ? 'a' : s).repeat(n).slice(0, 10_000))
const real = fc.constantFrom(
  app.id,
  app.secret,
  userId,
  'fuzzy',
  'fuzzy password',
  issued.body.access_token as string,
  issued.body.refresh_token as string,
  adminToken,
  'read',
  'read write',
  API,
  'password',
  'client_credentials',
  'refresh_token',
  '',
)
const value = fc.oneof({ weight: 3, arbitrary: text }, { weight: 3, arbitrary: cleanText }, { weight: 3, arbitrary: real }, { weight: 1, arbitrary: long })

/** `arb` one time in `n`, else null. */
const sometimes = <T>(arb: fc.Arbitrary<T>, n: number) => fc.oneof({ weight: n - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb })

/** Percent-encodes every byte but the unreserved ones (a lone surrogate becomes U+FFFD's bytes). */
const encode = (s: string) =>
  [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9\-._~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('')
const brokenEscape = fc.constantFrom('%FF', '%C3', '%E2%82', '%ED%A0%80', '%C0%AF', '%zz', '%', '%0', '%00', '%09')
const rawBytes = fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b))

const formName = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('grant_type', 'username', 'password', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type', 'scope', 'resource', 'token', 'token_type_hint', 'refresh_token') },
  { weight: 1, arbitrary: text },
)
const formPart = fc.tuple(formName, value).map(([name, v]) => `${encode(name)}=${encode(v)}`)
const formBody = fc
  .tuple(fc.array(formPart, { maxLength: 8 }), sometimes(brokenEscape, 6))
  .map(([parts, broken]) => Buffer.from(parts.join('&') + (broken ?? '')))

const jsonKey = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('name', 'grant_types', 'scopes', 'audiences', 'resource_identifiers', 'access_token_ttl', 'refresh_token_ttl', 'username', 'password', 'disabled', 'grace_seconds') },
  { weight: 1, arbitrary: text },
)
const { json } = fc.letrec((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    value,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('json'), { maxLength: 4 }),
    fc.dictionary(jsonKey, tie('json'), { maxKeys: 4 }),
  ),
}))
// Shapes the admin API accepts, with odd strings in them, so that writes reach the database.
const plausibleAdminBody = fc.oneof(
  fc.record({ name: value, grant_types: fc.subarray(['password', 'client_credentials', 'refresh_token'], { minLength: 1 }), scopes: fc.array(value, { maxLength: 3 }), audiences: fc.array(value, { maxLength: 2 }) }),
  fc.record({ username: value, password: fc.oneof(value, fc.constant('a fuzzed password'), fc.constant('a fuzzed password')) }),
  fc.record({ scopes: fc.array(value, { maxLength: 3 }) }),
)
const jsonBody = fc.oneof(fc.dictionary(jsonKey, json, { maxKeys: 6 }), json, plausibleAdminBody).map((v) => Buffer.from(JSON.stringify(v) ?? 'null'))
const body = fc.oneof(
  formBody,
  jsonBody,
  rawBytes,
  // Valid text with bytes that are not UTF-8 spliced in.
  fc.tuple(fc.oneof(formBody, jsonBody), rawBytes, fc.nat()).map(([b, raw, at]) => Buffer.concat([b.subarray(0, at % (b.length + 1)), raw, b.subarray(at % (b.length + 1))])),
)

const ROUTES = [
  '/token',
  '/introspect',
  '/revoke',
  '/jwks',
  '/.well-known/oauth-authorization-server',
  '/healthz',
  '/readyz',
  '/admin/clients',
  '/admin/clients/:',
  '/admin/clients/:/secret',
  '/admin/clients/:/revoke-tokens',
  '/admin/users',
  '/admin/users/:',
  '/admin/users/:/password',
  '/admin/users/:/revoke-tokens',
  '/admin/users/:/lockout',
  '/admin/keys',
  '/admin/keys/rotate',
  '/admin/audit',
  '/metrics',
  '/openapi.json',
  '/docs',
  '/docs/:',
  '/docs/static/:',
  '/:',
  '/',
]
const segment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(victim.id, victimUserId, 'x') },
  { weight: 3, arbitrary: fc.oneof(text, cleanText, long).map((v) => encode(v).slice(0, 2000)) },
  { weight: 1, arbitrary: brokenEscape },
)
// Never immediate=true: an emergency rotation would end the admin token and with it most of the run.
const queryValue = fc.oneof(
  { weight: 4, arbitrary: value.map(encode) },
  { weight: 1, arbitrary: brokenEscape },
  { weight: 3, arbitrary: fc.constantFrom('1', '1000', '0', '-1', 'false', userId, 'fuzzy') },
)
const query = fc
  .array(fc.tuple(fc.oneof(fc.constantFrom('username', 'after', 'limit', 'immediate'), text.map(encode)), queryValue), { maxLength: 3 })
  .map((q) => (q.length === 0 ? '' : `?${q.map(([k, v]) => `${k}=${v}`).join('&')}`))
const path = fc.tuple(fc.constantFrom(...ROUTES), segment, query).map(([route, s, q]) => `${route.replace(':', s)}${q}`)

// Header values as fetch can send them: Latin-1 without NUL, CR or LF.
const headerText = fc
  .array(fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff }), fc.constant(0x09)), { maxLength: 60 })
  .map((cs) => String.fromCharCode(...cs).trim())
const authorization = fc.option(
  fc.oneof(
    fc.constant(basic(...app.auth)),
    fc.constant(`Bearer ${adminToken}`),
    fc.constant(`Bearer ${issued.body.access_token}`),
    fc.tuple(value, value).map(([id, secret]) => `Basic ${Buffer.from(`${encode(id)}:${encode(secret)}`).toString('base64')}`),
    fc.tuple(text, text).map(([id, secret]) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`),
    rawBytes.map((b) => `Basic ${b.toString('base64')}`),
    headerText.map((h) => `Bearer ${h}`),
    headerText,
    fc.constant(`Bearer ${'A'.repeat(9000)}`),
  ),
  { freq: 4 },
)
const contentType = fc.option(
  fc.oneof(
    fc.constantFrom(
      'application/x-www-form-urlencoded',
      'application/x-www-form-urlencoded; charset=utf-8',
      'application/x-www-form-urlencoded; charset=latin1',
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'multipart/form-data; boundary=x',
      'application/octet-stream',
    ),
    headerText,
  ),
  { freq: 5 },
)
const ifNoneMatch = sometimes(fc.oneof(fc.constant(etag), fc.constant('*'), headerText), 3)
const extraHeader = sometimes(fc.tuple(fc.constantFrom('accept', 'accept-encoding', 'content-encoding', 'x-forwarded-for', 'cookie', 'origin', 'dpop'), headerText), 3)

interface Request {
  listener: 'public' | 'admin'
  method: string
  path: string
  authorization: string | null
  contentType: string | null
  ifNoneMatch: string | null
  extraHeader: [string, string] | null
  body: Buffer | null
}

const anyRequest: fc.Arbitrary<Request> = fc.record({
  listener: fc.constantFrom<'public' | 'admin'>('public', 'admin'),
  method: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
  path,
  authorization,
  contentType,
  ifNoneMatch,
  extraHeader,
  body: fc.option(body, { freq: 5 }),
})

// Requests that pass the first checks (the right method, content type and credentials) with odd
// values inside, so that most of them get as far as the database.
const optional = (arb: fc.Arbitrary<string>) => fc.option(arb, { nil: undefined })
const publicCall: fc.Arbitrary<[string, Record<string, string | undefined>]> = fc.oneof(
  fc.tuple(fc.constant('/token'), fc.record({ grant_type: fc.constant('password'), username: fc.oneof(value, fc.constant('fuzzy')), password: value, scope: optional(value) })),
  fc.tuple(fc.constant('/token'), fc.record({ grant_type: fc.constant('client_credentials'), scope: optional(value), resource: optional(value) })),
  fc.tuple(fc.constant('/token'), fc.record({ grant_type: fc.constant('refresh_token'), refresh_token: value, scope: optional(value) })),
  fc.tuple(fc.constant('/token'), fc.record({ grant_type: fc.oneof(value, fc.constant('client_credentials')), client_id: value, client_secret: value })),
  fc.tuple(fc.constantFrom('/introspect', '/revoke'), fc.record({ token: value, token_type_hint: optional(value) })),
)
const publicRequest: fc.Arbitrary<Request> = fc
  .record({
    call: publicCall,
    broken: sometimes(brokenEscape, 6),
    authorization: fc.oneof({ weight: 6, arbitrary: fc.constant(basic(...app.auth)) }, { weight: 1, arbitrary: authorization }),
  })
  .map(({ call: [path, fields], broken, authorization }) => ({
    listener: 'public',
    method: 'POST',
    path,
    authorization,
    contentType: 'application/x-www-form-urlencoded',
    ifNoneMatch: null,
    extraHeader: null,
    body: Buffer.from(
      Object.entries(fields)
        .flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${encode(v)}`]))
        .join('&') + (broken ?? ''),
    ),
  }))
const adminId = fc.oneof(fc.constantFrom(victim.id, victimUserId), segment)
const adminCall: fc.Arbitrary<[string, string, string]> = fc.oneof(
  fc.tuple(fc.constantFrom('GET', 'POST'), fc.constantFrom('/admin/clients', '/admin/users'), query),
  fc.tuple(fc.constantFrom('GET', 'PATCH', 'DELETE'), fc.constantFrom('/admin/clients/', '/admin/users/'), adminId),
  fc.tuple(fc.constant('POST'), fc.constantFrom('/admin/clients/', '/admin/users/'), adminId.map((id) => `${id}/revoke-tokens`)),
  fc.tuple(fc.constant('POST'), fc.constant('/admin/clients/'), adminId.map((id) => `${id}/secret`)),
  fc.tuple(fc.constant('POST'), fc.constant('/admin/users/'), adminId.map((id) => `${id}/password`)),
)
const adminRequest: fc.Arbitrary<Request> = fc
  .record({
    call: adminCall,
    authorization: fc.option(fc.constant(`Bearer ${adminToken}`), { freq: 10 }),
    body: fc.oneof(plausibleAdminBody.map((v) => Buffer.from(JSON.stringify(v))), jsonBody),
  })
  .map(({ call: [method, prefix, rest], authorization, body }) => ({
    listener: 'admin',
    method,
    path: `${prefix}${rest}`,
    authorization,
    contentType: 'application/json',
    ifNoneMatch: null,
    extraHeader: null,
    body,
  }))

const request = fc.oneof(anyRequest, publicRequest, adminRequest)

interface Answer {
  status: number
  headers: Headers
  text: string
}

async function send(req: Request): Promise<Answer> {
  const headers: Record<string, string> = {}
  if (req.authorization !== null) headers['authorization'] = req.authorization
  if (req.contentType !== null) headers['content-type'] = req.contentType
  if (req.ifNoneMatch !== null) headers['if-none-match'] = req.ifNoneMatch
  if (req.extraHeader !== null) headers[req.extraHeader[0]] = req.extraHeader[1]
  const withBody = req.body !== null && req.method !== 'GET' && req.method !== 'HEAD'
  const base = req.listener === 'public' ? srv.url : srv.adminUrl
  const res = await fetch(`${base}${req.path}`, {
    method: req.method,
    headers,
    ...(withBody && { body: req.body! }),
    signal: AbortSignal.timeout(15_000),
  })
  return { status: res.status, headers: res.headers, text: await res.text() }
}

/** Throws, saying what is wrong, unless the answer is a known error or a normal success. */
function check(req: Request, r: Answer): void {
  const fail = (why: string) => {
    throw new Error(`${why}: ${r.status} ${r.text.slice(0, 300)}`)
  }
  if (r.status >= 500) fail('a 5xx')
  if (LEAK.test(r.text)) fail('an internal detail in the answer')
  const type = r.headers.get('content-type') ?? ''
  if (r.status >= 400) {
    if (r.headers.get('cache-control') !== 'no-store') fail('an error without Cache-Control: no-store')
    if (!type.startsWith('application/json')) fail('an error that is not JSON')
    if (req.method === 'HEAD') return
    let error: unknown
    try {
      error = JSON.parse(r.text)
    } catch {
      fail('an error body that does not parse')
    }
    if (typeof error !== 'object' || error === null || Array.isArray(error)) fail('an error that is not a JSON object')
    const e = error as Record<string, unknown>
    if (typeof e['error'] !== 'string' || !KNOWN_ERRORS.has(e['error'])) fail('an unknown error code')
    if (e['error_description'] !== undefined && typeof e['error_description'] !== 'string') fail('a description that is not a string')
    if (Object.keys(e).some((k) => k !== 'error' && k !== 'error_description')) fail('an error with other fields')
    return
  }
  if (r.text === '') return
  if (type.startsWith('text/plain') && req.path.startsWith('/metrics')) return
  // The API reference page and its files (HTML, scripts, styles, images).
  if (req.listener === 'admin' && req.path.startsWith('/docs')) return
  if (!/^application\/(json|jwk-set\+json)/.test(type)) fail('a success that is not JSON')
  try {
    JSON.parse(r.text)
  } catch {
    fail('a success body that does not parse')
  }
}

const seed = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31))
// About 10 s on either backend on a 2-core machine.
const numRuns = Number(process.env['FUZZ_RUNS'] ?? 2500)

t.test('random requests never crash the server or leak its insides', async (t) => {
  t.comment(`fast-check seed ${seed}, ${numRuns} runs (FUZZ_SEED=${seed} repeats this run)`)
  const started = Date.now()
  const statuses = new Map<number, number>()
  const property = fc.asyncProperty(request, async (req) => {
    const r = await send(req)
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
    check(req, r)
  })
  try {
    await fc.assert(property, { seed, numRuns })
    t.pass(`${numRuns} random requests answered well`)
  } catch (err) {
    t.fail((err as Error).message)
  }
  t.comment(`${((Date.now() - started) / 1000).toFixed(1)} s; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`)
  // Enough requests got past the checks to reach the database for the run to mean something.
  t.ok([...statuses.keys()].some((s) => s < 300), 'some requests succeeded')
})

t.test('afterwards the server still serves real flows', async (t) => {
  const fresh = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET])
  t.equal(fresh.status, 200, 'an admin token')
  const c = await srv.admin('POST', '/admin/clients', { name: 'after', grant_types: ['client_credentials', 'password'], scopes: ['read'] }, fresh.body.access_token)
  t.equal(c.status, 201)
  const auth: [string, string] = [c.body.client_id, c.body.client_secret]
  const u = await srv.admin('POST', '/admin/users', { username: 'after-fuzz', password: 'after the storm' }, fresh.body.access_token)
  t.equal(u.status, 201)

  const cc = await srv.post('/token', { grant_type: 'client_credentials' }, auth)
  t.equal(cc.status, 200, 'a client_credentials grant')
  const pw = await srv.post('/token', { grant_type: 'password', username: 'after-fuzz', password: 'after the storm' }, auth)
  t.equal(pw.status, 200, 'a password grant')
  const active = await srv.post('/introspect', { token: pw.body.access_token }, auth)
  t.match(active.body, { active: true, sub: u.body.id }, 'an introspection')
})
