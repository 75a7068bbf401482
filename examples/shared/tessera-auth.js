// @ts-check
// Checking Tessera's access tokens in a resource server, either way:
//
//   local          the JWT's signature against Tessera's /jwks (jose), and RFC 9068's checks.
//                  No call to Tessera per request; a revoked token is accepted until it expires.
//   introspection  POST /introspect (RFC 7662) as the API's own client, whose resource identifier
//                  is the token's audience; the answer is cached for a few seconds per token.
//
// Either way, a DPoP-bound token (RFC 9449: `cnf.jkt` in the token or the introspection answer)
// is accepted only as `Authorization: DPoP <token>` with a `DPoP` proof for this very request,
// signed by that key and naming the token (`ath`); sent as Bearer, or with a proof that does not
// fit, it is refused.
//
// Framework-neutral: examples/fastify-api and examples/express-api wire it into their routes.
import { createHash } from 'node:crypto'
import { EmbeddedJWK, calculateJwkThumbprint, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify } from 'jose'

/**
 * Who called, as the token says.
 * @typedef {object} Principal
 * @property {string} sub        the user's id (password grant) or the client's (client_credentials)
 * @property {string} clientId   the client the token was issued to
 * @property {string[]} scopes
 * @property {number} exp        seconds since the epoch
 * @property {string} [jkt]      the thumbprint of the key the token is bound to (DPoP), if any
 */

/**
 * The request, as a DPoP proof must name it.
 * @typedef {object} RequestInfo
 * @property {string} method
 * @property {string} url       the URL the client called, scheme and host included
 * @property {string | string[] | undefined} dpop  the DPoP header(s)
 */

/**
 * @typedef {object} AuthOptions
 * @property {string} issuer        Tessera's ISSUER: tokens must carry exactly this `iss`
 * @property {string} audience      this API's resource identifier: tokens must name it in `aud`
 * @property {'local' | 'introspection'} mode
 * @property {string} [clientId]     introspection: the API's client, registered with
 *                                   resource_identifiers = [audience]
 * @property {string} [clientSecret]
 * @property {number} [cacheSeconds] introspection: how long an answer is reused (1 to 30; 15)
 */

/** RFC 6750 §3.1: what the API answers when a request's token will not do. */
export class AuthError extends Error {
  /**
   * @param {401 | 403 | 503} status
   * @param {string | undefined} error   undefined when the request had no token at all (§3.1)
   * @param {string} description
   * @param {string} [scope]            the scope that was missing (insufficient_scope)
   */
  constructor(status, error, description, scope) {
    super(description)
    this.status = status
    this.error = error
    this.scope = scope
    /** @type {'Bearer' | 'DPoP'} the scheme the challenge names */
    this.scheme = 'Bearer'
  }

  /** @param {string} realm */
  challenge(realm) {
    const params = [`realm="${realm}"`]
    if (this.error !== undefined) params.push(`error="${this.error}"`, `error_description="${this.message.replace(/["\\]/g, '')}"`)
    if (this.scope !== undefined) params.push(`scope="${this.scope}"`)
    // RFC 9449 §7.1: a DPoP-bound token is refused with a DPoP challenge, naming the algorithms.
    return this.dpop ? `DPoP algs="${ALGORITHMS.join(' ')}", ${params.join(', ')}` : `Bearer ${params.join(', ')}`
  }

  /** The challenge is DPoP's (the token was bound, or came with the DPoP scheme). */
  get dpop() {
    return this.scheme === 'DPoP'
  }

  body() {
    return this.error === undefined ? { error: 'unauthorized' } : { error: this.error, error_description: this.message }
  }
}

const invalidToken = (/** @type {string} */ why) => new AuthError(401, 'invalid_token', why)
/** A 401 with a DPoP challenge: `invalid_token` for the token as presented, `invalid_dpop_proof` (RFC 9449 §7.1) for its proof. */
const invalidDpop = (/** @type {string} */ why, error = 'invalid_token') => {
  const err = new AuthError(401, error, why)
  err.scheme = 'DPoP'
  return err
}
const invalidProof = (/** @type {string} */ why) => invalidDpop(why, 'invalid_dpop_proof')

