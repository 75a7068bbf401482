// The public API's route schemas (src/http/public.ts), and what the OpenAPI document says of it.
//
// The form endpoints check their parameters themselves (src/oauth/params.ts), with descriptions
// that clients and tests rely on, before fastify validates the body against these schemas (see
// src/http/read-first.ts). So a parameter's schema states the same rule, never a stricter one:
// its maxLength is RULES' bound in bytes (a value within it in bytes is within it in characters)
// or only its description gives the bound (tokenParam), grant_type lists its values as examples
// rather than an enum (an unknown one is unsupported_grant_type, after client authentication), and
// a parameter is `required` only when the route's own first step requires it.
import { SIGNING_ALGS } from '../../config.js'
import { RULES } from '../../oauth/params.js'
import { JWT_BEARER } from '../../oauth/client-assertion.js'
import { NO_STORE, NO_STORE_PRAGMA, RETRY_AFTER, errorResponse, ref, unavailable, type Schema, type Security } from './common.js'

/** A form parameter that RULES bounds. */
function param(name: string, description: string, extra: Schema = {}): Schema {
  const max = bound(name)
  return { type: 'string', maxLength: max, description: `${description} At most ${max} bytes of UTF-8.`, ...extra }
}

/**
 * A parameter that carries a token or an assertion: hundreds of characters on every call, which
 * ajv would count one code point at a time (about 2 µs for an access token) to check a maxLength
 * that params.ts has already enforced, in bytes. Its bound is stated in words only.
 */
function tokenParam(name: string, description: string): Schema {
  return { type: 'string', description: `${description} At most ${bound(name)} bytes of UTF-8.` }
}

function bound(name: string): number {
  const rule = RULES[name]
  if (rule === undefined) throw new Error(`no rule for parameter ${name}`)
  return rule.max
}

const clientAuthParams = {
  client_id: param(
    'client_id',
    'client_secret_post and none (a public client): the client’s id. With HTTP Basic it may be sent too, and must match; ' +
      'with private_key_jwt it is optional and must name the assertion’s subject.',
  ),
  client_secret: param('client_secret', 'client_secret_post: the client’s secret. Not together with HTTP Basic or an assertion.', {
    format: 'password',
  }),
  client_assertion: tokenParam(
    'client_assertion',
    'private_key_jwt (RFC 7523 §2.2): a JWT signed by one of the client’s keys, with iss and sub the client id, aud the ' +
      'issuer (a string), a jti never used before and a near exp.',
  ),
  client_assertion_type: param('client_assertion_type', `private_key_jwt: ${JWT_BEARER}.`, { examples: [JWT_BEARER] }),
} as const

const FORM_RULES =
  'Form parameters (RFC 6749 §3.2): each at most once (resource may repeat), one sent empty counts as absent, unknown ' +
  'ones are ignored (§3.1). Values are UTF-8 (raw and percent-encoded) without NUL; identifiers and tokens hold no ' +
  'control characters. A body that breaks a rule is 400 invalid_request naming the parameter, never quoting it.'

const CLIENT_AUTH =
  'The client authenticates (RFC 6749 §2.3) with one method: HTTP Basic (client_secret_basic), client_id and ' +
  'client_secret in the form (client_secret_post), a signed client_assertion (private_key_jwt, RFC 7523), or, for a ' +
  'public client, client_id alone (none).'

const FORM = ['application/x-www-form-urlencoded']

// Basic credentials in the Authorization header, or none there: the other methods are parameters.
const CLIENT_SECURITY: Security = [{ clientSecretBasic: [] }, {}]

const invalidClient = errorResponse(
  'invalid_client: client authentication failed (unknown client, wrong secret, bad assertion, or a method the client ' +
    'may not use).',
  { 'WWW-Authenticate': { type: 'string', description: 'Basic realm="tessera", charset="UTF-8"' } },
)
const slowDown = errorResponse(
  'slow_down: too many failed attempts for this client, username or address; the answer says when to try again.',
  RETRY_AFTER,
)

// --- POST /token ---

