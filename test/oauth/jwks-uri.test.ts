// The jwks_uri fetch's guard as deployed (ALLOW_INSECURE_JWKS_URI off), judged without fetching
// anything: a public address passes, every special-purpose range in every spelling does not, and
// a name is judged by what it resolves to (through an injected resolver). Then, against a local
// key server (the guard lifted, as only tests may), the rest of the fetch's promises: the content
// type, the 64 KiB cap, the 3 s timeout and the failure cool-down. Issue 15 items 5 and 13.
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { LookupAddress } from 'node:dns'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { isPublicAddress, publicOnlyLookup, refusedJwksUri, type Resolver } from '../../src/clients/jwks-uri.js'
import { assertOAuthError, startTestServer, type TestServer } from '../helpers/server.js'
import { assertion, assertionParams, keyPair, type KeyPair } from '../helpers/jwt-clients.js'

const refused = (uri: string) => refusedJwksUri(uri, false)

t.test('public addresses pass the check, as a URL would name them and as a resolver answers', async (t) => {
  for (const address of ['8.8.8.8', '1.1.1.1', '93.184.216.34', '223.255.255.255', '2606:4700:4700::1111', '2001:4860:4860::8888', '2a00:1450::1', '::ffff:8.8.8.8']) {
    t.equal(isPublicAddress(address), true, address)
  }
  for (const uri of [
    'https://8.8.8.8/jwks',
    'https://134744072/jwks', // 8.8.8.8 in decimal
    'https://0x08080808/jwks',
    'https://010.010.010.010/jwks', // octal
    'https://8.8.2056/jwks', // short form
    'https://[2606:4700:4700::1111]/jwks',
    'https://[::ffff:8.8.8.8]/jwks',
    'https://keys.example.com/jwks', // a name: judged when it is resolved
  ]) {
    t.equal(refused(uri), undefined, uri)
  }
})

/** Each IPv4 address in the spellings a URL accepts for it. */
function v4Spellings(a: string): string[] {
  const o = a.split('.').map(Number)
  const n = ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0
  const hex = (v: number) => v.toString(16)
  return [
    a,
    String(n),
    `0x${hex(n)}`,
    `0X${hex(n).toUpperCase()}`,
    `0${n.toString(8)}`,
    o.map((x) => `0${x.toString(8)}`).join('.'),
    o.map((x) => `0x${hex(x)}`).join('.'),
    `${o[0]}.${(o[1]! << 16) | (o[2]! << 8) | o[3]!}`,
    `${o[0]}.${o[1]}.${(o[2]! << 8) | o[3]!}`,
    `${a}.`, // a trailing dot
    `[::ffff:${a}]`, // IPv4-mapped
    `[::ffff:${hex(n >>> 16)}:${hex(n & 0xffff)}]`,
    `[0:0:0:0:0:ffff:${a}]`,
    `[::ffff:0:${a}]`, // IPv4-translated
    `[::${a}]`, // IPv4-compatible
    `[64:ff9b::${a}]`, // NAT64
    `[64:ff9b:1::${a}]`,
    `[2002:${hex(n >>> 16)}:${hex(n & 0xffff)}::1]`, // 6to4
    `[2001:0:4136:e378:8000:63bf:${hex(~n >>> 16 & 0xffff)}:${hex(~n & 0xffff)}]`, // Teredo
  ]
}