/** @param {Principal} principal @param {string} scope */
export function requireScope(principal, scope) {
  if (principal.scopes.includes(scope)) return
  const err = new AuthError(403, 'insufficient_scope', `this needs the scope ${scope}`, scope)
  if (principal.jkt !== undefined) err.scheme = 'DPoP'
  throw err
}

// Tessera signs with one of these (SIGNING_ALG); anything else, "none" above all, is refused.
const ALGORITHMS = ['ES256', 'EdDSA', 'RS256', 'PS256']

// Short on purpose: a cached "active" hides a revocation for this long, so an introspecting API
// that cached for minutes would be no better than local verification, at the cost of a call per
// token. A few seconds still turns a burst of requests with one token into one call.
const MAX_CACHE_SECONDS = 30
const DEFAULT_CACHE_SECONDS = 15
// Bounds the memory a flood of distinct (even made-up) tokens can take.
const MAX_CACHED_TOKENS = 10_000

/**
 * Reads Tessera's metadata (RFC 8414) and returns the check for the chosen mode.
 * @param {AuthOptions} options
 */
export async function tesseraAuth(options) {
  const { issuer, audience, mode } = options
  const metadataUrl = `${issuer.replace(/\/+$/, '')}/.well-known/oauth-authorization-server`
  const response = await fetch(metadataUrl, { signal: AbortSignal.timeout(10_000) })
  if (!response.ok) throw new Error(`${metadataUrl} answered ${response.status}`)
  const metadata = /** @type {Record<string, unknown>} */ (await response.json())
  // RFC 8414 §3.3: the metadata must be the issuer's own.
  if (metadata['issuer'] !== issuer) throw new Error(`${metadataUrl} names the issuer ${String(metadata['issuer'])}, not ${issuer}`)

  if (mode === 'local') {
    // jose fetches /jwks again for a kid it does not know (a rotation), at most every 30 s, and
    // keeps keys no longer than Tessera's JWKS_MAX_AGE (300 s) so that a key removed in an
    // emergency rotation stops verifying here within that time.
    const jwks = createRemoteJWKSet(new URL(String(metadata['jwks_uri'])), { cacheMaxAge: 300_000, cooldownDuration: 30_000 })
    return {
      mode,
      /** @param {string | undefined} authorization @param {RequestInfo} request */
      async check(authorization, request) {
        const presented = credentials(authorization)
        return bound(await verifyLocally(presented.token, jwks, issuer, audience), presented, request)
      },
    }
  }

  const { clientId, clientSecret } = options
  if (!clientId || !clientSecret) throw new Error('introspection needs the API client\'s id and secret')
  const cacheSeconds = Math.min(Math.max(options.cacheSeconds ?? DEFAULT_CACHE_SECONDS, 1), MAX_CACHE_SECONDS)
  const endpoint = String(metadata['introspection_endpoint'])
  // RFC 6749 §2.3.1: the id and secret are form-encoded before they go into Basic authentication.
  const basic = `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64')}`
  /** @type {Map<string, { until: number, principal: Principal | undefined }>} */
  const cache = new Map()
  return {
    mode,
    cacheSeconds,
    /** @param {string | undefined} authorization @param {RequestInfo} request */
    async check(authorization, request) {
      const presented = credentials(authorization)
      const { token } = presented
      // Keyed by a hash: the cache need not hold anything a memory dump could replay.
      const key = createHash('sha256').update(token).digest('base64url')
      const now = Date.now()
      let entry = cache.get(key)
      if (entry === undefined || entry.until <= now) {
        const principal = await introspect(endpoint, basic, token, issuer, audience)
        // Never past the token's own expiry, so an expired token is refused on time.
        entry = { until: Math.min(now + cacheSeconds * 1000, principal === undefined ? Infinity : principal.exp * 1000), principal }
        cache.delete(key)
        if (cache.size >= MAX_CACHED_TOKENS) cache.delete(/** @type {string} */ (cache.keys().next().value))
        cache.set(key, entry)
      }
      if (entry.principal === undefined) throw invalidToken('the token is not active')
      return bound(entry.principal, presented, request)
    },
  }
}