export const tokenResponse = {
  $id: 'TokenResponse',
  description: 'RFC 6749 §5.1.',
  type: 'object',
  required: ['access_token', 'token_type', 'expires_in', 'scope'],
  additionalProperties: false,
  properties: {
    access_token: {
      type: 'string',
      description: 'A JWT (RFC 9068, typ at+jwt) that resource servers verify against /jwks, or check by introspection.',
    },
    token_type: {
      type: 'string',
      enum: ['Bearer', 'DPoP'],
      description: 'DPoP when the request carried a DPoP proof: the token is bound to its key (cnf.jkt) and only good with proofs of it.',
    },
    expires_in: { type: 'integer', minimum: 1, description: 'Seconds the access token lives.' },
    scope: { type: 'string', description: 'The scopes granted, space-separated: all that were asked for, or all allowed.' },
    refresh_token: {
      type: 'string',
      description:
        'password grant, when the client may use refresh_token; refresh_token grant: the next one (it rotates: the one ' +
        'presented is spent, and presenting it again revokes the whole family). Opaque.',
    },
  },
} as const

export const token = {
  tags: ['Token'],
  operationId: 'token',
  summary: 'Issue tokens (password, client_credentials, refresh_token)',
  description: [
    'RFC 6749 §3.2. grant_type password (§4.3: username, password) for a user, client_credentials (§4.4) for the client ' +
      'itself (sub is the client id; no refresh token), refresh_token (§6: the refresh token, rotated at every use). ' +
      'scope asks for some of the scopes the client (and user) may have; omitted, all of them; one beyond is ' +
      'invalid_scope. resource (RFC 8707, may repeat) picks the aud among the client’s audiences.',
    CLIENT_AUTH,
    'With a DPoP header (RFC 9449), the tokens are bound to the proof’s key; a client with dpop_bound_access_tokens must ' +
      'send one. When the server uses nonces, the answer carries DPoP-Nonce for the next proof.',
    FORM_RULES,
  ].join('\n\n'),
  consumes: FORM,
  security: CLIENT_SECURITY,
  headers: {
    type: 'object',
    properties: {
      DPoP: {
        type: 'string',
        description: 'A DPoP proof (RFC 9449 §4): a JWT of typ dpop+jwt, htm POST, htu the token endpoint, signed by the key in its header.',
      },
    },
  },
  body: {
    type: 'object',
    required: ['grant_type'],
    properties: {
      grant_type: param('grant_type', 'password, client_credentials or refresh_token; any other is unsupported_grant_type.', {
        examples: ['client_credentials', 'password', 'refresh_token'],
      }),
      scope: param('scope', 'Space-separated scopes (RFC 6749 §3.3).'),
      resource: {
        description:
          'RFC 8707: the audience of the token, one of the client’s audiences; may repeat for several. Omitted: the ' +
          `client’s first audience, else the issuer. At most ${RULES['resource']!.max} bytes each.`,
        anyOf: [
          { type: 'string', maxLength: RULES['resource']!.max },
          { type: 'array', items: { type: 'string', maxLength: RULES['resource']!.max } },
        ],
      },
      username: param('username', 'password grant: required. Matched case-insensitively.'),
      password: param('password', 'password grant: required. Free text: any character but NUL.', { format: 'password' }),
      refresh_token: tokenParam('refresh_token', 'refresh_token grant: required.'),
      ...clientAuthParams,
    },
    'x-examples': {
      client_credentials: { summary: 'A token for the client itself', value: { grant_type: 'client_credentials', scope: 'read' } },
      password: {
        summary: 'A token and a refresh token for a user',
        value: { grant_type: 'password', username: 'alice', password: 'correct horse battery staple', scope: 'read write' },
      },
      refresh_token: { summary: 'The next pair, for a refresh token', value: { grant_type: 'refresh_token', refresh_token: 'Zm9v…' } },
    },
  },
  response: {
    200: {
      description: 'The tokens.',
      headers: {
        ...NO_STORE_PRAGMA,
        'DPoP-Nonce': {
          type: 'string',
          description: 'With a DPoP proof, when the server uses nonces (DPOP_NONCE): the nonce for the client’s next proof (RFC 9449 §8).',
        },
      },
      ...ref(tokenResponse),
    },
    400: errorResponse(
      'invalid_request (a malformed request), invalid_grant (wrong username or password, a spent or unknown refresh ' +
        'token), unauthorized_client (a grant the client may not use), unsupported_grant_type, invalid_scope, ' +
        'invalid_target (a resource the client may not ask for), invalid_dpop_proof, or use_dpop_nonce with the ' +
        'nonce to use in DPoP-Nonce.',
      { 'DPoP-Nonce': { type: 'string', description: 'With use_dpop_nonce: the nonce the next proof must carry.' } },
    ),
    401: invalidClient,
    429: slowDown,
    503: unavailable,
  },
}

