// POST /admin/users/import: users brought in with the hashes the old system stored (vectors from
// each algorithm's reference and from the tools that make them), each able to log in through the
// password grant, after which its hash is the server's own argon2id; bad lines refused with their
// reason without stopping the others; dry_run writes nothing; a long import in flat memory.
import { request, type IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { ADMIN_ID, ADMIN_SECRET, assertOAuthError, startTestServer } from '../helpers/server.js'

const srv = await startTestServer(t)
const app = await srv.createClient({ grant_types: ['password'] })
const login = (username: string, password: string) => srv.post('/token', { grant_type: 'password', username, password }, app.auth)

async function importLines(
  body: string | Buffer | AsyncIterable<string>,
  query = '',
  lastOnly = false,
): Promise<{ status: number; type: string | null; lines: any[]; count: number }> {
  const token = await srv.adminToken()
  // node:http, with the body piped: the sender holds no more than the server has taken.
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = request(
      `${srv.adminUrl}/admin/users/import${query}`,
      { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' } },
      resolve,
    )
    req.on('error', reject)
    Readable.from(typeof body === 'string' || Buffer.isBuffer(body) ? [body] : body).pipe(req)
  })
  // Read as it comes; with lastOnly, only the last line is kept (and the lines counted).
  let count = 0
  let rest = ''
  const lines: any[] = []
  const decoder = new TextDecoder()
  for await (const chunk of res as AsyncIterable<Buffer>) {
    const parts = (rest + decoder.decode(chunk, { stream: true })).split('\n')
    rest = parts.pop()!
    for (const l of parts) {
      count++
      if (lastOnly) lines[0] = JSON.parse(l)
      else lines.push(JSON.parse(l))
    }
  }
  return { status: res.statusCode!, type: res.headers['content-type'] ?? null, lines, count }
}

const storedHash = async (username: string) =>
  (await srv.tessera.db.selectFrom('users').select('password_hash').where('username', '=', username).executeTakeFirstOrThrow()).password_hash

const OURS = /^\$argon2id\$v=19\$m=19456,p=1,t=2\$/

// [username, password, hash, where the hash comes from]
const VECTORS: [string, string, string, string][] = [
  ['bcrypt-2a', 'U*U', '$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW', "crypt_blowfish's test vectors (Openwall)"],
  ['bcrypt-2b', 'passlib bcrypt pw', '$2b$05$29GXLMBVys8zfrf6Il6pa.EIXelGMAybZQQga6ps7eLb8utBW1rZG', 'python3-passlib 1.7.4 (Debian)'],
  ['bcrypt-2y', 'htpasswd secret 1', '$2y$05$uM5VVohfn8hTzTeQr2pBuOIbsdUG4vihlpu3rC2mUU/f.xKggJVGK', "Debian apache2-utils' htpasswd -nbB -C 5"],
  ['argon2i', 'password', '$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA', 'phc-winner-argon2 src/test.c'],
  ['argon2id', 'password', '$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc', 'phc-winner-argon2 src/test.c'],
  [
    'scrypt-rfc',
    'password',
    `$scrypt$ln=10,r=8,p=16$${Buffer.from('NaCl').toString('base64')}$${Buffer.from(
      'fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640',
      'hex',
    ).toString('base64')}`,
    'RFC 7914 §12, in PHC form',
  ],
  ['scrypt-passlib', 'passlib scrypt pw', '$scrypt$ln=10,r=8,p=1$rxVCiBGilJKyNoawljImpA$JitMl+qq5tAN4bTnaWxfakQGaoM1lYEvi4buCTTSKyc', 'python3-passlib'],
  [
    'pbkdf2-sha1-rfc',
    'password',
    `$pbkdf2$4096$${Buffer.from('salt').toString('base64').replace(/=+$/, '')}$${Buffer.from('4b007901b765489abead49d926f721d065a429c1', 'hex').toString('base64').replace(/=+$/, '')}`,
    'RFC 6070, in passlib form',
  ],
  ['pbkdf2-sha1', 'passlib sha1 pw', '$pbkdf2$131000$XqvVek/JGSNkzLl3LgWg9A$EW8HqhrzLPK5GSk4qdBpoWZH2gI', 'python3-passlib'],
  ['pbkdf2-sha256', 'passlib sha256 pw', '$pbkdf2-sha256$29000$ASAkhDBGqLUWwnjPmRNCSA$WLEu1YyDLXmjGsaCqk6s5dVLXWuVsBUjk74ctf3Cxhs', 'python3-passlib'],
  [
    'pbkdf2-sha512',
    'passlib sha512 pw',
    '$pbkdf2-sha512$25000$P.ecs/ae0xrD2HvP.X/vHQ$G6E0GDVZvFTX1.8MDrhqf8gJMKZS.vCsYh7i0qbVs/vio5vA3lOzOSY9LZY0aglOUkyjNIIc..jpIu0vzS8pXA',
    'python3-passlib',
  ],
  ['django-sha256', 'django sha256 pw', 'pbkdf2_sha256$600000$TRFt03kB7fNe$A4l1ih81qN7AB7wn8VL5ISlR1CGjqQ9I2HzodeHJMJQ=', "Django's format, by passlib's django_pbkdf2_sha256"],
  ['django-sha1', 'django sha1 pw', 'pbkdf2_sha1$10000$axIvrPhfnhZU$9NEA1CpqEbmHrUtJjFzz8J7MU5c=', "Django's format, by passlib's django_pbkdf2_sha1"],
]