/**
 * RFC 6750 §2.1 `Authorization: Bearer <token>`, or RFC 9449 §7.1 `Authorization: DPoP <token>`.
 * @param {string | undefined} authorization
 * @returns {{ scheme: 'Bearer' | 'DPoP', token: string }}
 */
function credentials(authorization) {
  const match = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*)$/i.exec(authorization ?? '')
  if (match === null) throw new AuthError(401, undefined, 'a bearer token is required')
  const scheme = /** @type {string} */ (match[1]).toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer'
  return { scheme, token: /** @type {string} */ (match[2]) }
}

// RFC 9449 §11.1: how far a proof's iat may be from now, and so how long a jti is remembered.
const PROOF_WINDOW_SECONDS = 300
/** @type {Map<string, number>} proof jti → until when it is remembered (ms) */
const seenProofs = new Map()

/**
 * The principal, if the token may be used as presented: a DPoP-bound token only with the DPoP
 * scheme and a proof by its key for this request (RFC 9449 §7.1, §4.3), an unbound one only as Bearer.
 * @param {Principal} principal
 * @param {{ scheme: 'Bearer' | 'DPoP', token: string }} presented
 * @param {RequestInfo} request
 * @returns {Promise<Principal>}
 */
async function bound(principal, presented, request) {
  if (principal.jkt === undefined) {
    if (presented.scheme === 'DPoP') throw invalidDpop('the token is not bound to a key: send it as Bearer')
    return principal
  }
  if (presented.scheme !== 'DPoP') throw invalidDpop('the token is bound to a key: send it with the DPoP scheme and a proof')
  const proof = typeof request.dpop === 'string' ? request.dpop : undefined
  if (proof === undefined || proof.includes(',')) throw invalidProof('exactly one DPoP proof is required')
  let payload
  try {
    const header = decodeProtectedHeader(proof)
    ;({ payload } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ALGORITHMS }))
    if ((await calculateJwkThumbprint(/** @type {import('jose').JWK} */ (header.jwk))) !== principal.jkt) {
      throw invalidProof('the proof is signed by another key than the token is bound to')
    }
  } catch (err) {
    if (err instanceof AuthError) throw err
    throw invalidProof('the DPoP proof is not valid')
  }
  const htu = new URL(request.url)
  htu.search = ''
  htu.hash = ''
  if (payload['htm'] !== request.method || payload['htu'] !== htu.toString()) throw invalidProof('the proof is for another request')
  const now = Math.floor(Date.now() / 1000)
  if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > PROOF_WINDOW_SECONDS) throw invalidProof('the proof is too old or from the future')
  if (payload['ath'] !== createHash('sha256').update(presented.token).digest('base64url')) throw invalidProof('the proof does not name this token')
  if (typeof payload.jti !== 'string' || payload.jti.length > 128) throw invalidProof('the proof has no jti')
  // A replay of one proof to this API; one process's memory, since the example is one process.
  for (const [jti, until] of seenProofs) if (until <= Date.now()) seenProofs.delete(jti)
  if (seenProofs.has(payload.jti)) throw invalidProof('the proof was used before')
  if (seenProofs.size >= MAX_CACHED_TOKENS) throw new AuthError(503, 'temporarily_unavailable', 'too many proofs to remember')
  seenProofs.set(payload.jti, (now + 2 * PROOF_WINDOW_SECONDS) * 1000)
  return principal
}