// The IANA IPv4 and IPv6 special-purpose address registries (RFC 6890 and later), multicast, and
// the reserved space: the first and last address of each.
const V4_RANGES = [
  ['0.0.0.0', '0.255.255.255'],
  ['10.0.0.0', '10.255.255.255'],
  ['100.64.0.0', '100.127.255.255'],
  ['127.0.0.1', '127.255.255.255'],
  ['169.254.0.0', '169.254.255.255'],
  ['172.16.0.0', '172.31.255.255'],
  ['192.0.0.0', '192.0.0.255'],
  ['192.0.2.0', '192.0.2.255'],
  ['192.31.196.0', '192.31.196.255'],
  ['192.52.193.0', '192.52.193.255'],
  ['192.88.99.0', '192.88.99.255'],
  ['192.168.0.0', '192.168.255.255'],
  ['192.175.48.0', '192.175.48.255'],
  ['198.18.0.0', '198.19.255.255'],
  ['198.51.100.0', '198.51.100.255'],
  ['203.0.113.0', '203.0.113.255'],
  ['224.0.0.0', '239.255.255.255'],
  ['240.0.0.0', '255.255.255.255'],
]
const V6_RANGES = [
  ['::', '::1'],
  ['::2', '::ffff:ffff'],
  ['64:ff9b::', '64:ff9b::ffff:ffff'],
  ['64:ff9b:1::', '64:ff9b:1:ffff:ffff:ffff:ffff:ffff'],
  ['100::', '100::ffff:ffff:ffff:ffff'],
  ['100:0:0:1::', '100::1:ffff:ffff:ffff:ffff'],
  ['2001::', '2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['2001:db8::', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['2002::', '2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['2620:4f:8000::', '2620:4f:8000:ffff:ffff:ffff:ffff:ffff'],
  ['3fff::', '3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['5f00::', '5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['fc00::', 'fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['fe80::', 'febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['fec0::', 'feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['ff00::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  // Not yet allocated: outside 2000::/3 nothing is global unicast.
  ['4000::', 'fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
]

t.test('every special-purpose IPv4 range, in every spelling, is refused', async (t) => {
  const passed: string[] = []
  let checked = 0
  for (const range of V4_RANGES) {
    for (const address of range) {
      if (isPublicAddress(address)) passed.push(address)
      for (const host of v4Spellings(address)) {
        checked++
        if (refused(`https://${host}/jwks`) === undefined) passed.push(host)
        if (refused(`https://${host}:8443/.well-known/jwks.json`) === undefined) passed.push(`${host}:8443`)
      }
    }
  }
  t.same(passed, [], `none of ${checked} spellings passes`)
  const notUrls = V4_RANGES.flat().flatMap(v4Spellings).filter((host) => refused(`https://${host}/jwks`) === 'jwks_uri is not a URL')
  t.same(notUrls, [], 'each spelling is a URL (refused for its address, not its syntax)')
})

t.test('every special-purpose IPv6 range, in every spelling, is refused', async (t) => {
  const passed: string[] = []
  for (const range of V6_RANGES) {
    for (const address of range) {
      const spellings = [address, address.toUpperCase(), expand(address)]
      for (const a of spellings) {
        if (isPublicAddress(a)) passed.push(a)
        if (isPublicAddress(`${a}%eth0`)) passed.push(`${a}%eth0`)
        const why = refused(`https://[${a}]/jwks`)
        if (why === undefined || !why.startsWith('jwks_uri names a non-public address')) passed.push(`[${a}]: ${why}`)
      }
    }
  }
  // Zone ids are no part of a URL: such a jwks_uri is not one.
  for (const uri of ['https://[fe80::1%25eth0]/jwks', 'https://[fe80::1%eth0]/jwks']) if (refused(uri) === undefined) passed.push(uri)
  for (const odd of ['', 'localhost', '8.8.8', '::ffff:8.8.8.8.8', '1.2.3.256']) if (isPublicAddress(odd)) passed.push(`"${odd}"`)
  t.same(passed, [])
})

/** The full eight-group form of an IPv6 address. */
function expand(address: string): string {
  const [head, tail = ''] = address.split('::')
  const l = head === '' ? [] : head!.split(':')
  const r = tail === '' ? [] : tail.split(':')
  return (address.includes('::') ? [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r] : l).map((g) => g.padStart(4, '0')).join(':')
}

t.test('a name is judged by every address it resolves to (an injected resolver: nothing is looked up)', async (t) => {
  const resolving = (addresses: string[]): Resolver => (_host, _opts, callback) =>
    callback(null, addresses.map((address): LookupAddress => ({ address, family: address.includes(':') ? 6 : 4 })))
  const lookup = (addresses: string[]) =>
    new Promise<{ code: string | undefined; address: unknown }>((resolve) =>
      publicOnlyLookup(resolving(addresses))('keys.example.com', { all: true }, (err, address) => resolve({ code: err?.code, address })),
    )
  t.same(await lookup(['93.184.216.34']), { code: undefined, address: [{ address: '93.184.216.34', family: 4 }] })
  t.same(await lookup(['2606:4700:4700::1111']), { code: undefined, address: [{ address: '2606:4700:4700::1111', family: 6 }] })
  for (const answer of [['93.184.216.34', '10.0.0.1'], ['169.254.169.254'], ['::ffff:169.254.169.254'], ['fd00:ec2::254'], ['64:ff9b::a00:1'], []]) {
    t.equal((await lookup(answer)).code, 'ENOTPUBLIC', answer.join(', ') || 'no address')
  }
})

// From here on, against a key server on loopback: the guard lifted, as only tests may.
const srv = await startTestServer(t, { ALLOW_INSECURE_JWKS_URI: 'true', CLIENT_AUTH_FAILURES: '1000', CLIENT_AUTH_ADDRESS_FAILURES: '1000' })
const key = await keyPair('ES256', 'k1')

async function keyClient(s: TestServer, jwksUri: string): Promise<string> {
  const r = await s.admin('POST', '/admin/clients', {
    name: 'key client',
    grant_types: ['client_credentials'],
    scopes: ['read'],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks_uri: jwksUri,
  })
  if (r.status !== 201) throw new Error(`create client: ${r.status} ${r.text}`)
  return r.body.client_id
}

const authenticate = async (clientId: string, k: KeyPair = key) =>
  srv.post('/token', { grant_type: 'client_credentials', ...assertionParams(await assertion(k, clientId, srv.issuer, { kid: 'k1' })) })

/** A key server answering each request with `respond`, counting requests. */
async function keyServer(t: Test, respond: (res: ServerResponse) => void) {
  const state = { url: '', hits: 0, respond }
  const server: Server = createServer((_req, res) => {
    state.hits++
    state.respond(res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise((resolve) => server.close(resolve))
  })
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`
  return state
}

const serve = (type: string | undefined, body: string) => (res: ServerResponse) => {
  if (type !== undefined) res.setHeader('content-type', type)
  res.end(body)
}

t.test('the answer must say it is a JWK Set (or JSON)', async (t) => {
  const body = JSON.stringify({ keys: [key.jwk] })
  for (const type of ['application/jwk-set+json', 'application/json', 'application/json; charset=utf-8', 'Application/JWK-Set+JSON']) {
    const keys = await keyServer(t, serve(type, body))
    t.equal((await authenticate(await keyClient(srv, keys.url))).status, 200, type)
  }
  for (const type of ['text/html', 'text/plain', 'application/octet-stream', 'application/jwk+json', undefined]) {
    const keys = await keyServer(t, serve(type, body))
    assertOAuthError(t, await authenticate(await keyClient(srv, keys.url)), 401, 'invalid_client')
    t.equal(keys.hits, 1, `${type ?? 'no content type'}: fetched, and refused`)
  }
})

t.test('a key set larger than 64 KiB is refused, declared or not; one just under it is used', async (t) => {
  // Under the 100-key limit: it is the size alone that counts.
  const padded = (bytes: number) => {
    const set = { keys: [key.jwk, { kty: 'oct', kid: 'pad', k: '' }] }
    const base = Buffer.byteLength(JSON.stringify(set))
    set.keys[1] = { kty: 'oct', kid: 'pad', k: 'A'.repeat(bytes - base) }
    const text = JSON.stringify(set)
    if (Buffer.byteLength(text) !== bytes) throw new Error('padding')
    return text
  }
  const chunked = (text: string) => (res: ServerResponse) => {
    res.setHeader('content-type', 'application/jwk-set+json')
    // Written in pieces without a length: the cap must hold as the bytes arrive.
    for (let i = 0; i < text.length; i += 8192) res.write(text.slice(i, i + 8192))
    res.end()
  }
  const cases = [
    ['64 KiB, declared', serve('application/jwk-set+json', padded(64 * 1024)), 200],
    ['64 KiB, chunked', chunked(padded(64 * 1024)), 200],
    ['64 KiB + 1, declared', serve('application/jwk-set+json', padded(64 * 1024 + 1)), 401],
    ['64 KiB + 1, chunked', chunked(padded(64 * 1024 + 1)), 401],
  ] as const
  for (const [what, respond, status] of cases) {
    const keys = await keyServer(t, respond)
    t.equal((await authenticate(await keyClient(srv, keys.url))).status, status, what)
  }
})

t.test('a key server that does not answer is given up on after 3 s', async (t) => {
  const keys = await keyServer(t, () => undefined)
  const id = await keyClient(srv, keys.url)
  const started = performance.now()
  const r = await Promise.race([authenticate(id), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 15_000).unref())])
  const elapsed = performance.now() - started
  t.ok(r !== undefined, 'answered, not left waiting')
  if (r !== undefined) assertOAuthError(t, r, 401, 'invalid_client')
  t.ok(elapsed >= 2900, `not before the timeout (${Math.round(elapsed)} ms)`)
  t.equal(keys.hits, 1)
})

t.test('after a failed fetch, the URL is not fetched again within the cool-down, even once it works', async (t) => {
  const good = serve('application/jwk-set+json', JSON.stringify({ keys: [key.jwk] }))
  const keys = await keyServer(t, (res) => {
    res.statusCode = 500
    res.end()
  })
  const id = await keyClient(srv, keys.url)
  assertOAuthError(t, await authenticate(id), 401, 'invalid_client')
  keys.respond = good
  for (let i = 0; i < 5; i++) assertOAuthError(t, await authenticate(id), 401, 'invalid_client')
  t.equal(keys.hits, 1, 'one fetch for six attempts')
})