// --- POST /introspect ---

export const introspectionResponse = {
  $id: 'IntrospectionResponse',
  description:
    'RFC 7662 §2.2. An active token is shown to the client it was issued to, and to a client registered as a resource ' +
    'server for one of its audiences; a refresh token only to its client. Every other answer, for an unknown, expired, ' +
    'revoked or someone else’s token, is exactly {"active":false}.',
  type: 'object',
  required: ['active'],
  additionalProperties: false,
  properties: {
    active: { type: 'boolean' },
    scope: { type: 'string' },
    client_id: { type: 'string' },
    username: { type: 'string', description: 'The user’s current username, for a token of the password grant.' },
    token_type: {
      type: 'string',
      enum: ['Bearer', 'DPoP', 'refresh_token'],
      description: 'DPoP for an access token bound to a key (RFC 9449 §6.2); refresh_token for a refresh token.',
    },
    cnf: {
      type: 'object',
      required: ['jkt'],
      additionalProperties: false,
      description: 'The key the token is bound to (RFC 9449 §6.2): its JWK SHA-256 thumbprint.',
      properties: { jkt: { type: 'string' } },
    },
    exp: { type: 'integer' },
    iat: { type: 'integer' },
    nbf: { type: 'integer' },
    sub: { type: 'string', description: 'The user’s id, or the client id for a client_credentials token.' },
    // An array before a string: fast-json-stringify tries the types in order, and an array passes its string test.
    aud: {
      type: ['array', 'string'],
      items: { type: 'string' },
      description: 'The audience: one resource identifier, or several.',
    },
    iss: { type: 'string' },
    jti: { type: 'string', description: 'An access token’s id.' },
    token_use: { type: 'string', enum: ['access_token', 'refresh_token'], description: 'Which kind of token this is.' },
  },
} as const

export const introspect = {
  tags: ['Introspection'],
  operationId: 'introspect',
  summary: 'Introspect a token',
  description: [
    'RFC 7662. The caller authenticates as a confidential client (HTTP Basic, client_secret_post or private_key_jwt; ' +
      'not none). token_type_hint is accepted and not needed: the two kinds of token cannot be mistaken.',
    FORM_RULES,
  ].join('\n\n'),
  consumes: FORM,
  security: CLIENT_SECURITY,
  body: {
    type: 'object',
    required: ['token'],
    properties: {
      token: tokenParam('token', 'The access token or refresh token.'),
      token_type_hint: param('token_type_hint', 'access_token or refresh_token (RFC 7662 §2.1); ignored.'),
      ...clientAuthParams,
    },
  },
  response: {
    200: { description: 'The token’s state.', headers: NO_STORE_PRAGMA, ...ref(introspectionResponse) },
    400: errorResponse('invalid_request: a malformed request, or no token.'),
    401: invalidClient,
    429: slowDown,
    503: unavailable,
  },
}

// --- POST /revoke ---

export const revoke = {
  tags: ['Revocation'],
  operationId: 'revoke',
  summary: 'Revoke a token',
  description: [
    'RFC 7009. A client revokes its own tokens: an access token until it expires, a refresh token with its whole grant ' +
      '(every refresh token of the family and the access tokens issued with them). Once answered, no instance shows the ' +
      'token active. Public clients (none) may revoke too.',
    FORM_RULES,
  ].join('\n\n'),
  consumes: FORM,
  security: CLIENT_SECURITY,
  body: {
    type: 'object',
    required: ['token'],
    properties: {
      token: tokenParam('token', 'The access token or refresh token to revoke.'),
      token_type_hint: param('token_type_hint', 'access_token or refresh_token (RFC 7009 §2.1); ignored.'),
      ...clientAuthParams,
    },
  },
  response: {
    200: {
      description:
        'Revoked, or nothing to revoke: an unknown, malformed, expired or already revoked token, or another client’s, is ' +
        'answered the same (RFC 7009 §2.2). No body.',
      headers: NO_STORE_PRAGMA,
      type: 'null',
    },
    400: errorResponse('invalid_request: a malformed request, or no token.'),
    401: invalidClient,
    429: slowDown,
    503: unavailable,
  },
}