/**
 * RFC 9068 §4: the signature, `typ` at+jwt, `iss`, `aud` naming this API, `exp`, and the claims
 * every access token has.
 * @param {string} token
 * @param {ReturnType<typeof createRemoteJWKSet>} jwks
 * @param {string} issuer
 * @param {string} audience
 * @returns {Promise<Principal>}
 */
async function verifyLocally(token, jwks, issuer, audience) {
  try {
    const { payload } = await jwtVerify(token, jwks, {
      issuer,
      audience,
      typ: 'at+jwt',
      algorithms: ALGORITHMS,
      requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id'],
    })
    return principalOf(payload)
  } catch (err) {
    if (err instanceof errors.JWTExpired) throw invalidToken('the token has expired')
    if (err instanceof errors.JWTClaimValidationFailed) throw invalidToken(`the token's ${err.claim} claim does not fit this API`)
    if (err instanceof errors.JOSEError) throw invalidToken('the token is not a valid access token from this issuer')
    throw err
  }
}

/**
 * @param {string} endpoint
 * @param {string} basic
 * @param {string} token
 * @param {string} issuer
 * @param {string} audience
 * @returns {Promise<Principal | undefined>} undefined when the token is not active for this API
 */
async function introspect(endpoint, basic, token, issuer, audience) {
  let response
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
      signal: AbortSignal.timeout(5000),
    })
  } catch {
    // Fail closed: a token that cannot be checked is not accepted.
    throw new AuthError(503, 'temporarily_unavailable', 'the authorization server cannot be reached')
  }
  if (!response.ok) throw new AuthError(503, 'temporarily_unavailable', `introspection answered ${response.status}`)
  const answer = /** @type {Record<string, unknown>} */ (await response.json())
  if (answer['active'] !== true) return undefined
  // Tessera shows this client also the tokens issued to it, whatever their audience, and its
  // refresh tokens: only an access token for this API, from this issuer, will do.
  const aud = Array.isArray(answer['aud']) ? answer['aud'] : [answer['aud']]
  if (answer['iss'] !== issuer || !aud.includes(audience) || answer['token_use'] !== 'access_token') return undefined
  return principalOf(answer)
}

/** @param {Record<string, unknown>} claims @returns {Principal} */
function principalOf(claims) {
  const cnf = /** @type {{ jkt?: unknown } | undefined} */ (claims['cnf'])
  return {
    sub: String(claims['sub']),
    clientId: String(claims['client_id']),
    scopes: typeof claims['scope'] === 'string' ? claims['scope'].split(' ').filter(Boolean) : [],
    exp: Number(claims['exp']),
    ...(typeof cnf?.jkt === 'string' && { jkt: cnf.jkt }),
  }
}

/** @param {string} value */
const formEncode = (value) => new URLSearchParams({ v: value }).toString().slice(2)

/** @param {string | undefined} raw */
function seconds(raw) {
  if (raw === undefined || raw === '') return DEFAULT_CACHE_SECONDS
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1 || n > MAX_CACHE_SECONDS) throw new Error(`INTROSPECTION_CACHE_SECONDS must be 1 to ${MAX_CACHE_SECONDS}`)
  return n
}

/**
 * The options from the environment, as both examples take them.
 * @param {NodeJS.ProcessEnv} env
 * @returns {AuthOptions}
 */
export function optionsFromEnv(env) {
  /** @param {string} name */
  const required = (name) => {
    const value = env[name]
    if (!value) throw new Error(`set ${name}`)
    return value
  }
  const mode = env['TOKEN_CHECK'] ?? 'local'
  if (mode !== 'local' && mode !== 'introspection') throw new Error('TOKEN_CHECK must be local or introspection')
  return {
    issuer: required('TESSERA_ISSUER'),
    audience: required('API_AUDIENCE'),
    mode,
    ...(mode === 'introspection' && {
      clientId: required('API_CLIENT_ID'),
      clientSecret: required('API_CLIENT_SECRET'),
      cacheSeconds: seconds(env['INTROSPECTION_CACHE_SECONDS']),
    }),
  }
}
