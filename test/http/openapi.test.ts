// The OpenAPI document of both APIs: served on the admin listener without a token, up to date with
// docs/openapi.json, valid OpenAPI 3.1, complete; and its page. What the routes answer against it:
// test/http/openapi-answers.test.ts.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { Validator } from '@seriousme/openapi-schema-validator'
import { FAVICON_SVG, LOGO_SVG } from '../../src/http/brand.js'
import { committedText } from '../../src/http/openapi.js'
import { endpointUrl } from '../../src/http/public.js'
import { packageRoot } from '../../src/paths.js'
import { servedDocument, type Json } from '../helpers/openapi.js'
import { assertOAuthError, startTestServer, type HttpResult } from '../helpers/server.js'

const ISSUER = 'https://auth.example.test/tenant/'
const srv = await startTestServer(t, { ISSUER })
const doc = await servedDocument(srv)

async function adminGet(path: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  const res = await fetch(`${srv.adminUrl}${path}`, { headers })
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: res.status, headers: res.headers, body, text }
}

t.test('GET /openapi.json: the OpenAPI 3.1 document, with no token', async (t) => {
  const r = await adminGet('/openapi.json')
  t.equal(r.status, 200)
  t.match(r.headers.get('content-type'), /^application\/json/)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.equal(r.body.openapi, '3.1.0')
  t.equal(r.body.info.title, 'Tessera')
  t.equal(r.body.info.version, JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')).version)
  t.notOk((await fetch(`${srv.url}/openapi.json`)).ok, 'not on the public listener')
})

t.test('docs/openapi.json is what `npm run openapi` writes for this version', async (t) => {
  const committed = readFileSync(join(packageRoot, 'docs', 'openapi.json'), 'utf8')
  const fresh = committedText(doc, { public: endpointUrl(srv.issuer, ''), admin: srv.adminUrl })
  // Compared as text first, for a message that says what to do; then as values, for a diff.
  if (fresh !== committed) {
    t.fail('docs/openapi.json is out of date: run `npm run openapi` and commit the result')
    t.same(JSON.parse(committed), JSON.parse(fresh), 'docs/openapi.json against the document served now')
  }
  t.match(JSON.parse(committed).servers, [{ url: 'http://localhost:8080' }, { url: 'http://127.0.0.1:8081' }], 'placeholder servers')
  t.notMatch(committed, new RegExp(`${srv.adminUrl}|auth\\.example\\.test`), 'nothing of this run in it')
})

t.test('the document is valid OpenAPI 3.1 (@seriousme/openapi-schema-validator)', async (t) => {
  for (const [label, value] of [
    ['as served', doc],
    ['as committed', JSON.parse(readFileSync(join(packageRoot, 'docs', 'openapi.json'), 'utf8')) as Json],
  ] as const) {
    const validator = new Validator()
    const result = await validator.validate(value)
    t.ok(result.valid, `${label}: ${JSON.stringify(result.errors, null, 2)}`)
    t.equal(validator.version, '3.1', label)
  }
  // The validator must be able to fail: a document it should refuse.
  const broken = structuredClone(doc)
  broken['paths']['/token']['post']['responses']['200']['content'] = 'not a map'
  t.notOk((await new Validator().validate(broken)).valid, 'a broken document is refused')
})

// Every route of both listeners, and the status codes each may answer.
const ROUTES: Record<string, number[]> = {
  'post /token': [200, 400, 401, 429, 503],
  'post /introspect': [200, 400, 401, 429, 503],
  'post /revoke': [200, 400, 401, 429, 503],
  'get /jwks': [200, 304],
  'get /.well-known/oauth-authorization-server': [200],
  'get /healthz': [200],
  'get /readyz': [200, 503],
  'get /openapi.json': [200],
  'get /metrics': [200, 401, 403],
  'post /admin/clients': [201, 400, 401, 403, 503],
  'get /admin/clients': [200, 400, 401, 403, 503],
  'get /admin/clients/{client_id}': [200, 400, 401, 403, 404, 503],
  'patch /admin/clients/{client_id}': [200, 400, 401, 403, 404, 503],
  'delete /admin/clients/{client_id}': [204, 400, 401, 403, 404, 503],
  'post /admin/clients/{client_id}/secret': [200, 400, 401, 403, 404, 503],
  'post /admin/clients/{client_id}/revoke-tokens': [204, 400, 401, 403, 404, 503],
  'post /admin/users': [201, 400, 401, 403, 409, 503],
  'post /admin/users/import': [200, 400, 401, 403, 503],
  'get /admin/users': [200, 400, 401, 403, 503],
  'get /admin/users/{id}': [200, 400, 401, 403, 404, 503],
  'patch /admin/users/{id}': [200, 400, 401, 403, 404, 503],
  'delete /admin/users/{id}': [204, 400, 401, 403, 404, 503],
  'post /admin/users/{id}/password': [204, 400, 401, 403, 404, 503],
  'get /admin/users/{id}/lockout': [200, 400, 401, 403, 404, 503],
  'delete /admin/users/{id}/lockout': [204, 400, 401, 403, 404, 503],
  'post /admin/users/{id}/revoke-tokens': [204, 400, 401, 403, 404, 503],
  'get /admin/keys': [200, 401, 403, 503],
  'post /admin/keys/rotate': [200, 400, 401, 403, 503],
  'post /admin/keys/reseal': [200, 401, 403, 409, 503],
  'get /admin/audit': [200, 400, 401, 403, 503],
}
const PUBLIC_PATHS = ['/token', '/introspect', '/revoke', '/jwks', '/healthz', '/readyz']

t.test('every route of both listeners is described, with its answers, and nothing else', async (t) => {
  const operations = Object.entries<Json>(doc['paths']).flatMap(([path, item]) =>
    Object.entries<Json>(item)
      .filter(([key]) => key !== 'servers')
      .map(([method, op]) => [`${method} ${path}`, op] as const),
  )
  t.same(operations.map(([key]) => key).sort(), Object.keys(ROUTES).sort(), 'the routes')
  const ids = new Set<string>()
  for (const [key, op] of operations) {
    t.test(key, async (t) => {
      t.type(op['operationId'], 'string')
      t.notOk(ids.has(op['operationId']), 'a unique operationId')
      ids.add(op['operationId'])
      t.type(op['summary'], 'string')
      t.equal(op['tags']?.length, 1, 'one tag')
      t.same(Object.keys(op['responses']).map(Number).sort(), ROUTES[key], 'its statuses')
      for (const [status, response] of Object.entries<Json>(op['responses'])) {
        t.not(response['description'], 'Default Response', `${status} says what it means`)
        t.ok(response['headers']?.['Cache-Control'] !== undefined || key.startsWith('get /jwks') || key === 'get /healthz', `${status}: Cache-Control`)
        // /readyz answers 503 with its state, for a load balancer: not an error of a request.
        if (Number(status) >= 400 && key !== 'get /readyz') {
          t.same(response['content'], { 'application/json': { schema: { $ref: '#/components/schemas/OAuthError' } } }, `${status}: the §5.2 error body`)
          if (Number(status) === 429 || Number(status) === 503) t.ok(response['headers']['Retry-After'], `${status}: Retry-After`)
        }
        if (Number(status) === 401) t.ok(response['headers']['WWW-Authenticate'], '401: WWW-Authenticate')
      }
      const path = key.split(' ')[1]!
      for (const name of path.match(/\{(\w+)\}/g) ?? []) {
        t.ok(
          op['parameters']?.some((p: Json) => p['in'] === 'path' && `{${p['name']}}` === name && p['required'] === true),
          `path parameter ${name} is declared`,
        )
      }
      const open = ['get /.well-known/oauth-authorization-server', 'get /openapi.json', ...PUBLIC_PATHS.filter((p) => ['/jwks', '/healthz', '/readyz'].includes(p)).map((p) => `get ${p}`)]
      if (path.startsWith('/admin/')) {
        t.same(op['security'], [{ adminBearer: ['admin'] }, { adminDpop: ['admin'] }], 'needs an admin token')
      } else if (['/token', '/introspect', '/revoke'].includes(path)) {
        t.same(op['security'], [{ clientSecretBasic: [] }, {}], 'HTTP Basic, or the credentials in the form')
      } else if (open.includes(key)) {
        t.ok(op['security'] === undefined || op['security'].length === 0, 'no credentials')
      }
    })
  }
  t.same(Object.keys(doc['components']['securitySchemes']).sort(), ['adminBearer', 'adminDpop', 'clientSecretBasic'])
  t.match(doc['paths']['/token']['post'], { parameters: [{ in: 'header', name: 'DPoP' }] }, 'the DPoP header')
  t.match(doc['paths']['/jwks']['get'], { parameters: [{ in: 'header', name: 'If-None-Match' }] })
  t.match(doc['paths']['/token']['post']['responses']['200']['headers'], { 'DPoP-Nonce': {} })
  t.match(doc['paths']['/token']['post']['responses']['400']['headers'], { 'DPoP-Nonce': {} }, 'use_dpop_nonce carries the nonce')
  t.same(Object.keys(doc['paths']['/metrics']['get']['responses']['200']['content']), ['text/plain'])
  t.same(Object.keys(doc['paths']['/jwks']['get']['responses']['200']['content']), ['application/jwk-set+json'])
})

t.test('the form endpoints document every parameter, and a repeated resource', async (t) => {
  const form = (path: string) => doc['paths'][path]['post']['requestBody']['content']['application/x-www-form-urlencoded']['schema'] as Json
  const clientAuth = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type']
  t.same(Object.keys(form('/token')['properties']).sort(), ['grant_type', 'scope', 'resource', 'username', 'password', 'refresh_token', ...clientAuth].sort())
  t.same(form('/token')['required'], ['grant_type'])
  t.same(Object.keys(form('/introspect')['properties']).sort(), ['token', 'token_type_hint', ...clientAuth].sort())
  t.same(Object.keys(form('/revoke')['properties']).sort(), ['token', 'token_type_hint', ...clientAuth].sort())
  for (const path of ['/introspect', '/revoke']) t.same(form(path)['required'], ['token'], `${path}: token is required`)
  t.match(form('/token')['properties']['resource'], { anyOf: [{ type: 'string' }, { type: 'array' }] })
  t.same(Object.keys(doc['paths']['/token']['post']['requestBody']['content']['application/x-www-form-urlencoded']['examples']).sort(), [
    'client_credentials',
    'password',
    'refresh_token',
  ])
  t.equal(doc['paths']['/admin/clients/{client_id}/secret']['post']['requestBody']['required'], false, 'the rotation body may be left out')
  t.equal(doc['paths']['/admin/clients']['post']['requestBody']['required'], true)
})

t.test('servers: the public API at the issuer, the admin API at the URL the request reached', async (t) => {
  const publicUrl = 'https://auth.example.test/tenant'
  t.same(
    doc['servers'].map((s: Json) => s['url']),
    [publicUrl, srv.adminUrl],
  )
  for (const [path, item] of Object.entries<Json>(doc['paths'])) {
    const urls = item['servers'].map((s: Json) => s['url'])
    if (path === '/.well-known/oauth-authorization-server') t.same(urls, [publicUrl, srv.adminUrl], `${path}: both`)
    else if (PUBLIC_PATHS.includes(path)) t.same(urls, [publicUrl], `${path}: public`)
    else t.same(urls, [srv.adminUrl], `${path}: admin`)
  }
  // Asked by another name of the same listener, the document names that one.
  const port = new URL(srv.adminUrl).port
  const other = (await (await fetch(`http://localhost:${port}/openapi.json`)).json()) as Json
  t.equal(other.paths['/admin/keys'].servers[0].url, `http://localhost:${port}`)
})

t.test('the page: Swagger UI at /docs, with no token, loading only its own files', async (t) => {
  const page = await adminGet('/docs')
  t.equal(page.status, 200)
  t.match(page.headers.get('content-type'), /^text\/html/)
  t.match(page.text, /swagger-ui-bundle\.js/)
  t.match(page.text, /<title>Tessera API<\/title>/)
  const csp = page.headers.get('content-security-policy') ?? ''
  t.match(csp, /default-src 'self'/)
  t.match(csp, /frame-ancestors 'none'/)
  t.notMatch(csp, /upgrade-insecure-requests/, 'the admin listener is plain HTTP by default')
  t.equal(
    csp,
    "default-src 'self'; base-uri 'self'; connect-src 'self'; font-src 'self' data:; form-action 'self'; frame-ancestors 'none'; " +
      "img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; style-src 'self'; style-src-attr 'unsafe-inline'",
    'Swagger UI\'s style attributes are allowed, and nothing else inline',
  )
  t.match(page.text, /<link rel="icon" type="image\/svg\+xml" href="\/docs\/static\/theme\/favicon\.svg" sizes="any" \/>/, "Tessera's icon in the tab")
  const icon = await adminGet('/docs/static/theme/favicon.svg')
  t.equal(icon.text, FAVICON_SVG)
  for (const src of page.text.match(/(?:src|href)="([^"]+)"/g) ?? []) {
    const url = src.replace(/^(?:src|href)="|"$/g, '')
    t.notMatch(url, /^(https?:)?\/\//, `${url}: from this listener`)
    const asset = await adminGet(new URL(url, `${srv.adminUrl}/docs`).pathname)
    t.equal(asset.status, 200, url)
  }
  const init = await adminGet('/docs/static/swagger-initializer.js')
  t.equal(init.status, 200)
  t.match(init.text, /resolveUrl\('\.\/json'\)/, 'the page loads the document beside it')
  t.ok(init.text.includes(`img.src = 'data:image/svg+xml;base64,${Buffer.from(LOGO_SVG).toString('base64')}'`), "Tessera's logo in the top bar, not fastify's")
  const json = await adminGet('/docs/json')
  t.equal(json.status, 200)
  t.same(json.body, doc, 'the page shows the same document as /openapi.json')
})

t.test('everything else on the admin listener still needs a token', async (t) => {
  for (const path of ['/metrics', '/admin/clients', '/admin/keys', '/openapi.json.bak', '/docsx', '/openapi', '/admin/docs']) {
    const r = await adminGet(path)
    assertOAuthError(t, r, 401, 'invalid_token')
  }
  assertOAuthError(t, await srv.admin('GET', '/metrics', undefined, 'not-a-token'), 401, 'invalid_token')
})

t.test('every JSON request body has an example, and the server accepts it as it is ("Try it out" on /docs)', async (t) => {
  const schemas = doc['components']['schemas'] as Record<string, Json>
  const client = await srv.createClient()
  const userId = await srv.createUser('example-user', 'a long enough password 1')
  let sent = 0
  for (const [path, item] of Object.entries<Json>(doc['paths'])) {
    for (const [method, op] of Object.entries<Json>(item)) {
      const media = op?.['requestBody']?.['content']?.['application/json']
      if (media === undefined) continue
      const ref = media['schema']['$ref'] as string
      const schema = schemas[ref.replace('#/components/schemas/', '')]!
      const examples = schema['examples'] as unknown[] | undefined
      t.ok(examples !== undefined && examples.length > 0, `${method} ${path}: ${ref} has an example`)
      for (const example of examples ?? []) {
        const r = await srv.admin(method.toUpperCase(), path.replace('{client_id}', client.id).replace('{id}', userId), example)
        t.ok(r.status >= 200 && r.status < 300, `${method} ${path} with ${JSON.stringify(example)}: ${r.status} ${r.text}`)
        sent++
      }
    }
  }
  t.equal(sent, 6, 'the six admin operations that take a JSON body')
})
