// The key in a DPoP proof's jwk is the client's choice and is checked before its signature is
// known good, on the event loop: an RSA key must have the exponent 65537 and 2048 to 4096 bits
// (a huge exponent made one verification cost about sixty), and a key is kept for later proofs
// only once a proof made with it verified.
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { exportJWK, type CryptoKey } from 'jose'
import { assertOAuthError, startTestServer, type HttpResult } from '../helpers/server.js'
import { keyPair, proof, type KeyPair } from '../helpers/jwt-clients.js'

const srv = await startTestServer(t)
const svc = await srv.createClient({ grant_types: ['client_credentials'] })
const htu = `${srv.issuer}/token`
const withProof = async (p: string): Promise<HttpResult> => srv.post('/token', { grant_type: 'client_credentials' }, svc.auth, { dpop: p })

/** An RSA key pair of `bits`, as the proof helper takes one. */
async function rsaKey(bits: number): Promise<KeyPair> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits })
  return { privateKey: privateKey as unknown as CryptoKey, publicKey: publicKey as unknown as CryptoKey, jwk: await exportJWK(publicKey) }
}

function refusedFor(t: Test, r: HttpResult, description: string): void {
  assertOAuthError(t, r, 400, 'invalid_dpop_proof')
  t.equal(r.body.error_description, description)
}

t.test('an RSA jwk must have the exponent 65537', async (t) => {
  const key = await keyPair('PS256')
  // Odd, below the modulus: a key node accepts, whose every verification is a long exponentiation.
  const huge = randomBytes(255)
  huge[0] = 0x7f
  huge[254]! |= 1
  const wrongExponent = 'RSA keys must have the public exponent 65537 (e "AQAB")'
  for (const [what, e] of [
    ['a 2040-bit exponent', huge.toString('base64url')],
    ['3', 'Aw'],
    ['65537 with a leading zero octet', 'AAEAAQ'],
  ] as const) {
    const r = await withProof(await proof(key, { htu, alg: 'PS256', header: { jwk: { ...key.jwk, e } } }))
    refusedFor(t, r, `the DPoP proof's jwk: ${wrongExponent}`)
    t.pass(what)
  }
  const registered = await srv.admin('POST', '/admin/clients', {
    name: 'assertions',
    grant_types: ['client_credentials'],
    scopes: [],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'PS256',
    jwks: { keys: [{ ...key.jwk, e: 'Aw' }] },
  })
  assertOAuthError(t, registered, 400, 'invalid_request')
  t.equal(registered.body.error_description, `jwks key 0: ${wrongExponent}`, 'the same rule for keys a client registers')
  t.equal((await withProof(await proof(key, { htu, alg: 'PS256' }))).status, 200, 'the same key with e = 65537 works')
})

t.test('an RSA jwk has 2048 to 4096 bits', async (t) => {
  const big = await rsaKey(4160)
  refusedFor(t, await withProof(await proof(big, { htu, alg: 'RS256' })), "the DPoP proof's jwk: RSA keys must have 2048 to 4096 bits")
  const largest = await rsaKey(4096)
  t.equal((await withProof(await proof(largest, { htu, alg: 'RS256' }))).status, 200, '4096 bits')
})

t.test('a key is kept only once a proof made with it verified', async (t) => {
  // The cache itself (src/oauth/dpop.ts) is what is at stake: read, not touched.
  const cached = () => (srv.tessera.dpop as unknown as { keys: { size: number } }).keys.size
  const before = cached()
  for (let i = 0; i < 20; i++) {
    const claimed = await keyPair()
    const signer = await keyPair()
    const r = await withProof(await proof({ ...signer, jwk: claimed.jwk }, { htu }))
    assertOAuthError(t, r, 400, 'invalid_dpop_proof')
  }
  t.equal(cached(), before, 'twenty keys whose proofs did not verify: none kept')
  const key = await keyPair()
  t.equal((await withProof(await proof(key, { htu }))).status, 200)
  t.equal(cached(), before + 1, 'a key whose proof verified is kept')
  t.equal((await withProof(await proof(key, { htu }))).status, 200, 'and serves its next proof')
  t.equal(cached(), before + 1)
})
