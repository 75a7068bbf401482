import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { invalidRequest } from '../errors.js'
import { clientAddress } from './address.js'
import { authenticateClient, clientCredentials } from '../oauth/client-auth.js'
import { introspect } from '../oauth/introspection.js'
import { Params, checkBasicCredentials } from '../oauth/params.js'
import { revoke } from '../oauth/revocation.js'
import { SUPPORTED_GRANT_TYPES, tokenEndpoint } from '../oauth/token-endpoint.js'
import type { Tessera } from '../tessera.js'

const AUTH_METHODS = ['client_secret_basic', 'client_secret_post']

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
  app.post('/token', async (request, reply) => {
    const params = formParams(request)
    const response = await tokenEndpoint(t, { authorization: request.headers.authorization, params, address: clientAddress(request) })
    return noStore(reply).send(response)
  })

  app.post('/introspect', async (request, reply) => {
    const params = formParams(request)
    const credentials = clientCredentials(request.headers.authorization, params)
    const answer = await introspect(t, { credentials, address: clientAddress(request) }, params.required('token'), t.issuer())
    t.metrics.introspected(answer.active)
    return noStore(reply).send(answer)
  })

  app.post('/revoke', async (request, reply) => {
    const params = formParams(request)
    const address = clientAddress(request)
    const caller = await authenticateClient(t, clientCredentials(request.headers.authorization, params), address)
    await revoke(t, caller, params.required('token'), { address })
    t.metrics.revocations.inc()
    return noStore(reply).code(200).send()
  })

  app.get('/jwks', async (request, reply) => {
    const { body, etag } = t.keys.jwks()
    reply
      .header('cache-control', `public, max-age=${t.config.jwksMaxAge}`)
      .header('etag', etag)
      .header('content-type', 'application/jwk-set+json')
    if (ifNoneMatch(request.headers['if-none-match'], etag)) return reply.code(304).send()
    return reply.send(body)
  })

  app.get('/.well-known/oauth-authorization-server', async (_request, reply) => {
    return reply.header('cache-control', 'public, max-age=300').send(metadata(t.issuer()))
  })

  app.get('/healthz', async () => ({ status: 'ok' }))

  // Ready to take traffic: the database answers and a key signs. `view` says whether this
  // instance answers from memory ('leased') or reads the database per call; either serves.
  app.get('/readyz', async (_request, reply) => {
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

/** RFC 8414 §2 */
export function metadata(issuer: string) {
  // RFC 8414 §3.3: `issuer` must equal the tokens' iss exactly, trailing slash and all.
  const base = issuer.replace(/\/+$/, '')
  return {
    issuer,
    token_endpoint: `${base}/token`,
    jwks_uri: `${base}/jwks`,
    introspection_endpoint: `${base}/introspect`,
    revocation_endpoint: `${base}/revoke`,
    grant_types_supported: SUPPORTED_GRANT_TYPES,
    // No authorization endpoint: no response type is supported.
    response_types_supported: [],
    token_endpoint_auth_methods_supported: AUTH_METHODS,
    introspection_endpoint_auth_methods_supported: AUTH_METHODS,
    revocation_endpoint_auth_methods_supported: AUTH_METHODS,
  }
}