t.test('each format is imported, logs in at the password grant, and is then the server’s own argon2id', async (t) => {
  const body = VECTORS.map(([username, , password_hash]) => JSON.stringify({ username, password_hash, scopes: ['read'] })).join('\n') + '\n'
  const r = await importLines(body)
  t.equal(r.status, 200)
  t.equal(r.type, 'application/x-ndjson')
  t.equal(r.lines.length, VECTORS.length + 1)
  VECTORS.forEach(([username], i) => t.same(r.lines[i], { line: i + 1, result: 'created', id: r.lines[i].id, username }, username))
  t.same(r.lines.at(-1), { summary: { created: VECTORS.length, exists: 0, refused: 0, dry_run: false } })

  for (const [username, password, hash, source] of VECTORS) {
    t.equal(await storedHash(username), hash, `${username}: stored as imported`)
    const wrong = await login(username, `${password}x`)
    assertOAuthError(t, wrong, 400, 'invalid_grant')
    t.equal(await storedHash(username), hash, `${username}: a wrong password changes nothing`)
    const ok = await login(username, password)
    t.equal(ok.status, 200, `${username} (${source}) logs in`)
    t.equal(ok.body.scope, 'read')
    const now = await storedHash(username)
    t.match(now, OURS, `${username}: rehashed`)
    t.equal((await login(username, password)).status, 200, `${username}: logs in with the new hash`)
    t.equal(await storedHash(username), now, `${username}: the server's own hash is kept`)
  }
})

t.test('plain passwords are hashed under the policy; ids, scopes and disabled are kept', async (t) => {
  const id = '0e6b8a43-1b53-4c70-9f0e-2f7a5d3f9a11'
  const r = await importLines(
    [
      JSON.stringify({ username: 'plain-1', password: 'a plain password 1', id, scopes: null }),
      JSON.stringify({ username: 'plain-2', password: 'a plain password 2', disabled: true }),
    ].join('\r\n'),
  )
  t.same(r.lines[0], { line: 1, result: 'created', id, username: 'plain-1' })
  t.equal(r.lines[1].result, 'created')
  t.match(await storedHash('plain-1'), OURS)
  t.equal((await login('plain-1', 'a plain password 1')).status, 200)
  const u2 = await srv.admin('GET', `/admin/users/${r.lines[1].id}`)
  t.equal(u2.body.disabled, true)
  assertOAuthError(t, await login('plain-2', 'a plain password 2'), 400, 'invalid_grant')
})

