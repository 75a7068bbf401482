import type { FastifyInstance, FastifyRequest } from 'fastify'
import { GRANT_TYPES, type Client, type ClientSettings } from '../clients/repository.js'
import { OAuthError, invalidRequest, notFound } from '../errors.js'
import { LIMITS, checkText, type TextRule } from '../input.js'
import type { Tessera } from '../tessera.js'
import type { User } from '../users/repository.js'
import { metadata } from './public.js'

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
const clientProperties = {
  name: { type: 'string', minLength: 1, maxLength: 200 },
  grant_types: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: GRANT_TYPES } },
  scopes: scopeList,
  audiences: identifierList,
  resource_identifiers: identifierList,
  access_token_ttl: ttl,
  refresh_token_ttl: ttl,
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
 * The bearer token's scopes if it is an active access token of this server (RFC 6750 §2.1 header
 * only: §2.2's form body and §2.3's query are not accepted); otherwise a 401.
 */
async function bearerScopes(t: Tessera, request: FastifyRequest): Promise<string[]> {
  const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(request.headers.authorization ?? '')
  if (match === null) throw new OAuthError('invalid_token', 'a bearer access token is required')
  // RFC 6750 §3.1: a malformed request is invalid_request; no token of ours is anywhere near this.
  if (match[1]!.length > LIMITS.token) throw invalidRequest(`the access token is too long (at most ${LIMITS.token} bytes)`)
  const active = await t.status.activeAccessToken(match[1]!)
  if (active === undefined) throw new OAuthError('invalid_token', 'the access token is not active')
  return active.claims.scope.split(' ')
}

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
    const scopes = await bearerScopes(t, request)
    requireScope(scopes, request.routeOptions.url === '/metrics' ? ['metrics', 'admin'] : ['admin'])
    checkPathAndQuery(request)
  })

  app.get(METADATA_PATH, async () => metadata(t.issuer()))

  app.get('/metrics', async (_request, reply) => {
    return reply.header('content-type', t.metrics.registry.contentType).send(await t.metrics.registry.metrics())
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
    })
    return reply.code(201).send({ ...clientView(client), client_secret: secret })
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
    return reply.code(204).send()
  })

  // Users
  app.post('/admin/users', { schema: { body: createUserSchema } }, async (request, reply) => {
    const body = request.body as { username: string; password: string; scopes?: string[] | null }
    const user = await t.users.create({ username: body.username, password: body.password, scopes: body.scopes ?? null })
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

  app.post<{ Params: { id: string } }>('/admin/users/:id/revoke-tokens', async (request, reply) => {
    if (!(await t.tokens.revokeAllForUser(request.params.id))) throw notFound('user')
    return reply.code(204).send()
  })

  // Signing keys
  app.get('/admin/keys', async () => ({ keys: await t.keys.list() }))

  app.post('/admin/keys/rotate', async (request) => {
    const immediate = singleQueryValue(query(request), 'immediate')
    if (immediate !== undefined && immediate !== 'true' && immediate !== 'false') {
      throw invalidRequest('immediate must be true or false')
    }
    return t.keys.rotate({ immediate: immediate === 'true' })
  })
}

/** Where the next page starts, when this one was full. */
function nextPage(count: number, limit: number, last: string | undefined): { next?: string } {
  return count === limit && last !== undefined ? { next: last } : {}
}
