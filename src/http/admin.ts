import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AUDIT_EVENT_TYPES, type AdminChange, type AuditEventType } from '../audit/events.js'
import type { AuditCursor, AuditFilter } from '../audit/repository.js'
import { auditView } from '../audit/service.js'
import { AUTH_METHODS, GRANT_TYPES, type AuthMethod, type Client, type ClientSettings, type JwkSet } from '../clients/repository.js'
import { OAuthError, invalidDpopProof, invalidRequest, notFound } from '../errors.js'
import { LIMITS, checkText, type TextRule } from '../input.js'
import { DPOP_ALGS } from '../oauth/dpop.js'
import { CLIENT_ALGS, type ClientAlg } from '../oauth/jws.js'
import type { Tessera } from '../tessera.js'
import { asUuid } from '../tokens/repository.js'
import type { User } from '../users/repository.js'
import { dpopHeaders, metadata } from './public.js'

const METADATA_PATH = '/.well-known/oauth-authorization-server'

// JSON schemas of the admin API's bodies. Unknown properties are refused rather than dropped, so
// a typo is an error instead of a silent no-op.
const scopeList = {
  type: 'array',
  maxItems: 200,
  uniqueItems: true,
  items: { type: 'string', pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$', maxLength: 200 },
} as const
const identifierList = {
  type: 'array',
  maxItems: 100,
  uniqueItems: true,
  items: { type: 'string', pattern: '^[^\\s\\x00-\\x1f\\x7f]+$', maxLength: 2000 },
} as const
const ttl = { type: ['integer', 'null'], minimum: 1, maximum: 315_360_000 } as const
// RFC 7517 §5: a JWK Set; what each key may be is the client rules' to judge (src/clients/settings.ts).
const jwkSet = {
  anyOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['keys'],
      properties: { keys: { type: 'array', minItems: 1, maxItems: 10, items: { type: 'object', maxProperties: 30 } } },
    },
    { type: 'null' },
  ],
} as const
const clientProperties = {
  name: { type: 'string', minLength: 1, maxLength: 200 },
  grant_types: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: GRANT_TYPES } },
  scopes: scopeList,
  audiences: identifierList,
  resource_identifiers: identifierList,
  access_token_ttl: ttl,
  refresh_token_ttl: ttl,
  token_endpoint_auth_method: { enum: AUTH_METHODS },
  jwks: jwkSet,
  jwks_uri: { anyOf: [{ type: 'string', maxLength: 2000, pattern: '^[^\\s\\x00-\\x1f\\x7f]+$' }, { type: 'null' }] },
  token_endpoint_auth_signing_alg: { enum: [...CLIENT_ALGS, null] },
  dpop_bound_access_tokens: { type: 'boolean' },
} as const
const createClientSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'grant_types', 'scopes'],
  properties: clientProperties,
} as const
const patchClientSchema = { type: 'object', additionalProperties: false, minProperties: 1, properties: clientProperties } as const
// Its length and content are the password policy's to judge (src/users/password-policy.ts), with
// a description that says which rule failed.
const password = { type: 'string' } as const
const userScopes = { anyOf: [scopeList, { type: 'null' }] } as const
const createUserSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['username', 'password'],
  properties: {
    // No control characters, no surrounding white space: a username is something people type.
    username: { type: 'string', minLength: 1, maxLength: 200, pattern: '^(?!\\s)[^\\x00-\\x1f\\x7f]*(?<!\\s)$' },
    password,
    scopes: userScopes,
  },
} as const
const patchUserSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { disabled: { type: 'boolean' }, scopes: userScopes },
} as const
const passwordSchema = { type: 'object', additionalProperties: false, required: ['password'], properties: { password } } as const
const rotateSecretSchema = {
  anyOf: [
    {
      type: 'object',
      additionalProperties: false,
      properties: { grace_seconds: { type: 'integer', minimum: 0, maximum: 31_536_000 } },
    },
    { type: 'null' },
  ],
} as const

interface ClientBody {
  name?: string
  grant_types?: ClientSettings['grantTypes']
  scopes?: string[]
  audiences?: string[]
  resource_identifiers?: string[]
  access_token_ttl?: number | null
  refresh_token_ttl?: number | null
  token_endpoint_auth_method?: AuthMethod
  jwks?: JwkSet | null
  jwks_uri?: string | null
  token_endpoint_auth_signing_alg?: ClientAlg | null
  dpop_bound_access_tokens?: boolean
}