// --- GET /jwks ---

export const jwkSet = {
  $id: 'JwkSet',
  description: 'RFC 7517 §5: the public keys that verify live tokens, each with kid, alg and use "sig".',
  type: 'object',
  required: ['keys'],
  properties: {
    keys: {
      type: 'array',
      items: {
        type: 'object',
        required: ['kty', 'kid', 'alg', 'use'],
        properties: {
          kty: { type: 'string', enum: ['EC', 'OKP', 'RSA'] },
          kid: { type: 'string' },
          alg: { type: 'string', enum: SIGNING_ALGS },
          use: { type: 'string', enum: ['sig'] },
          crv: { type: 'string' },
          x: { type: 'string' },
          y: { type: 'string' },
          n: { type: 'string' },
          e: { type: 'string' },
        },
      },
    },
  },
} as const

const JWKS_CACHING = {
  'Cache-Control': { type: 'string', description: 'public, max-age=JWKS_MAX_AGE', examples: ['public, max-age=300'] },
  ETag: { type: 'string', description: 'The key set’s entity tag: send it back in If-None-Match.' },
}

export const jwks = {
  tags: ['Keys'],
  operationId: 'jwks',
  summary: 'The signing keys (JWK Set)',
  description:
    'The public keys that verify live access tokens (RFC 7517). A new key is published here JWKS_MAX_AGE (and two polls) ' +
    'before it signs, and a retired one stays until its tokens have expired, so a cache that honours max-age never misses ' +
    'a key.',
  headers: {
    type: 'object',
    properties: {
      'If-None-Match': { type: 'string', description: 'An ETag from an earlier answer (or *): 304 while the set is unchanged.' },
    },
  },
  response: {
    200: {
      description: 'The key set.',
      headers: JWKS_CACHING,
      content: { 'application/jwk-set+json': { schema: ref(jwkSet) } },
    },
    304: { description: 'Not modified: the set still has the ETag given.', headers: JWKS_CACHING, type: 'null' },
  },
}

// --- GET /healthz, GET /readyz ---

export const healthz = {
  tags: ['Health'],
  operationId: 'healthz',
  summary: 'Liveness',
  description: 'The process answers. Nothing else is checked: restart it only when this fails.',
  response: {
    200: {
      description: 'Alive.',
      type: 'object',
      required: ['status'],
      additionalProperties: false,
      properties: { status: { type: 'string', enum: ['ok'] } },
    },
  },
}

const readiness = {
  $id: 'Readiness',
  type: 'object',
  required: ['status', 'database', 'signingKey', 'view'],
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['ready', 'not ready'] },
    database: { type: 'boolean', description: 'The database answers.' },
    signingKey: { type: 'boolean', description: 'A signing key is loaded.' },
    view: {
      type: 'string',
      enum: ['leased', 'behind', 'disconnected', 'off', 'stopped'],
      description:
        'How this instance answers client_credentials and introspection: leased, from memory; behind or disconnected, ' +
        'reading the database per call; off, SERVE_FROM_MEMORY=false; stopped, shutting down. Every one serves.',
    },
  },
} as const

export const readyz = {
  tags: ['Health'],
  operationId: 'readyz',
  summary: 'Readiness',
  description: 'Ready to take traffic: the database answers and a key signs.',
  response: {
    200: { description: 'Ready.', headers: NO_STORE, ...ref(readiness) },
    503: { description: 'Not ready: take this instance out of the load balancer.', headers: NO_STORE, ...ref(readiness) },
  },
}

/** The components of the public API's routes. */
export const PUBLIC_SCHEMAS: readonly Schema[] = [tokenResponse, introspectionResponse, jwkSet, readiness]

/** How a caller authenticates at the public API, for the document's components. */
export const PUBLIC_SECURITY_SCHEMES = {
  clientSecretBasic: {
    type: 'http',
    scheme: 'basic',
    description:
      'client_secret_basic (RFC 6749 §2.3.1): the client id and secret, each form-urlencoded, as HTTP Basic credentials. ' +
      'The other client authentication methods are form parameters: client_secret_post (client_id and client_secret), ' +
      'private_key_jwt (client_assertion and client_assertion_type, RFC 7523) and, for a public client, none (client_id ' +
      'alone). Use one method per request.',
  },
} as const