t.test('bad lines are refused with their reason; the others go on', async (t) => {
  await srv.createUser('taken', 'a long enough password')
  const bcrypt13 = '$2b$13$' + 'C'.repeat(53)
  const lines = [
    'not json',
    JSON.stringify({ password_hash: VECTORS[0]![2] }),
    JSON.stringify({ username: 'both', password: 'a plain password', password_hash: VECTORS[0]![2] }),
    JSON.stringify({ username: 'neither' }),
    JSON.stringify({ username: 'unknown-format', password_hash: '$1$abc$def' }),
    JSON.stringify({ username: 'too-costly', password_hash: bcrypt13 }),
    JSON.stringify({ username: 'too-many-rounds', password_hash: 'pbkdf2_sha256$5000000$salt$A4l1ih81qN7AB7wn8VL5ISlR1CGjqQ9I2HzodeHJMJQ=' }),
    JSON.stringify({ username: 'common', password: 'password1' }),
    JSON.stringify({ username: 'TAKEN', password_hash: VECTORS[0]![2] }),
    JSON.stringify({ username: 'extra', password_hash: VECTORS[0]![2], admin: true }),
    JSON.stringify({ username: 'long', password_hash: VECTORS[0]![2], pad: 'x'.repeat(70_000) }),
    JSON.stringify({ username: 'fine', password_hash: VECTORS[0]![2] }),
  ]
  const r = await importLines(lines.join('\n'))
  t.equal(r.status, 200)
  const refused = (line: number, error_description: string) => ({ line, result: 'refused', error: 'invalid_request', error_description })
  t.same(r.lines, [
    refused(1, 'the line is not JSON'),
    refused(2, "line must have required property 'username'"),
    refused(3, 'give either password or password_hash'),
    refused(4, 'give either password or password_hash'),
    refused(5, r.lines[4].error_description),
    refused(6, 'password_hash: bcrypt cost is above the import limit (12)'),
    refused(7, 'password_hash: PBKDF2 iterations is above the import limit (1000000)'),
    refused(8, 'password is one of the 10,000 most common passwords: choose one that is harder to guess'),
    { line: 9, result: 'exists', username: 'TAKEN' },
    refused(10, 'line must NOT have additional properties'),
    refused(11, 'the line is longer than 65536 bytes'),
    { line: 12, result: 'created', id: r.lines[11].id, username: 'fine' },
    { summary: { created: 1, exists: 1, refused: 10, dry_run: false } },
  ])
  t.match(r.lines[4].error_description, /^password_hash: unknown hash format/)
  const names = (await srv.tessera.db.selectFrom('users').select('username').execute()).map((u) => u.username)
  for (const n of ['both', 'neither', 'unknown-format', 'too-costly', 'too-many-rounds', 'common', 'extra', 'long']) t.notOk(names.includes(n), n)
})

t.test('a line that is not UTF-8 is refused, and the next is imported', async (t) => {
  const r = await importLines(
    Buffer.concat([Buffer.from('{"username":"bad-\xff'), Buffer.from([0xff]), Buffer.from(`"}\n${JSON.stringify({ username: 'after-bad', password_hash: VECTORS[0]![2] })}\n`)]),
  )
  t.same(r.lines, [
    { line: 1, result: 'refused', error: 'invalid_request', error_description: 'the line is not valid UTF-8' },
    { line: 2, result: 'created', id: r.lines[1].id, username: 'after-bad' },
    { summary: { created: 1, exists: 0, refused: 1, dry_run: false } },
  ])
})

t.test('dry_run validates every line and writes nothing', async (t) => {
  const before = await srv.tessera.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
  const r = await importLines(
    [
      JSON.stringify({ username: 'dry-1', password_hash: VECTORS[0]![2] }),
      JSON.stringify({ username: 'dry-2', password: 'a plain password 3' }),
      JSON.stringify({ username: 'taken', password_hash: VECTORS[0]![2] }),
      JSON.stringify({ username: 'DRY-1', password_hash: VECTORS[0]![2] }),
      JSON.stringify({ username: 'dry-3', password: 'short' }),
    ].join('\n'),
    '?dry_run=true',
  )
  t.same(r.lines, [
    { line: 1, result: 'would_create', id: r.lines[0].id, username: 'dry-1' },
    { line: 2, result: 'would_create', id: r.lines[1].id, username: 'dry-2' },
    { line: 3, result: 'exists', username: 'taken' },
    { line: 4, result: 'exists', username: 'DRY-1' },
    { line: 5, result: 'refused', error: 'invalid_request', error_description: 'password is too short: it must have at least 8 characters' },
    { summary: { created: 2, exists: 2, refused: 1, dry_run: true } },
  ])
  const after = await srv.tessera.db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
  t.equal(Number(after.n), Number(before.n))
})

