// The OpenAPI 3.1 document of both APIs, made from the route schemas fastify validates and
// serializes with (src/http/schemas/): @fastify/swagger describes each listener's app, and this
// merges the two into one document, served on the admin listener with a browsable page.
//
// Each path item names the server it lives on (its own `servers`, OpenAPI 3.1 §4.8.9): the public API
// under the issuer, the admin API under the admin listener's URL, the metadata under both. The
// committed docs/openapi.json is the same document with placeholder servers (`npm run openapi`).
import { readFileSync } from 'node:fs'
import { isDeepStrictEqual } from 'node:util'
import { join } from 'node:path'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { packageRoot } from '../paths.js'
import type { Tessera } from '../tessera.js'
import { FAVICON_SVG, LOGO_SVG } from './brand.js'
import { endpointUrl } from './public.js'
import { ADMIN_SCHEMAS, ADMIN_SECURITY_SCHEMES, apiDescription } from './schemas/admin.js'
import { SHARED_SCHEMAS } from './schemas/common.js'
import { PUBLIC_SCHEMAS, PUBLIC_SECURITY_SCHEMES } from './schemas/public.js'

/** A JSON object of the document; its shape is OpenAPI's, checked by the validator in the tests. */
export type Json = Record<string, any>

export const API_DESCRIPTION_PATH = '/openapi.json'
/** The browsable page (Swagger UI) and its files. */
export const API_REFERENCE_PATH = '/docs'

/** The routes of the admin listener that need no token: the document and its page. */
export function isApiDescriptionRoute(url: string | undefined): boolean {
  return url !== undefined && (url === API_DESCRIPTION_PATH || url === API_REFERENCE_PATH || url.startsWith(`${API_REFERENCE_PATH}/`))
}

type Listener = 'public' | 'admin'

const TAGS: Record<Listener, Array<{ name: string; description: string }>> = {
  public: [
    { name: 'Token', description: 'The token endpoint (RFC 6749 §3.2), on the public listener.' },
    { name: 'Introspection', description: 'Token introspection (RFC 7662), on the public listener.' },
    { name: 'Revocation', description: 'Token revocation (RFC 7009), on the public listener.' },
    { name: 'Keys', description: 'The keys that verify access tokens (RFC 7517), on the public listener.' },
    { name: 'Metadata', description: 'Authorization server metadata (RFC 8414), on both listeners.' },
    { name: 'Health', description: 'Liveness and readiness, on the public listener.' },
  ],
  admin: [
    { name: 'Clients', description: 'The applications that ask for tokens. Admin listener.' },
    { name: 'Users', description: 'The users of the password grant. Admin listener.' },
    { name: 'Signing keys', description: 'The keys that sign tokens, and their rotation. Admin listener.' },
    { name: 'Audit', description: 'Security events. Admin listener.' },
    { name: 'Metrics', description: 'Prometheus metrics. Admin listener.' },
    { name: 'API description', description: 'This document and its page. Admin listener, no token.' },
  ],
}

const version = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version

const INFO = {
  title: 'Tessera',
  version,
  summary: 'An OAuth 2.0 authorization server for first-party apps and services.',
  description: [
    'Two APIs on two listeners. The public API (PORT) issues, introspects and revokes tokens and publishes the keys that ' +
      'verify them. The admin API (ADMIN_PORT, loopback by default) manages clients, users and signing keys; every call ' +
      'needs an access token of this server with scope admin, except the metadata and this document.',
    'Every error of both is RFC 6749 §5.2 JSON (OAuthError) with Cache-Control: no-store; a request that breaks a ' +
      'schema here is 400 invalid_request. Throttled attempts are 429 slow_down, an unreachable database 503 ' +
      'temporarily_unavailable, both with Retry-After; never any other 5xx.',
  ].join('\n\n'),
  license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
}

/**
 * Registers @fastify/swagger on a listener's app, with the components its routes refer to. Before
 * the routes: swagger collects them as they are added.
 */