function clientSettings(b: ClientBody): Partial<ClientSettings> {
  return {
    ...(b.name !== undefined && { name: b.name }),
    ...(b.grant_types !== undefined && { grantTypes: b.grant_types }),
    ...(b.scopes !== undefined && { scopes: b.scopes }),
    ...(b.audiences !== undefined && { audiences: b.audiences }),
    ...(b.resource_identifiers !== undefined && { resourceIdentifiers: b.resource_identifiers }),
    ...(b.access_token_ttl !== undefined && { accessTokenTtl: b.access_token_ttl }),
    ...(b.refresh_token_ttl !== undefined && { refreshTokenTtl: b.refresh_token_ttl }),
    ...(b.token_endpoint_auth_method !== undefined && { tokenEndpointAuthMethod: b.token_endpoint_auth_method }),
    ...(b.jwks !== undefined && { jwks: b.jwks }),
    ...(b.jwks_uri !== undefined && { jwksUri: b.jwks_uri }),
    ...(b.token_endpoint_auth_signing_alg !== undefined && { tokenEndpointAuthSigningAlg: b.token_endpoint_auth_signing_alg }),
    ...(b.dpop_bound_access_tokens !== undefined && { dpopBoundAccessTokens: b.dpop_bound_access_tokens }),
  }
}

/** A client as the admin API shows it: never its secret. */
export function clientView(c: Client) {
  return {
    client_id: c.clientId,
    name: c.name,
    grant_types: c.grantTypes,
    scopes: c.scopes,
    audiences: c.audiences,
    resource_identifiers: c.resourceIdentifiers,
    access_token_ttl: c.accessTokenTtl,
    refresh_token_ttl: c.refreshTokenTtl,
    token_endpoint_auth_method: c.tokenEndpointAuthMethod,
    jwks: c.jwks,
    jwks_uri: c.jwksUri,
    token_endpoint_auth_signing_alg: c.tokenEndpointAuthSigningAlg,
    dpop_bound_access_tokens: c.dpopBoundAccessTokens,
    created_at: c.createdAt.toISOString(),
    updated_at: c.updatedAt.toISOString(),
  }
}

/** A user as the admin API shows it: never the password hash. */
export function userView(u: User) {
  return {
    id: u.id,
    username: u.username,
    disabled: u.disabled,
    scopes: u.scopes,
    created_at: u.createdAt.toISOString(),
    updated_at: u.updatedAt.toISOString(),
  }
}

/** `?limit=` and `?after=`; each at most once (a repeated one arrives as an array). */
function paging(q: Record<string, unknown>): { limit: number; after: string | undefined } {
  const limitRaw = q['limit']
  let limit = 100
  if (limitRaw !== undefined) {
    if (typeof limitRaw !== 'string' || !/^\d+$/.test(limitRaw) || Number(limitRaw) < 1 || Number(limitRaw) > 1000) {
      throw invalidRequest('limit must be a whole number from 1 to 1000')
    }
    limit = Number(limitRaw)
  }
  return { limit, after: singleQueryValue(q, 'after') }
}

function singleQueryValue(q: Record<string, unknown>, name: string): string | undefined {
  const value = q[name]
  if (value !== undefined && typeof value !== 'string') throw invalidRequest(`${name} must be given once`)
  return value
}

const query = (request: FastifyRequest) => (request.query ?? {}) as Record<string, unknown>

// What the path and query parameters may hold (src/input.ts). A user id that is not a UUID is
// simply not found (404); one with a control character or beyond any id's length is malformed.
const PATH_RULES: Record<string, TextRule> = { client_id: { max: LIMITS.clientId }, id: { max: LIMITS.id } }
const QUERY_RULES: Record<string, TextRule> = {
  username: { max: LIMITS.username },
  after: { max: LIMITS.id },
  limit: { max: LIMITS.keyword },
  immediate: { max: LIMITS.keyword },
}
const OTHER_QUERY: TextRule = { max: LIMITS.other, freeText: true }

function checkPathAndQuery(request: FastifyRequest): void {
  for (const [name, value] of Object.entries((request.params ?? {}) as Record<string, string>)) {
    checkText(`${name} in the path`, value, PATH_RULES[name] ?? { max: LIMITS.id })
  }
  for (const [name, value] of Object.entries(query(request))) {
    checkText('a query parameter name', name, { max: LIMITS.keyword })
    for (const v of Array.isArray(value) ? value : [value]) {
      checkText(`query parameter "${name}"`, String(v), QUERY_RULES[name] ?? OTHER_QUERY)
    }
  }
}