t.test('refused as the admin API refuses: no token, not ndjson', async (t) => {
  const res = await fetch(`${srv.adminUrl}/admin/users/import`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: '{}' })
  t.equal(res.status, 401)
  const viaClient = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET])
  const json = await fetch(`${srv.adminUrl}/admin/users/import`, {
    method: 'POST',
    headers: { authorization: `Bearer ${viaClient.body.access_token}`, 'content-type': 'application/json' },
    body: '{"username":"x"}',
  })
  t.equal(json.status, 400)
  t.equal(json.headers.get('cache-control'), 'no-store')
  t.equal(((await json.json()) as { error: string }).error, 'invalid_request')
})

t.test('50,000 lines (100 MiB) stream through in flat memory', async (t) => {
  const COUNT = Number(process.env['IMPORT_COUNT'] ?? 50_000)
  // Each line padded to 2 KiB with white space: 100 MiB in, which a server holding the body (or
  // its lines, or its results) would show in its memory.
  const pad = ' '.repeat(2048)
  async function* lines() {
    for (let i = 0; i < COUNT; i += 500) {
      let chunk = ''
      for (let j = i; j < i + 500; j++) chunk += `{"username":"bulk-${j}",${pad}"password_hash":"${VECTORS[0]![2]}"}\n`
      yield chunk
    }
  }
  // Live memory, after a full collection, sampled through the import: what the process holds, not
  // the garbage V8 has yet to collect (which RSS would show, as noise). Server and test share it.
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const live = () => {
    gc()
    const m = process.memoryUsage()
    if (process.env['IMPORT_DEBUG']) console.error(Math.round(m.heapUsed / 2 ** 20), Math.round(m.external / 2 ** 20), Math.round(m.arrayBuffers / 2 ** 20))
    // The heap only: PGlite's WebAssembly memory (in external) grows with the rows it stores.
    return m.heapUsed
  }
  const before = live()
  let peak = before
  const timer = setInterval(() => (peak = Math.max(peak, live())), 200)
  const started = Date.now()
  const r = await importLines(lines(), '', true)
  clearInterval(timer)
  t.same(r.lines.at(-1), { summary: { created: COUNT, exists: 0, refused: 0, dry_run: false } })
  t.equal(r.count, COUNT + 1)
  const grown = (peak - before) / 2 ** 20
  t.ok(grown < 40, `live memory grew by ${grown.toFixed(0)} MiB for 100 MiB streamed, in ${Date.now() - started} ms`)
  t.equal((await login(`bulk-${COUNT - 1}`, 'U*U')).status, 200)
})

t.test('admin calls that hash wait for a place in a full hash queue; logins still get 503 at once', async (t) => {
  const tight = await startTestServer(t, { HASH_CONCURRENCY: '1', HASH_QUEUE: '1' })
  const client = await tight.createClient({ grant_types: ['password'] })
  await tight.createUser('olga', 'olga password 1')
  await tight.adminToken()
  // Both places taken from here, by the address the login comes from (so it is no newcomer with a
  // place kept for it): the queue is full until they are left.
  const held = [tight.tessera.hasher.enter('127.0.0.1'), tight.tessera.hasher.enter('127.0.0.1')]
  const queue = (tight.tessera.hasher as unknown as { queue: { admissions: unknown[] } }).queue
  assertOAuthError(t, await tight.post('/token', { grant_type: 'password', username: 'olga', password: 'olga password 1' }, client.auth), 503, 'temporarily_unavailable')
  let answered = false
  const creating = tight.admin('POST', '/admin/users', { username: 'pavel', password: 'pavel password 1' }).finally(() => (answered = true))
  while (queue.admissions.length < 1 && !answered) await new Promise((resolve) => setTimeout(resolve, 5))
  t.notOk(answered, 'the admin call waits instead of a 503')
  held[0]!.leave()
  t.equal((await creating).status, 201, 'and is answered once a place is free')
  held[1]!.leave()
  t.equal((await tight.post('/token', { grant_type: 'password', username: 'pavel', password: 'pavel password 1' }, client.auth)).status, 200)
})