export async function describeRoutes(app: FastifyInstance, listener: Listener): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: INFO,
      components: { securitySchemes: listener === 'public' ? PUBLIC_SECURITY_SCHEMES : ADMIN_SECURITY_SCHEMES },
    },
    // Components named as the schemas' $id, not def-0, def-1, …
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json['$id'] === 'string' ? json['$id'] : `def-${i}`) },
  })
  for (const schema of [...SHARED_SCHEMAS, ...(listener === 'public' ? PUBLIC_SCHEMAS : ADMIN_SCHEMAS)]) app.addSchema(schema)
}

/** Where each listener is, in the committed document: the defaults of ISSUER and ADMIN_HOST/ADMIN_PORT. */
const PLACEHOLDERS: Record<Listener, { url: string; description: string }> = {
  public: { url: 'http://localhost:8080', description: 'The public API: ISSUER, here its default.' },
  admin: { url: 'http://127.0.0.1:8081', description: 'The admin API: ADMIN_HOST and ADMIN_PORT, here their defaults.' },
}

const sortedKeys = (o: Json): Json => Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]))

/**
 * The one document of both listeners' documents (what `app.swagger()` gives, left unchanged), with
 * placeholder servers; its keys in a stable order, paths and components sorted. A path both serve
 * must be described alike, as must a component both declare.
 */
