import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { OAuthError, invalidDpopProof, invalidRequest } from '../errors.js'
import { LIMITS, checkText } from '../input.js'
import { clientAddress } from './address.js'
import { authenticateClient, clientCredentials } from '../oauth/client-auth.js'
import { DPOP_ALGS } from '../oauth/dpop.js'
import { introspect } from '../oauth/introspection.js'
import { CLIENT_ALGS } from '../oauth/jws.js'
import { Params, checkBasicCredentials } from '../oauth/params.js'
import { revoke } from '../oauth/revocation.js'
import { SUPPORTED_GRANT_TYPES, tokenEndpoint } from '../oauth/token-endpoint.js'
import { readFirst } from './read-first.js'
import { serverMetadataRoute } from './schemas/common.js'
import * as schemas from './schemas/public.js'
import type { Tessera } from '../tessera.js'

// client_secret_jwt is not offered: it needs the secret itself to verify a MAC, and secrets are
// stored only as hashes (src/secrets.ts).
const CONFIDENTIAL_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt']
// Public clients may get tokens and revoke them (RFC 7009 §5), not introspect (RFC 7662 §2.1).
const TOKEN_METHODS = [...CONFIDENTIAL_METHODS, 'none']

/** The URL of one of our endpoints, as the metadata names it: what a DPoP proof's htu must be. */
export function endpointUrl(issuer: string, path: string): string {
  // RFC 8414 §3.3: `issuer` must equal the tokens' iss exactly, trailing slash and all.
  return `${issuer.replace(/\/+$/, '')}${path}`
}

/**
 * The values of every DPoP header of the request. Node joins repeated headers into one value, so
 * they are counted in the raw headers (RFC 9449 §4.3 check 1 wants exactly one). Each is text of
 * a token's size (src/input.ts), or the proof is invalid.
 */
export function dpopHeaders(request: FastifyRequest): string[] {
  const raw = request.raw.rawHeaders
  const values: string[] = []
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'dpop') values.push(raw[i + 1]!)
  }
  for (const value of values) {
    try {
      checkText('the DPoP header', value, { max: LIMITS.token })
    } catch (err) {
      throw invalidDpopProof((err as OAuthError).description ?? 'the DPoP header is malformed')
    }
  }
  return values
}

/**
 * RFC 6749 §3.2: requests to the token endpoint (and RFC 7662/7009's) are form-encoded. The
 * parameters, and the client id and secret of a Basic header, are checked here (src/input.ts),
 * before client authentication or a grant reads them.
 */
function formParams(request: FastifyRequest): Params {
  const type = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') {
    throw invalidRequest('the request body must be application/x-www-form-urlencoded')
  }
  const params = Params.from(request.body)
  checkBasicCredentials(request.headers.authorization)
  return params
}

function noStore(reply: FastifyReply): FastifyReply {
  return reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
}

export function publicRoutes(app: FastifyInstance, t: Tessera): void {
  // Each form endpoint reads its request (the form, then what it needs before anything else) ahead
  // of the schema's validation: see read-first.ts.
  const tokenRequest = readFirst((request) => {
    const params = formParams(request)
    // The token endpoint's first step (src/oauth/token-endpoint.ts), here so that the schema may say so.
    params.required('grant_type')
    return params
  })
  app.post('/token', { schema: schemas.token, preValidation: tokenRequest.preValidation }, async (request, reply) => {
    const params = tokenRequest.get(request)
    const dpop = { headers: dpopHeaders(request), url: endpointUrl(t.issuer(), '/token') }
    const response = await tokenEndpoint(t, { authorization: request.headers.authorization, params, address: clientAddress(request), dpop })
    // RFC 9449 §8.2: a client that uses DPoP gets the nonce for its next request with this answer.
    if (dpop.headers.length > 0 && t.dpop.usesNonces) reply.header('dpop-nonce', t.dpop.nonce())
    return noStore(reply).send(response)
  })

  const introspection = readFirst((request) => {
    const params = formParams(request)
    return { credentials: clientCredentials(request.headers.authorization, params), token: params.required('token') }
  })
  app.post('/introspect', { schema: schemas.introspect, preValidation: introspection.preValidation }, async (request, reply) => {
    const { credentials, token } = introspection.get(request)
    const answer = await introspect(t, { credentials, address: clientAddress(request) }, token, t.issuer())
    t.metrics.introspected(answer.active)
    return noStore(reply).send(answer)
  })

  // The caller authenticates before the token is looked for (RFC 7009 §2.1).
  const revocation = readFirst(async (request) => {
    const params = formParams(request)
    const address = clientAddress(request)
    const caller = await authenticateClient(t, clientCredentials(request.headers.authorization, params), address)
    return { caller, token: params.required('token'), address }
  })
  app.post('/revoke', { schema: schemas.revoke, preValidation: revocation.preValidation }, async (request, reply) => {
    const { caller, token, address } = revocation.get(request)
    await revoke(t, caller, token, { address })
    t.metrics.revocations.inc()
    return noStore(reply).code(200).send()
  })

  app.get('/jwks', { schema: schemas.jwks }, async (request, reply) => {
    const { body, etag } = t.keys.jwks()
    reply
      .header('cache-control', `public, max-age=${t.config.jwksMaxAge}`)
      .header('etag', etag)
      .header('content-type', 'application/jwk-set+json')
    if (ifNoneMatch(request.headers['if-none-match'], etag)) return reply.code(304).send()
    // Already JSON, sent as it is: its ETag is of these bytes.
    return reply.send(body)
  })

  app.get('/.well-known/oauth-authorization-server', { schema: serverMetadataRoute }, async (_request, reply) => {
    return reply.header('cache-control', 'public, max-age=300').send(metadata(t.issuer()))
  })

  app.get('/healthz', { schema: schemas.healthz }, async () => ({ status: 'ok' }))

  // Ready to take traffic: the database answers and a key signs. `view` says whether this
  // instance answers from memory ('leased') or reads the database per call; either serves.
  app.get('/readyz', { schema: schemas.readyz }, async (_request, reply) => {
    const { database, signingKey, ready } = await t.readiness()
    return reply
      .code(ready ? 200 : 503)
      .header('cache-control', 'no-store')
      .send({ status: ready ? 'ready' : 'not ready', database, signingKey, view: t.feed.state })
  })
}

/** RFC 9110 §13.1.2: a list of entity tags, or "*". */
function ifNoneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  if (header.trim() === '*') return true
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)
}

/** RFC 8414 §2, with RFC 9449 §5.1's dpop_signing_alg_values_supported. */
export function metadata(issuer: string) {
  return {
    issuer,
    token_endpoint: endpointUrl(issuer, '/token'),
    jwks_uri: endpointUrl(issuer, '/jwks'),
    introspection_endpoint: endpointUrl(issuer, '/introspect'),
    revocation_endpoint: endpointUrl(issuer, '/revoke'),
    grant_types_supported: SUPPORTED_GRANT_TYPES,
    // No authorization endpoint: no response type is supported.
    response_types_supported: [],
    token_endpoint_auth_methods_supported: TOKEN_METHODS,
    token_endpoint_auth_signing_alg_values_supported: CLIENT_ALGS,
    introspection_endpoint_auth_methods_supported: CONFIDENTIAL_METHODS,
    introspection_endpoint_auth_signing_alg_values_supported: CLIENT_ALGS,
    revocation_endpoint_auth_methods_supported: TOKEN_METHODS,
    revocation_endpoint_auth_signing_alg_values_supported: CLIENT_ALGS,
    dpop_signing_alg_values_supported: DPOP_ALGS,
  }
}
