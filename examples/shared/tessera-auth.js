// @ts-check
// Checking Tessera's access tokens in a resource server, either way:
//
//   local          the JWT's signature against Tessera's /jwks (jose), and RFC 9068's checks.
//                  No call to Tessera per request; a revoked token is accepted until it expires.
//   introspection  POST /introspect (RFC 7662) as the API's own client, whose resource identifier
//                  is the token's audience; the answer is cached for a few seconds per token.
//
// Framework-neutral: examples/fastify-api and examples/express-api wire it into their routes.
import { createHash } from 'node:crypto'
import { createRemoteJWKSet, errors, jwtVerify } from 'jose'

/**
 * Who called, as the token says.
 * @typedef {object} Principal
 * @property {string} sub        the user's id (password grant) or the client's (client_credentials)
 * @property {string} clientId   the client the token was issued to
 * @property {string[]} scopes
 * @property {number} exp        seconds since the epoch
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
  }

  /** @param {string} realm */
  challenge(realm) {
    const params = [`realm="${realm}"`]
    if (this.error !== undefined) params.push(`error="${this.error}"`, `error_description="${this.message.replace(/["\\]/g, '')}"`)
    if (this.scope !== undefined) params.push(`scope="${this.scope}"`)
    return `Bearer ${params.join(', ')}`
  }

  body() {
    return this.error === undefined ? { error: 'unauthorized' } : { error: this.error, error_description: this.message }
  }
}

const invalidToken = (/** @type {string} */ why) => new AuthError(401, 'invalid_token', why)

/** @param {Principal} principal @param {string} scope */
export function requireScope(principal, scope) {
  if (!principal.scopes.includes(scope)) throw new AuthError(403, 'insufficient_scope', `this needs the scope ${scope}`, scope)
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
      /** @param {string | undefined} authorization */
      check: (authorization) => verifyLocally(bearer(authorization), jwks, issuer, audience),
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
    /** @param {string | undefined} authorization */
    async check(authorization) {
      const token = bearer(authorization)
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
      return entry.principal
    },
  }
}

/** RFC 6750 §2.1: `Authorization: Bearer <token>`. @param {string | undefined} authorization */
function bearer(authorization) {
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i.exec(authorization ?? '')
  if (match === null) throw new AuthError(401, undefined, 'a bearer token is required')
  return /** @type {string} */ (match[1])
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
  return {
    sub: String(claims['sub']),
    clientId: String(claims['client_id']),
    scopes: typeof claims['scope'] === 'string' ? claims['scope'].split(' ').filter(Boolean) : [],
    exp: Number(claims['exp']),
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