/**
 * The access token's client and scopes if it is an active access token of this server, sent as a
 * resource server must accept it: in the Authorization header only (RFC 6750 §2.1: not in a form
 * body or the query), as `Bearer`, or as `DPoP` with a proof of its key when it is DPoP-bound
 * (RFC 9449 §7.1: the proof checked as the token endpoint checks one, for this request's method
 * and URL, ath included). A bound token sent as Bearer is refused: that is what binding is for.
 */
async function bearer(t: Tessera, request: FastifyRequest): Promise<{ clientId: string; scopes: string[] }> {
  const match = /^(Bearer|DPoP)[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(request.headers.authorization ?? '')
  if (match === null) throw new OAuthError('invalid_token', 'an access token is required (Authorization: Bearer, or DPoP)')
  const [, scheme, token] = match as unknown as [string, string, string]
  // RFC 6750 §3.1: a malformed request is invalid_request; no token of ours is anywhere near this.
  if (token.length > LIMITS.token) throw invalidRequest(`the access token is too long (at most ${LIMITS.token} bytes)`)
  const active = await t.status.activeAccessToken(token)
  if (active === undefined) throw new OAuthError('invalid_token', 'the access token is not active')
  const jkt = active.claims.cnf?.jkt
  if (scheme.toLowerCase() === 'bearer') {
    if (jkt !== undefined) {
      throw new OAuthError('invalid_token', 'this access token is DPoP-bound: send it as Authorization: DPoP, with a proof', undefined, undefined, {
        headers: { 'www-authenticate': dpopChallenge('invalid_token') },
      })
    }
  } else {
    if (jkt === undefined) throw new OAuthError('invalid_token', 'this access token is not DPoP-bound: send it as Bearer')
    await proveKey(t, request, token, jkt)
  }
  return { clientId: active.claims.client_id, scopes: active.claims.scope.split(' ') }
}

/** RFC 9449 §7.1: the request's DPoP proof, for this token (ath), by the key it is bound to. */
async function proveKey(t: Tessera, request: FastifyRequest, token: string, jkt: string): Promise<void> {
  try {
    const proof = await t.dpop.verify({
      headers: dpopHeaders(request),
      method: request.method,
      // The admin listener has no URL of its own: the one the request was sent to.
      url: `${request.protocol}://${request.host}${request.url.split('?')[0]}`,
      nonceRequired: false,
      accessToken: token,
    })
    if (proof === undefined) throw invalidDpopProof('a DPoP-bound access token needs a DPoP proof')
    if (proof.jkt !== jkt) throw invalidDpopProof('the DPoP proof is made with another key than the token is bound to')
  } catch (err) {
    // A resource server answers 401 with a DPoP challenge where the token endpoint answers 400.
    if (err instanceof OAuthError && (err.code === 'invalid_dpop_proof' || err.code === 'use_dpop_nonce')) {
      throw err.with({ status: 401, headers: { 'www-authenticate': dpopChallenge(err.code) } })
    }
    throw err
  }
}

const dpopChallenge = (error: string) => `DPoP realm="tessera", error="${error}", algs="${DPOP_ALGS.join(' ')}"`

function requireScope(scopes: string[], accepted: string[]): void {
  if (!accepted.some((s) => scopes.includes(s))) {
    throw new OAuthError('insufficient_scope', `requires scope ${accepted.join(' or ')}`)
  }
}

export function adminRoutes(app: FastifyInstance, t: Tessera): void {
  app.addHook('onRequest', async (request, reply) => {
    reply.header('cache-control', 'no-store')
    // Public on this listener too: the CLI finds the token endpoint from the admin URL alone.
    if (request.routeOptions.url === METADATA_PATH) return
    // Before the body is read: an anonymous caller learns nothing about what the body should be.
    const { clientId, scopes } = await bearer(t, request)
    calls.set(request, { adminClientId: clientId })
    requireScope(scopes, request.routeOptions.url === '/metrics' ? ['metrics', 'admin'] : ['admin'])
    checkPathAndQuery(request)
  })

  // Every call to a mutating route is on record once answered, refused ones too.
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url
    if (route === undefined || !MUTATING.has(request.method)) return
    t.audit.record(adminChange(request, route, reply.statusCode))
  })

  app.get(METADATA_PATH, async () => metadata(t.issuer()))

  app.get('/metrics', async (_request, reply) => {
    return reply.header('content-type', t.metrics.registry.contentType).send(await t.metrics.text())
  })

  // Clients
  app.post('/admin/clients', { schema: { body: createClientSchema } }, async (request, reply) => {
    const body = request.body as Required<Pick<ClientBody, 'name' | 'grant_types' | 'scopes'>> & ClientBody
    const { client, secret } = await t.clients.create({
      name: body.name,
      grantTypes: body.grant_types,
      scopes: body.scopes,
      audiences: body.audiences ?? [],
      resourceIdentifiers: body.resource_identifiers ?? [],
      accessTokenTtl: body.access_token_ttl ?? null,
      refreshTokenTtl: body.refresh_token_ttl ?? null,
      tokenEndpointAuthMethod: body.token_endpoint_auth_method ?? 'client_secret_basic',
      jwks: body.jwks ?? null,
      jwksUri: body.jwks_uri ?? null,
      tokenEndpointAuthSigningAlg: body.token_endpoint_auth_signing_alg ?? null,
      dpopBoundAccessTokens: body.dpop_bound_access_tokens ?? false,
    })
    target(request, { client: client.clientId })
    // A private_key_jwt or public client has no secret: nothing to show.
    return reply.code(201).send({ ...clientView(client), ...(secret !== undefined && { client_secret: secret }) })
  })

  app.get('/admin/clients', async (request) => {
    const page = paging(query(request))
    const clients = await t.clients.list(page)
    return { clients: clients.map(clientView), ...nextPage(clients.length, page.limit, clients.at(-1)?.clientId) }
  })

  app.get<{ Params: { client_id: string } }>('/admin/clients/:client_id', async (request) => {
    const client = await t.clients.find(request.params.client_id)
    if (client === undefined) throw notFound('client')
    return clientView(client)
  })

  app.patch<{ Params: { client_id: string } }>(
    '/admin/clients/:client_id',
    { schema: { body: patchClientSchema } },
    async (request) => {
      const client = await t.clients.update(request.params.client_id, clientSettings(request.body as ClientBody))
      if (client === undefined) throw notFound('client')
      return clientView(client)
    },
  )

  app.delete<{ Params: { client_id: string } }>('/admin/clients/:client_id', async (request, reply) => {
    if (!(await t.clients.delete(request.params.client_id))) throw notFound('client')
    return reply.code(204).send()
  })

  app.post<{ Params: { client_id: string } }>(
    '/admin/clients/:client_id/secret',
    { schema: { body: rotateSecretSchema } },
    async (request) => {
      const grace = (request.body as { grace_seconds?: number } | null | undefined)?.grace_seconds ?? 0
      const secret = await t.clients.rotateSecret(request.params.client_id, grace)
      if (secret === undefined) throw notFound('client')
      return { client_secret: secret }
    },
  )

  app.post<{ Params: { client_id: string } }>('/admin/clients/:client_id/revoke-tokens', async (request, reply) => {
    if (!(await t.tokens.revokeAllForClient(request.params.client_id))) throw notFound('client')
    t.audit.record({
      type: 'token.revoked',
      via: 'admin',
      address: request.ip,
      adminClientId: calls.get(request)?.adminClientId ?? null,
      target: { kind: 'client', clientId: request.params.client_id },
    })
    return reply.code(204).send()
  })

  // Users
  app.post('/admin/users', { schema: { body: createUserSchema } }, async (request, reply) => {
    const body = request.body as { username: string; password: string; scopes?: string[] | null }
    const user = await t.users.create({ username: body.username, password: body.password, scopes: body.scopes ?? null })
    target(request, { user: user.id })
    return reply.code(201).send(userView(user))
  })

  app.get('/admin/users', async (request) => {
    const q = query(request)
    const username = singleQueryValue(q, 'username')
    if (username !== undefined) {
      const user = await t.users.findByUsername(username)
      return { users: user === undefined ? [] : [userView(user)] }
    }
    const page = paging(q)
    const users = await t.users.list(page)
    return { users: users.map(userView), ...nextPage(users.length, page.limit, users.at(-1)?.id) }
  })

  app.get<{ Params: { id: string } }>('/admin/users/:id', async (request) => {
    const user = await t.users.find(request.params.id)
    if (user === undefined) throw notFound('user')
    return userView(user)
  })

  app.patch<{ Params: { id: string } }>('/admin/users/:id', { schema: { body: patchUserSchema } }, async (request) => {
    const user = await t.users.update(request.params.id, request.body as { disabled?: boolean; scopes?: string[] | null })
    if (user === undefined) throw notFound('user')
    return userView(user)
  })

  app.delete<{ Params: { id: string } }>('/admin/users/:id', async (request, reply) => {
    if (!(await t.users.delete(request.params.id))) throw notFound('user')
    return reply.code(204).send()
  })

  app.post<{ Params: { id: string } }>('/admin/users/:id/password', { schema: { body: passwordSchema } }, async (request, reply) => {
    if (!(await t.users.setPassword(request.params.id, (request.body as { password: string }).password))) {
      throw notFound('user')
    }
    return reply.code(204).send()
  })

  // The user's failed-login count (src/throttle/login.ts): how many, and until when logins wait.
  app.get<{ Params: { id: string } }>('/admin/users/:id/lockout', async (request) => {
    const user = await t.users.find(request.params.id)
    if (user === undefined) throw notFound('user')
    const state = await t.loginThrottle.state(user.username)
    const now = t.clock.now()
    const blockedUntil = state?.blockedUntil != null && state.blockedUntil > now ? state.blockedUntil : null
    return {
      user_id: user.id,
      username: user.username,
      failures: state?.failures ?? 0,
      locked: blockedUntil !== null,
      locked_until: blockedUntil?.toISOString() ?? null,
    }
  })

  app.delete<{ Params: { id: string } }>('/admin/users/:id/lockout', async (request, reply) => {
    const user = await t.users.find(request.params.id)
    if (user === undefined) throw notFound('user')
    await t.loginThrottle.clear(user.username)
    return reply.code(204).send()
  })

  app.post<{ Params: { id: string } }>('/admin/users/:id/revoke-tokens', async (request, reply) => {
    if (!(await t.tokens.revokeAllForUser(request.params.id))) throw notFound('user')
    t.audit.record({
      type: 'token.revoked',
      via: 'admin',
      address: request.ip,
      adminClientId: calls.get(request)?.adminClientId ?? null,
      target: { kind: 'user', userId: request.params.id.toLowerCase() },
    })
    return reply.code(204).send()
  })

  // Signing keys
  app.get('/admin/keys', async () => ({ keys: await t.keys.list() }))

  app.post('/admin/keys/rotate', async (request) => {
    const immediate = singleQueryValue(query(request), 'immediate')
    if (immediate !== undefined && immediate !== 'true' && immediate !== 'false') {
      throw invalidRequest('immediate must be true or false')
    }
    const key = await t.keys.rotate({ immediate: immediate === 'true' })
    target(request, { kid: key.kid })
    return key
  })

  // Security events
  app.get('/admin/audit', async (request) => {
    const filter = auditFilter(t, query(request))
    const events = await t.audit.list(filter)
    const last = events.at(-1)
    return {
      events: events.map(auditView),
      ...nextPage(events.length, filter.limit, last && `${last.at.getTime()}-${last.id}`),
    }
  })
}

