// What the route schemas of both listeners share: the RFC 6749 §5.2 error body, the RFC 8414
// metadata (served on both), and the response headers and error answers routes declare.
//
// These schemas do three jobs at once, which is why they live beside the routes rather than in a
// hand-written document: fastify validates requests with them, serializes responses with them
// (fast-json-stringify: a property a response schema does not list is dropped), and
// @fastify/swagger makes the OpenAPI document from them (src/http/openapi.ts).

/** A JSON schema, or the part of a route's schema fastify and @fastify/swagger read. */
export type Schema = Record<string, unknown>

/** OpenAPI's: one way to authenticate, by scheme name, with the scopes (roles) it needs. */
export type Security = Array<Record<string, string[]>>

/** RFC 6749 §5.2: every error answer of both APIs. */
export const oauthError = {
  $id: 'OAuthError',
  description:
    'RFC 6749 §5.2: every error of both APIs, whatever its status, with Cache-Control: no-store. Never a stack trace or ' +
    'another shape.',
  type: 'object',
  required: ['error'],
  additionalProperties: false,
  properties: {
    error: {
      type: 'string',
      description:
        'The error code: those of RFC 6749 §5.2, RFC 6750 §3.1 (invalid_token, insufficient_scope), RFC 8707 ' +
        '(invalid_target), RFC 9449 (invalid_dpop_proof, use_dpop_nonce), slow_down (429), temporarily_unavailable ' +
        '(503), and the admin API’s not_found and conflict.',
      examples: ['invalid_request'],
    },
    error_description: {
      type: 'string',
      description: 'What was wrong, for the developer: which parameter and which rule. Never quotes a secret.',
    },
  },
} as const

const stringList = (description: string) => ({ type: 'array', items: { type: 'string' }, description })

/** RFC 8414 §2, with RFC 9449 §5.1's dpop_signing_alg_values_supported. */
export const serverMetadata = {
  $id: 'AuthorizationServerMetadata',
  description: 'RFC 8414 §2: where the endpoints are and what they accept.',
  type: 'object',
  required: [
    'issuer',
    'token_endpoint',
    'jwks_uri',
    'introspection_endpoint',
    'revocation_endpoint',
    'grant_types_supported',
    'response_types_supported',
    'token_endpoint_auth_methods_supported',
    'token_endpoint_auth_signing_alg_values_supported',
    'introspection_endpoint_auth_methods_supported',
    'introspection_endpoint_auth_signing_alg_values_supported',
    'revocation_endpoint_auth_methods_supported',
    'revocation_endpoint_auth_signing_alg_values_supported',
    'dpop_signing_alg_values_supported',
  ],
  properties: {
    issuer: { type: 'string', format: 'uri', description: 'ISSUER exactly: the iss of every token.' },
    token_endpoint: { type: 'string', format: 'uri' },
    jwks_uri: { type: 'string', format: 'uri' },
    introspection_endpoint: { type: 'string', format: 'uri' },
    revocation_endpoint: { type: 'string', format: 'uri' },
    grant_types_supported: stringList('password, client_credentials and refresh_token.'),
    response_types_supported: stringList('Empty: there is no authorization endpoint.'),
    token_endpoint_auth_methods_supported: stringList('client_secret_basic, client_secret_post, private_key_jwt and none.'),
    token_endpoint_auth_signing_alg_values_supported: stringList('What a private_key_jwt assertion may be signed with.'),
    introspection_endpoint_auth_methods_supported: stringList('As for the token endpoint, without none.'),
    introspection_endpoint_auth_signing_alg_values_supported: stringList('As for the token endpoint.'),
    revocation_endpoint_auth_methods_supported: stringList('As for the token endpoint.'),
    revocation_endpoint_auth_signing_alg_values_supported: stringList('As for the token endpoint.'),
    dpop_signing_alg_values_supported: stringList('What a DPoP proof may be signed with (RFC 9449 §5.1).'),
  },
} as const

/** The components both listeners declare (fastify.addSchema), referred to as `{ $ref: 'Name#' }`. */
export const SHARED_SCHEMAS: readonly Schema[] = [oauthError, serverMetadata]

/** A reference to a component, as fastify and @fastify/swagger both resolve it. */
export const ref = (schema: { $id: string }) => ({ $ref: `${schema.$id}#` })

// GET /.well-known/oauth-authorization-server, one operation on both listeners: src/http/openapi.ts
// merges the two documents, and requires a path they share to be described alike.
export const serverMetadataRoute = {
  tags: ['Metadata'],
  operationId: 'serverMetadata',
  summary: 'Authorization server metadata (RFC 8414)',
  description:
    'Served by both listeners, with no credentials: on the admin listener it tells the CLI where the token endpoint is.',
  security: [] as Security,
  response: {
    200: {
      description: 'The metadata.',
      headers: {
        'Cache-Control': {
          type: 'string',
          description: 'public, max-age=300 on the public listener; no-store on the admin listener.',
          examples: ['public, max-age=300'],
        },
      },
      ...ref(serverMetadata),
    },
  },
}

// Response headers, as @fastify/swagger documents them from a response schema's `headers`.
export const NO_STORE = {
  'Cache-Control': { type: 'string', enum: ['no-store'], description: 'Never cached: the answer is for this request only.' },
} as const
export const NO_STORE_PRAGMA = {
  ...NO_STORE,
  Pragma: { type: 'string', enum: ['no-cache'], description: 'For HTTP/1.0 caches (RFC 6749 §5.1).' },
} as const
export const RETRY_AFTER = {
  'Retry-After': { type: 'integer', minimum: 1, description: 'Seconds to wait before trying again.' },
} as const

/** An error answer: the §5.2 body, with what this status means here and the headers it carries. */
export function errorResponse(description: string, headers: Schema = {}): Schema {
  return { description, headers: { ...NO_STORE_PRAGMA, ...headers }, ...ref(oauthError) }
}

export const unavailable = errorResponse(
  'temporarily_unavailable: the database cannot be reached (or, for a login, the password hashing queue is full). ' +
    'Never any other 5xx.',
  RETRY_AFTER,
)
