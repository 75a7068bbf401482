import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { isDatabaseUnavailable } from '../db/errors.js'
import { OAuthError, temporarilyUnavailable } from '../errors.js'
import type { Metrics } from '../metrics.js'

/** What fastify's own refusals mean, in words a client can act on. */
const FRAMEWORK_DESCRIPTIONS: Record<string, string> = {
  FST_ERR_BAD_URL: 'the URL has a percent-encoded sequence that is not UTF-8, or a "%" without two hex digits',
  FST_ERR_MAX_PARAM_LENGTH: 'a segment of the URL path is too long',
  FST_ERR_CTP_INVALID_JSON_BODY: 'the request body is not valid JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'the request body is empty; JSON was expected',
}

/** The one place where errors become HTTP: RFC 6749 §5.2 JSON, never a stack trace. */
export function toOAuthError(err: unknown): OAuthError {
  if (err instanceof OAuthError) return err
  if (isDatabaseUnavailable(err)) return temporarilyUnavailable((err as Error).message)
  const e = err as Partial<FastifyError>
  if (e.validation !== undefined) {
    return new OAuthError('invalid_request', e.message ?? 'invalid request')
  }
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || e.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') {
    return new OAuthError('invalid_request', 'unsupported content type')
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new OAuthError('invalid_request', 'request body too large')
  const description = e.code === undefined ? undefined : FRAMEWORK_DESCRIPTIONS[e.code]
  if (description !== undefined) return new OAuthError('invalid_request', description, e.message)
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new OAuthError('invalid_request', 'malformed request', e.message)
  }
  return new OAuthError('server_error', 'internal error', e.message)
}

function challenge(err: OAuthError): string | undefined {
  switch (err.code) {
    case 'invalid_client':
      return 'Basic realm="tessera", charset="UTF-8"'
    case 'invalid_token':
      return `Bearer realm="tessera", error="invalid_token"`
    case 'insufficient_scope':
      return `Bearer realm="tessera", error="insufficient_scope"`
    default:
      return undefined
  }
}

export function sendError(reply: FastifyReply, err: OAuthError): FastifyReply {
  const www = challenge(err)
  if (www !== undefined) reply.header('www-authenticate', www)
  // An error's own headers win: a DPoP challenge replaces the Bearer one.
  for (const [name, value] of Object.entries(err.headers)) reply.header(name, value)
  if (err.retryAfter !== undefined) reply.header('retry-after', String(err.retryAfter))
  return reply
    .code(err.status)
    .header('cache-control', 'no-store')
    .header('pragma', 'no-cache')
    .send({ error: err.code, ...(err.description !== undefined && { error_description: err.description }) })
}

/** Why a request was refused, for its log line; kept only as long as the request. */
export const refusals = new WeakMap<FastifyRequest, OAuthError>()

export function installErrorHandling(app: FastifyInstance, metrics: Metrics): void {
  app.setErrorHandler((raw, request, reply) => {
    const err = toOAuthError(raw)
    metrics.oauthErrors.inc({ error: err.code })
    if (err.status >= 500 && err.code !== 'temporarily_unavailable') request.log.error({ reqId: request.id, err: raw }, 'request failed')
    // The request's own log line (src/app.ts) carries the refusal: one line per request.
    refusals.set(request, err)
    return sendError(reply, err)
  })
  app.setNotFoundHandler((_request, reply) => sendError(reply, new OAuthError('not_found', 'no such route')))
}