// --- the record of admin changes ---

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/** What the audit needs to know about one admin call, beyond the request itself. */
interface AdminCall {
  adminClientId: string | null
  /** What a creation made; other routes name their target in the path. */
  target?: AdminChange['target']
}

const calls = new WeakMap<FastifyRequest, AdminCall>()

function target(request: FastifyRequest, made: NonNullable<AdminChange['target']>): void {
  calls.set(request, { adminClientId: calls.get(request)?.adminClientId ?? null, target: made })
}

/**
 * Body fields recorded with a successful change: settings only. A password is never listed, and
 * secrets are made here, never sent; only a body the route's schema accepted is read.
 */
const RECORDED_FIELDS = [
  'name',
  'grant_types',
  'scopes',
  'audiences',
  'resource_identifiers',
  'access_token_ttl',
  'refresh_token_ttl',
  'token_endpoint_auth_method',
  'jwks',
  'jwks_uri',
  'token_endpoint_auth_signing_alg',
  'dpop_bound_access_tokens',
  'username',
  'disabled',
  'grace_seconds',
]

function adminChange(request: FastifyRequest, route: string, status: number): AdminChange {
  const call = calls.get(request)
  const params = (request.params ?? {}) as Record<string, string | undefined>
  const userId = route.startsWith('/admin/users/:id') ? params['id'] : undefined
  const target = call?.target ?? {
    ...(params['client_id'] !== undefined && { client: params['client_id'] }),
    ...(userId !== undefined && { user: asUuid(userId)?.toLowerCase() ?? userId }),
  }
  let changes: Record<string, unknown> | undefined
  if (status < 300) {
    // A route without a body schema takes no body: whatever was sent with it is not read.
    const validated = request.routeOptions.schema?.body !== undefined && typeof request.body === 'object' && request.body !== null
    const body = (validated ? request.body : {}) as Record<string, unknown>
    changes = Object.fromEntries(RECORDED_FIELDS.filter((f) => body[f] !== undefined).map((f) => [f, body[f]]))
    if (route === '/admin/keys/rotate') changes['immediate'] = query(request)['immediate'] === 'true'
  }
  return {
    type: 'admin.change',
    address: request.ip,
    adminClientId: call?.adminClientId ?? null,
    method: request.method,
    route,
    status,
    ...(Object.keys(target).length > 0 && { target }),
    ...(changes !== undefined && Object.keys(changes).length > 0 && { changes }),
  }
}

