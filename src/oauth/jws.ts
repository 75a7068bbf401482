// What DPoP proofs (RFC 9449) and client assertions (RFC 7523) have in common: a compact JWS
// signed with a client's asymmetric key, verified here synchronously on the event loop (fast-jwt
// over node:crypto) for the same reason as our own access tokens (src/tokens/access-tokens.ts):
// WebCrypto would queue each signature on libuv's threads, behind argon2.
import { createPublicKey, type KeyObject } from 'node:crypto'
import { createDecoder, createVerifier, TokenError } from 'fast-jwt'

/**
 * The algorithms a client may sign with: asymmetric ones only, so that what verifies a proof or an
 * assertion can never sign one. `none` and the HMAC family are refused by not being listed.
 */
export type ClientAlg = 'ES256' | 'PS256' | 'RS256' | 'EdDSA'
export const CLIENT_ALGS: readonly ClientAlg[] = ['ES256', 'PS256', 'RS256', 'EdDSA']

export const isClientAlg = (alg: unknown): alg is ClientAlg => typeof alg === 'string' && (CLIENT_ALGS as readonly string[]).includes(alg)

// RFC 7518 §6.2.2, §6.3.2, RFC 8037 §2, RFC 7518 §6.4: members only a private (or secret) key has.
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const

// RFC 7518 §3.3: RSA keys of 2048 bits or more. And no more than 4096: a public-key operation
// costs about the square of the modulus, and a proof's or assertion's key is checked before its
// signature is known good, on the event loop.
const MIN_RSA_BITS = 2048
const MAX_RSA_BITS = 4096
// The public exponent every RSA key generator uses (65537, "AQAB" as RFC 7518 §6.3.1.2's minimal
// base64url): an exponent of thousands of bits would make one verification cost as much as
// sixty.
const RSA_EXPONENT = 'AQAB'

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export class KeyProblem extends Error {
  override name = 'KeyProblem'
}

/**
 * The public key of `jwk`, usable with `alg`; a KeyProblem saying why not otherwise: not an
 * object, a private or symmetric key, a key type or curve that does not go with `alg`, an RSA key
 * outside 2048 to 4096 bits or with another exponent than 65537, an `alg` or `use` member that
 * says otherwise.
 */
export function publicKeyFor(jwk: unknown, alg: ClientAlg): KeyObject {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new KeyProblem('the key is not a JSON object')
  const k = jwk as Record<string, unknown>
  const secret = PRIVATE_MEMBERS.filter((m) => m in k)
  if (secret.length > 0) throw new KeyProblem(`the key has private members (${secret.join(', ')}): only public keys are accepted`)
  if (k['alg'] !== undefined && k['alg'] !== alg) throw new KeyProblem(`the key is for ${String(k['alg'])}, not ${alg}`)
  if (k['use'] !== undefined && k['use'] !== 'sig') throw new KeyProblem('the key is not for signatures (use)')
  const fits =
    alg === 'ES256'
      ? k['kty'] === 'EC' && k['crv'] === 'P-256'
      : alg === 'EdDSA'
        ? k['kty'] === 'OKP' && (k['crv'] === 'Ed25519' || k['crv'] === 'Ed448')
        : k['kty'] === 'RSA'
  if (!fits) throw new KeyProblem(`the key type does not go with ${alg}`)
  if (k['kty'] === 'RSA' && k['e'] !== RSA_EXPONENT) throw new KeyProblem('RSA keys must have the public exponent 65537 (e "AQAB")')
  let key: KeyObject
  try {
    key = createPublicKey({ key: k as never, format: 'jwk' })
  } catch {
    throw new KeyProblem('the key is not a valid JWK')
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
  if (k['kty'] === 'RSA' && (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS)) {
    throw new KeyProblem(`RSA keys must have ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`)
  }
  return key
}

export interface DecodedJws {
  header: Record<string, unknown>
  payload: Record<string, unknown>
}

const decodeComplete = createDecoder({ complete: true }) as (token: string) => DecodedJws

/** The header and payload of a compact JWS, unverified; undefined when it is not one. */
export function decodeJws(token: string): DecodedJws | undefined {
  if (!COMPACT_JWS.test(token)) return undefined
  try {
    const decoded = decodeComplete(token)
    const { header, payload } = decoded
    if (typeof header !== 'object' || header === null || typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      return undefined
    }
    return decoded
  } catch {
    return undefined
  }
}

export type VerifyJws = (token: string) => DecodedJws

/**
 * A function that verifies a compact JWS signed by `key` with exactly `alg` (and refuses unknown
 * `crit` headers), returning its header and payload, or throws. Claims are the caller's to check,
 * against the injected clock. Making one is the costly part: keep it with the key.
 */
export function jwsVerifier(key: KeyObject, alg: ClientAlg): VerifyJws {
  const verify = createVerifier({
    key: key.export({ format: 'pem', type: 'spki' }) as string,
    algorithms: [alg as 'ES256'],
    complete: true,
    ignoreExpiration: true,
    ignoreNotBefore: true,
  }) as unknown as VerifyJws
  return (token) => {
    try {
      return verify(token)
    } catch (err) {
      // Whatever the reason (fast-jwt throws a TokenError for every refusal), the answer is no.
      throw new KeyProblem(`the signature does not verify (${err instanceof TokenError ? err.code : 'malformed'})`)
    }
  }
}

/** A NumericDate claim (RFC 7519 §2): a finite number. */
export const isNumericDate = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)
