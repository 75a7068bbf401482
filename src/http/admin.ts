import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AUDIT_EVENT_TYPES, type AdminChange, type AuditEventType } from '../audit/events.js'
import type { AuditCursor, AuditFilter } from '../audit/repository.js'
import { auditView } from '../audit/service.js'
import type { AuthMethod, Client, ClientSettings, JwkSet } from '../clients/repository.js'
import { OAuthError, invalidDpopProof, invalidRequest, notFound } from '../errors.js'
import { LIMITS, checkText, type TextRule } from '../input.js'
import { adminResource } from '../oauth/audience.js'
import { DPOP_ALGS } from '../oauth/dpop.js'
import type { ClientAlg } from '../oauth/jws.js'
import type { Tessera } from '../tessera.js'
import { asUuid } from '../tokens/repository.js'
import { importUsers, readLines, type ImportResult } from '../users/import.js'
import type { User } from '../users/repository.js'
import { dpopHeaders, metadata } from './public.js'
import { readFirst } from './read-first.js'
import * as schemas from './schemas/admin.js'
import { serverMetadataRoute } from './schemas/common.js'
import { isApiDescriptionRoute } from './openapi.js'

const METADATA_PATH = '/.well-known/oauth-authorization-server'

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
 * The access token's client and scopes if it is an active access token of this server for the
 * admin API, sent as a resource server must accept it: in the Authorization header only (RFC 6750
 * §2.1: not in a form body or the query), as `Bearer`, or as `DPoP` with a proof of its key when
 * it is DPoP-bound (RFC 9449 §7.1: the proof checked as the token endpoint checks one, for this
 * request's method and URL, ath included). A bound token sent as Bearer is refused: that is what
 * binding is for.
 */
async function bearer(t: Tessera, request: FastifyRequest): Promise<{ clientId: string; scopes: string[] }> {
  const match = /^(Bearer|DPoP)[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(request.headers.authorization ?? '')
  if (match === null) throw new OAuthError('invalid_token', 'an access token is required (Authorization: Bearer, or DPoP)')
  const [, scheme, token] = match as unknown as [string, string, string]
  // RFC 6750 §3.1: a malformed request is invalid_request; no token of ours is anywhere near this.
  if (token.length > LIMITS.token) throw invalidRequest(`the access token is too long (at most ${LIMITS.token} bytes)`)
  const active = await t.status.activeAccessToken(token)
  if (active === undefined) throw new OAuthError('invalid_token', 'the access token is not active')
  forAdminApi(t, active.claims)
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

/**
 * RFC 9068 §4: a resource server accepts only tokens meant for it. Here the admin resource alone
 * (src/oauth/audience.ts), issued by client_credentials (a token with a grant, `sid`, is a user's;
 * a client's token has the client as subject), which only a confidential client may use. A token
 * an app's users or the app itself got for its own API, whatever its scopes, is not one.
 */
function forAdminApi(t: Tessera, claims: { aud: string | string[]; sub: string; client_id: string; sid?: string | undefined }): void {
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud]
  if (aud.length !== 1 || aud[0] !== adminResource(t.issuer())) {
    throw new OAuthError('invalid_token', `the access token is not for the admin API: its aud must be ${adminResource(t.issuer())}`)
  }
  if (claims.sid !== undefined || claims.sub !== claims.client_id) {
    throw new OAuthError('invalid_token', 'the admin API takes client_credentials tokens only')
  }
}

/** RFC 9449 §7.1: the request's DPoP proof, for this token (ath), by the key it is bound to. */
async function proveKey(t: Tessera, request: FastifyRequest, token: string, jkt: string): Promise<void> {
  try {
    const proof = await t.dpop.verify({
      headers: dpopHeaders(request),
      method: request.method,
      // ADMIN_URL, never the Host header: a proof made for another service's URL that the same
      // token reaches (RFC 9449 §4.3 check 9) would pass if the request could say where it went.
      url: `${t.adminUrl()}${request.url.split('?')[0]}`,
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
    // Public on this listener too: the metadata (the CLI finds the token endpoint from the admin URL
    // alone), and the API description with its page, which a browser loads without a token.
    if (request.routeOptions.url === METADATA_PATH || isApiDescriptionRoute(request.routeOptions.url)) return
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

  app.get(METADATA_PATH, { schema: serverMetadataRoute }, async () => metadata(t.issuer()))

  app.get('/metrics', { schema: schemas.metrics }, async (_request, reply) => {
    return reply.header('content-type', t.metrics.registry.contentType).send(await t.metrics.text())
  })

  // Clients
  app.post('/admin/clients', { schema: schemas.createClient }, async (request, reply) => {
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

  // The query's own checks first, with their descriptions: see read-first.ts.
  const clientPage = readFirst((request) => paging(query(request)))
  app.get('/admin/clients', { schema: schemas.listClients, preValidation: clientPage.preValidation }, async (request) => {
    const page = clientPage.get(request)
    const clients = await t.clients.list(page)
    return { clients: clients.map(clientView), ...nextPage(clients.length, page.limit, clients.at(-1)?.clientId) }
  })

  app.get<{ Params: { client_id: string } }>('/admin/clients/:client_id', { schema: schemas.getClient }, async (request) => {
    const client = await t.clients.find(request.params.client_id)
    if (client === undefined) throw notFound('client')
    return clientView(client)
  })

  app.patch<{ Params: { client_id: string } }>(
    '/admin/clients/:client_id',
    { schema: schemas.changeClient },
    async (request) => {
      const client = await t.clients.update(request.params.client_id, clientSettings(request.body as ClientBody))
      if (client === undefined) throw notFound('client')
      return clientView(client)
    },
  )

  app.delete<{ Params: { client_id: string } }>('/admin/clients/:client_id', { schema: schemas.deleteClient }, async (request, reply) => {
    if (!(await t.clients.delete(request.params.client_id))) throw notFound('client')
    return reply.code(204).send()
  })

  app.post<{ Params: { client_id: string } }>(
    '/admin/clients/:client_id/secret',
    { schema: schemas.rotateClientSecret },
    async (request) => {
      const grace = (request.body as { grace_seconds?: number } | null | undefined)?.grace_seconds ?? 0
      const secret = await t.clients.rotateSecret(request.params.client_id, grace)
      if (secret === undefined) throw notFound('client')
      return { client_secret: secret }
    },
  )

  app.post<{ Params: { client_id: string } }>('/admin/clients/:client_id/revoke-tokens', { schema: schemas.revokeClientTokens }, async (request, reply) => {
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
  app.post('/admin/users', { schema: schemas.createUser }, async (request, reply) => {
    const body = request.body as { username: string; password: string; scopes?: string[] | null }
    const user = await t.users.create({ username: body.username, password: body.password, scopes: body.scopes ?? null })
    target(request, { user: user.id })
    return reply.code(201).send(userView(user))
  })

  // The import's body is a stream of lines, read by the route itself (src/users/import.ts): the
  // parser hands it over unread, so no body limit applies and nothing is buffered whole.
  app.addContentTypeParser('application/x-ndjson', (_request, payload, done) => done(null, payload))
  app.post('/admin/users/import', { schema: schemas.importUsers }, async (request, reply) => {
    if (!(request.body instanceof Readable)) throw invalidRequest('the body must be application/x-ndjson')
    const dryRun = singleQueryValue(query(request), 'dry_run') === 'true'
    const check = request.compileValidationSchema(schemas.userImportLine)
    const validate = (value: unknown) => {
      if (check(value)) return undefined
      const e = check.errors?.[0]
      return e === undefined ? 'invalid user' : `${e.instancePath.replace(/^\//, '') || 'line'} ${e.message ?? 'is invalid'}`
    }
    const results = importUsers(t.db, t.clock, readLines(request.body), { dryRun, validate, hash: (p) => t.hasher.hashWaiting(p) })
    const counts = { created: 0, exists: 0, refused: 0 }
    async function* answer() {
      try {
        for await (const r of results) {
          counts[r.result === 'would_create' ? 'created' : r.result]++
          yield `${JSON.stringify(r satisfies ImportResult)}\n`
        }
        yield `${JSON.stringify({ summary: { ...counts, dry_run: dryRun } })}\n`
      } catch (err) {
        // The status is sent: what went wrong (a database outage) ends the answer instead.
        request.log.error({ err }, 'user import stopped')
        yield `${JSON.stringify({ error: 'server_error', error_description: 'the import stopped; lines after the last result were not imported' })}\n`
      }
    }
    return reply.type('application/x-ndjson').send(Readable.from(answer()))
  })

  // Paging is checked with ?username= too, where it is not used: the schema states one rule for it.
  const userQuery = readFirst((request) => {
    const q = query(request)
    return { username: singleQueryValue(q, 'username'), page: paging(q) }
  })
  app.get('/admin/users', { schema: schemas.listUsers, preValidation: userQuery.preValidation }, async (request) => {
    const { username, page } = userQuery.get(request)
    if (username !== undefined) {
      const user = await t.users.findByUsername(username)
      return { users: user === undefined ? [] : [userView(user)] }
    }
    const users = await t.users.list(page)
    return { users: users.map(userView), ...nextPage(users.length, page.limit, users.at(-1)?.id) }
  })

  app.get<{ Params: { id: string } }>('/admin/users/:id', { schema: schemas.getUser }, async (request) => {
    const user = await t.users.find(request.params.id)
    if (user === undefined) throw notFound('user')
    return userView(user)
  })

  app.patch<{ Params: { id: string } }>('/admin/users/:id', { schema: schemas.changeUser }, async (request) => {
    const user = await t.users.update(request.params.id, request.body as { disabled?: boolean; scopes?: string[] | null })
    if (user === undefined) throw notFound('user')
    return userView(user)
  })

  app.delete<{ Params: { id: string } }>('/admin/users/:id', { schema: schemas.deleteUser }, async (request, reply) => {
    if (!(await t.users.delete(request.params.id))) throw notFound('user')
    return reply.code(204).send()
  })

  app.post<{ Params: { id: string } }>('/admin/users/:id/password', { schema: schemas.setUserPassword }, async (request, reply) => {
    if (!(await t.users.setPassword(request.params.id, (request.body as { password: string }).password))) {
      throw notFound('user')
    }
    return reply.code(204).send()
  })

  // The user's failed-login count (src/throttle/login.ts): how many, and until when logins wait.
  app.get<{ Params: { id: string } }>('/admin/users/:id/lockout', { schema: schemas.getUserLockout }, async (request) => {
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

  app.delete<{ Params: { id: string } }>('/admin/users/:id/lockout', { schema: schemas.clearUserLockout }, async (request, reply) => {
    const user = await t.users.find(request.params.id)
    if (user === undefined) throw notFound('user')
    await t.loginThrottle.clear(user.username)
    return reply.code(204).send()
  })

  app.post<{ Params: { id: string } }>('/admin/users/:id/revoke-tokens', { schema: schemas.revokeUserTokens }, async (request, reply) => {
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
  app.get('/admin/keys', { schema: schemas.listKeys }, async () => ({ keys: await t.keys.list() }))

  const rotation = readFirst((request) => {
    const immediate = singleQueryValue(query(request), 'immediate')
    if (immediate !== undefined && immediate !== 'true' && immediate !== 'false') {
      throw invalidRequest('immediate must be true or false')
    }
    return { immediate: immediate === 'true' }
  })
  app.post('/admin/keys/rotate', { schema: schemas.rotateKeys, preValidation: rotation.preValidation }, async (request) => {
    const key = await t.keys.rotate(rotation.get(request))
    target(request, { kid: key.kid })
    return key
  })

  app.post('/admin/keys/reseal', { schema: schemas.resealKeys }, async () => {
    const { resealed, already } = await t.keys.reseal()
    return { resealed, already_current: already }
  })

  // Security events
  const auditQuery = readFirst((request) => auditFilter(t, query(request)))
  app.get('/admin/audit', { schema: schemas.listAuditEvents, preValidation: auditQuery.preValidation }, async (request) => {
    const filter = auditQuery.get(request)
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