// --- GET /admin/audit ---

const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/
const CURSOR = /^(\d{1,16})-(\d{1,19})$/
const MAX_BIGINT = 2n ** 63n - 1n

/** An ISO 8601 time (a date alone is midnight UTC). */
function timeParam(q: Record<string, unknown>, name: string): Date | undefined {
  const raw = singleQueryValue(q, name)
  if (raw === undefined) return undefined
  const ms = ISO_TIME.test(raw) ? Date.parse(raw) : NaN
  if (!Number.isFinite(ms)) throw invalidRequest(`${name} must be an ISO 8601 time such as 2024-05-01T12:00:00Z`)
  return new Date(ms)
}

/** `next` of an earlier page: the time and id of the last event on it. */
function cursor(raw: string | undefined): AuditCursor | undefined {
  if (raw === undefined) return undefined
  const m = CURSOR.exec(raw)
  const ms = m === null ? NaN : Number(m[1])
  if (m === null || ms > 8.64e15 || BigInt(m[2]!) > MAX_BIGINT) throw invalidRequest('after must be the next of an earlier page')
  return { at: new Date(ms), id: m[2]! }
}

/**
 * The filters of GET /admin/audit: `type` (one or more, comma-separated), `user` (a user id),
 * `username` (as typed at login), `client` (a client id: events about it or made by it as an
 * admin), `since` and `until` (ISO 8601; since inclusive, until exclusive), `limit` and `after`.
 */
