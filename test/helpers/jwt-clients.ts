// What a client that holds keys sends: DPoP proofs (RFC 9449) and client assertions (RFC 7523),
// made by hand with jose so that each test can get one field wrong; and the same server seen
// through oauth4webapi, an independent client library, for the flows done right.
import { randomUUID, createHash } from 'node:crypto'
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose'
import * as oauth from 'oauth4webapi'

export interface KeyPair {
  privateKey: CryptoKey
  publicKey: CryptoKey
  /** The public key as a JWK, as a proof's header carries it and a client registers it. */
  jwk: JWK
}

/** A fresh key pair (extractable, so that tests can also send the private half where they should not). */
export async function keyPair(alg: 'ES256' | 'PS256' | 'RS256' | 'EdDSA' = 'ES256', kid?: string): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const jwk = await exportJWK(publicKey)
  return { privateKey, publicKey, jwk: kid === undefined ? jwk : { ...jwk, kid } }
}

export const now = () => Math.floor(Date.now() / 1000)

/** RFC 9449 §4.2: base64url SHA-256 of the access token. */
export const ath = (token: string) => createHash('sha256').update(token).digest('base64url')

export interface ProofOptions {
  htm?: string
  htu: string
  iat?: number
  jti?: string
  nonce?: string
  ath?: string
  /** Header overrides (typ, alg, jwk). */
  header?: Record<string, unknown>
  /** Claims added or replaced as they are, undefined removing one. */
  claims?: Record<string, unknown>
  alg?: string
}

/** A DPoP proof JWT, signed with the key pair's private key. */
export async function proof(key: KeyPair, o: ProofOptions): Promise<string> {
  const alg = o.alg ?? 'ES256'
  const claims: Record<string, unknown> = {
    jti: o.jti ?? randomUUID(),
    htm: o.htm ?? 'POST',
    htu: o.htu,
    iat: o.iat ?? now(),
    ...(o.nonce !== undefined && { nonce: o.nonce }),
    ...(o.ath !== undefined && { ath: o.ath }),
    ...o.claims,
  }
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k]
  return new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg, jwk: key.jwk, ...o.header } as never).sign(key.privateKey)
}

/** A JWS with `alg: none`: the header and payload, and an empty signature. */
export function unsigned(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  return `${b64(header)}.${b64(payload)}.`
}

export interface AssertionOptions {
  iss?: string
  sub?: string
  aud?: unknown
  exp?: number
  iat?: number
  jti?: string
  kid?: string
  alg?: string
  /** Claims added or replaced, undefined removing one. */
  claims?: Record<string, unknown>
}

/** A private_key_jwt client assertion of `clientId` for `issuer`, signed with the key. */
export async function assertion(key: { privateKey: CryptoKey | Uint8Array }, clientId: string, issuer: string, o: AssertionOptions = {}): Promise<string> {
  const claims: Record<string, unknown> = {
    iss: o.iss ?? clientId,
    sub: o.sub ?? clientId,
    aud: o.aud ?? issuer,
    exp: o.exp ?? now() + 60,
    iat: o.iat ?? now(),
    jti: o.jti ?? randomUUID(),
    ...o.claims,
  }
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k]
  return new SignJWT(claims)
    .setProtectedHeader({ alg: o.alg ?? 'ES256', ...(o.kid !== undefined && { kid: o.kid }) })
    .sign(key.privateKey)
}

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

/** The form parameters of private_key_jwt. */
export const assertionParams = (jwt: string) => ({ client_assertion_type: JWT_BEARER, client_assertion: jwt })

/** oauth4webapi, pointed at a test server (http on loopback, which it refuses unless told). */
export async function oauthClient(issuer: string): Promise<{ as: oauth.AuthorizationServer; insecure: { [oauth.allowInsecureRequests]: true } }> {
  const insecure = { [oauth.allowInsecureRequests]: true } as const
  const url = new URL(issuer)
  const as = await oauth.processDiscoveryResponse(url, await oauth.discoveryRequest(url, { algorithm: 'oauth2', ...insecure }))
  return { as, insecure }
}

/** Calls `request` and, if the server asks for a DPoP nonce (RFC 9449 §8), once more with it. */
export async function withNonceRetry<T>(request: () => Promise<T>): Promise<{ result: T; retried: boolean }> {
  try {
    return { result: await request(), retried: false }
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err
    return { result: await request(), retried: true }
  }
}
