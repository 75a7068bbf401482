// The rules a client's settings keep together, checked whenever they are written (created or
// changed), so that every client record can authenticate the way it says it does.
import { invalidRequest } from '../errors.js'
import { KeyProblem, publicKeyFor } from '../oauth/jws.js'
import type { ClientSettings, JwkSet } from './repository.js'

/** The algorithm of a private_key_jwt client that names none: the server's own default. */
export const DEFAULT_ASSERTION_ALG = 'ES256'
/** Keys a client may register inline: enough for a rotation with room to spare. */
export const MAX_CLIENT_KEYS = 10

export interface SettingsPolicy {
  /** Tests only: a jwks_uri may be http (and, at fetch time, on loopback or a private network). */
  allowInsecureJwksUri: boolean
}

/**
 * The settings as they will be stored, or invalid_request saying which rule they break:
 *
 * - a public client (`none`) has no credential, so it may not use client_credentials: anyone
 *   could ask for its tokens (RFC 6749 §4.4 is for confidential clients);
 * - a private_key_jwt client has its keys inline (`jwks`) or at a `jwks_uri`, exactly one, and
 *   an algorithm (`token_endpoint_auth_signing_alg`, ES256 when none is named) that every inline
 *   key fits; with more than one key each has a distinct `kid`, since an assertion names its
 *   key by kid;
 * - keys, their location and the algorithm belong to private_key_jwt only;
 * - a jwks_uri is https (RFC 7591 §2), with no credentials or fragment in it.
 */
export function checkSettings(s: ClientSettings, policy: SettingsPolicy): ClientSettings {
  const method = s.tokenEndpointAuthMethod
  if (method === 'none' && s.grantTypes.includes('client_credentials')) {
    throw invalidRequest('a public client (token_endpoint_auth_method "none") may not use the client_credentials grant')
  }
  if (method !== 'private_key_jwt') {
    if (s.jwks !== null || s.jwksUri !== null || s.tokenEndpointAuthSigningAlg !== null) {
      throw invalidRequest('jwks, jwks_uri and token_endpoint_auth_signing_alg are for private_key_jwt clients only')
    }
    return s
  }
  if ((s.jwks === null) === (s.jwksUri === null)) {
    throw invalidRequest('a private_key_jwt client needs its public keys: jwks or jwks_uri, one of the two')
  }
  const alg = s.tokenEndpointAuthSigningAlg ?? DEFAULT_ASSERTION_ALG
  if (s.jwks !== null) checkJwks(s.jwks, alg)
  if (s.jwksUri !== null) checkJwksUri(s.jwksUri, policy)
  return { ...s, tokenEndpointAuthSigningAlg: alg }
}

function checkJwks(jwks: JwkSet, alg: NonNullable<ClientSettings['tokenEndpointAuthSigningAlg']>): void {
  const { keys } = jwks
  if (keys.length === 0 || keys.length > MAX_CLIENT_KEYS) throw invalidRequest(`jwks must hold 1 to ${MAX_CLIENT_KEYS} keys`)
  keys.forEach((key, i) => {
    try {
      publicKeyFor(key, alg)
    } catch (err) {
      if (err instanceof KeyProblem) throw invalidRequest(`jwks key ${i}: ${err.message}`)
      throw err
    }
  })
  if (keys.length > 1) {
    const kids = keys.map((k) => k['kid'])
    if (!kids.every((kid) => typeof kid === 'string' && kid !== '')) throw invalidRequest('with more than one key in jwks, each needs a kid')
    if (new Set(kids).size !== kids.length) throw invalidRequest('the keys in jwks need distinct kids')
  }
}

function checkJwksUri(raw: string, policy: SettingsPolicy): void {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw invalidRequest('jwks_uri must be a URL')
  }
  const schemes = policy.allowInsecureJwksUri ? ['https:', 'http:'] : ['https:']
  if (!schemes.includes(url.protocol)) throw invalidRequest('jwks_uri must be an https URL')
  if (url.username !== '' || url.password !== '' || url.hash !== '') {
    throw invalidRequest('jwks_uri must not carry credentials or a fragment')
  }
}