function auditFilter(t: Tessera, q: Record<string, unknown>): AuditFilter {
  const { limit, after } = paging(q)
  const typeRaw = singleQueryValue(q, 'type')
  let types: AuditEventType[] | undefined
  if (typeRaw !== undefined) {
    const list = typeRaw.split(',').map((s) => s.trim())
    const unknown = list.filter((s) => !(AUDIT_EVENT_TYPES as readonly string[]).includes(s))
    if (unknown.length > 0) throw invalidRequest(`type must be one or more of ${AUDIT_EVENT_TYPES.join(', ')}`)
    types = list as AuditEventType[]
  }
  const userRaw = singleQueryValue(q, 'user')
  const userId = userRaw === undefined ? undefined : asUuid(userRaw)?.toLowerCase()
  if (userRaw !== undefined && userId === undefined) throw invalidRequest('user must be the id of a user')
  const clientId = singleQueryValue(q, 'client')
  if (clientId !== undefined && (clientId === '' || clientId.length > 500)) throw invalidRequest('client must be a client id')
  const username = singleQueryValue(q, 'username')
  if (username !== undefined && (username === '' || username.length > 1000)) throw invalidRequest('username must not be empty')
  const since = timeParam(q, 'since')
  const until = timeParam(q, 'until')
  if (since !== undefined && until !== undefined && since > until) throw invalidRequest('since must not be after until')
  return {
    limit,
    types,
    userId,
    clientId,
    usernameHash: username === undefined ? undefined : t.audit.hashUsername(username),
    since,
    until,
    after: cursor(after),
  }
}

/** Where the next page starts, when this one was full. */
function nextPage(count: number, limit: number, last: string | undefined): { next?: string } {
  return count === limit && last !== undefined ? { next: last } : {}
}