export function mergeDocuments(documents: Record<Listener, Json>): Json {
  const paths: Json = {}
  const schemas: Json = {}
  const securitySchemes: Json = {}
  for (const listener of ['public', 'admin'] as const) {
    const doc = structuredClone(documents[listener])
    for (const [path, item] of Object.entries<Json>(doc['paths'] ?? {})) {
      tidyOperations(item, doc['components']?.['schemas'] ?? {})
      const known = paths[path]
      if (known === undefined) {
        paths[path] = { servers: [PLACEHOLDERS[listener]], ...item }
      } else {
        const { servers, ...operations } = known
        if (!isDeepStrictEqual(operations, item)) throw new Error(`${path} is described differently on the two listeners`)
        paths[path] = { servers: [...servers, PLACEHOLDERS[listener]], ...operations }
      }
    }
    for (const [into, from] of [
      [schemas, doc['components']?.['schemas'] ?? {}],
      [securitySchemes, doc['components']?.['securitySchemes'] ?? {}],
    ] as const) {
      for (const [name, value] of Object.entries(from)) {
        if (into[name] !== undefined && !isDeepStrictEqual(into[name], value)) throw new Error(`component ${name} differs between the listeners`)
        into[name] = value
      }
    }
  }
  return {
    openapi: documents.admin['openapi'],
    info: documents.admin['info'],
    servers: [PLACEHOLDERS.public, PLACEHOLDERS.admin],
    tags: [...TAGS.public, ...TAGS.admin],
    // Redoc's and Scalar's grouping of tags; other tools ignore it.
    'x-tagGroups': [
      { name: 'Public API', tags: TAGS.public.map((t) => t.name) },
      { name: 'Admin API', tags: TAGS.admin.map((t) => t.name) },
    ],
    paths: sortedKeys(paths),
    components: { schemas: sortedKeys(schemas), securitySchemes: sortedKeys(securitySchemes) },
  }
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

/** What @fastify/swagger writes that the document is better without. */
function tidyOperations(item: Json, components: Json): void {
  for (const method of METHODS) {
    const op = item[method] as Json | undefined
    if (op === undefined) continue
    for (const response of Object.values<Json>(op['responses'] ?? {})) {
      // A response's description is copied into its schema too: say it once.
      for (const media of Object.values<Json>(response['content'] ?? {})) {
        if (media['schema']?.['description'] === response['description']) delete media['schema']['description']
      }
    }
    // @fastify/swagger marks every body required; one whose schema accepts null may be left out.
    const body = op['requestBody'] as Json | undefined
    if (body !== undefined && Object.values<Json>(body['content'] ?? {}).some((media) => acceptsNull(media['schema'], components))) {
      body['required'] = false
    }
  }
}

function acceptsNull(schema: Json | undefined, components: Json): boolean {
  if (schema === undefined) return false
  const ref = schema['$ref']
  if (typeof ref === 'string') return acceptsNull(components[ref.replace('#/components/schemas/', '')], components)
  const type = schema['type']
  return type === 'null' || (Array.isArray(type) && type.includes('null')) || (schema['anyOf'] ?? []).some((s: Json) => acceptsNull(s, components))
}

/** The document with the listeners' real URLs in place of the placeholders. */
export function withServers(doc: Json, urls: Record<Listener, string>): Json {
  return replaceServers(doc, { public: PLACEHOLDERS.public.url, admin: PLACEHOLDERS.admin.url }, urls)
}

/**
 * docs/openapi.json, as `npm run openapi` writes it: the document a server serves at
 * GET /openapi.json (its public API at `urls.public`, its admin API at `urls.admin`) with
 * placeholder servers again, as text.
 */
export function committedText(served: Json, urls: Record<Listener, string>): string {
  return `${JSON.stringify(replaceServers(served, urls, { public: PLACEHOLDERS.public.url, admin: PLACEHOLDERS.admin.url }), null, 2)}\n`
}

function replaceServers(doc: Json, from: Record<Listener, string>, to: Record<Listener, string>): Json {
  const replace = (server: Json): Json => {
    for (const listener of ['public', 'admin'] as const) {
      if (server['url'] === from[listener]) return { ...server, url: to[listener] }
    }
    return server
  }
  const paths = Object.fromEntries(
    Object.entries<Json>(doc['paths']).map(([path, item]) => [path, { ...item, servers: (item['servers'] as Json[]).map(replace) }]),
  )
  return { ...doc, servers: (doc['servers'] as Json[]).map(replace), paths }
}

// Swagger UI's own policy (@fastify/swagger-ui's staticCSP) without what does not fit here:
// upgrade-insecure-requests would send the page's own requests to https on a plain-HTTP admin
// listener, and the page loads nothing from elsewhere (no validator badge, no remote fonts).
// style-src-attr 'unsafe-inline': Swagger UI sets style attributes in the markup it renders,
// which a strict style-src refuses (a console error on every load); attributes cannot load or
// run anything, and <style> elements stay refused (style-src-elem falls back to style-src).
const REFERENCE_CSP =
  "default-src 'self'; base-uri 'self'; connect-src 'self'; font-src 'self' data:; form-action 'self'; frame-ancestors 'none'; " +
  "img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; style-src 'self'; style-src-attr 'unsafe-inline'"

/**
 * GET /openapi.json and the page at /docs, on the admin app, after its routes. `publicDocument`
 * gives the public app's own document. Both need no token (see the admin hook): the document says
 * nothing that is not in the README, and a browser loads the page without one.
 */
export async function serveApiDescription(app: FastifyInstance, t: Tessera, publicDocument: () => Json): Promise<void> {
  let merged: Json | undefined
  const current = (request: FastifyRequest): Json => {
    merged ??= mergeDocuments({ public: publicDocument(), admin: app.swagger() as Json })
    return withServers(merged, {
      public: endpointUrl(t.issuer(), ''),
      // The admin listener has no URL of its own: the one this request reached.
      admin: `${request.protocol}://${request.host}`,
    })
  }
  app.get(API_DESCRIPTION_PATH, { schema: apiDescription }, async (request) => current(request))
  await app.register(swaggerUi, {
    routePrefix: API_REFERENCE_PATH,
    // The page shows the document above, not the admin app's alone.
    transformSpecification: (_own, request) => current(request),
    transformSpecificationClone: false,
    staticCSP: REFERENCE_CSP,
    uiConfig: { docExpansion: 'list', deepLinking: true, displayOperationId: true },
    // Tessera's mark, not fastify's, in the top bar and the tab.
    logo: { type: 'image/svg+xml', content: Buffer.from(LOGO_SVG), href: API_REFERENCE_PATH, target: '_self' },
    theme: {
      title: 'Tessera API',
      favicon: [{ filename: 'favicon.svg', rel: 'icon', sizes: 'any', type: 'image/svg+xml', content: Buffer.from(FAVICON_SVG) }],
    },
  })
}
