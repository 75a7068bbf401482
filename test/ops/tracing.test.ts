// OpenTelemetry traces (src/tracing.ts, src/observability/otel.ts): `tessera serve` with
// OTEL_EXPORTER_OTLP_ENDPOINT sends its spans to the OTLP/HTTP receiver this test runs: one per
// request, with the database queries, the argon2 work and the change feed's wait as its
// children, continuing the caller's W3C trace. Without it, no OpenTelemetry module is loaded at
// all. The built server as a separate process, on this run's backend.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t, { type Test } from 'tap'
import { tracingRequested } from '../../src/tracing.js'
import { Cluster, type Credentials } from '../helpers/cluster.js'
import { RawConnection, form } from '../helpers/connections.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { ADMIN_ID, ADMIN_SECRET, basic, isolatedDatabase } from '../helpers/server.js'

const moduleLog = join(import.meta.dirname, '..', 'helpers', 'module-log.mjs')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

// OTLP's span kinds (opentelemetry/proto/trace/v1/trace.proto).
const INTERNAL = 1
const SERVER = 2
const CLIENT = 3

interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  kind: number
  attributes: Record<string, string | number | boolean>
  status: number
  resource: Record<string, string | number | boolean>
}

interface Export {
  path: string
  contentType: string
  body: Buffer
}

/** An OTLP/HTTP receiver: keeps every export, and decodes the JSON ones into spans. */
async function otlpReceiver(t: Test) {
  const exports: Export[] = []
  const spans: ReceivedSpan[] = []
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const contentType = req.headers['content-type'] ?? ''
      exports.push({ path: req.url ?? '', contentType, body })
      if (contentType.startsWith('application/json')) spans.push(...decode(JSON.parse(body.toString('utf8'))))
      res.writeHead(200, { 'content-type': contentType }).end(contentType.startsWith('application/json') ? '{}' : '')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, exports, spans }
}

type AnyValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number }
const attributes = (list: Array<{ key: string; value: AnyValue }> = []) =>
  Object.fromEntries(list.map(({ key, value }) => [key, value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : (value.boolValue ?? value.doubleValue ?? ''))]))

function decode(request: any): ReceivedSpan[] {
  return (request.resourceSpans ?? []).flatMap((rs: any) =>
    (rs.scopeSpans ?? []).flatMap((ss: any) =>
      (ss.spans ?? []).map((s: any) => ({
        traceId: s.traceId,
        spanId: s.spanId,
        parentSpanId: s.parentSpanId ?? '',
        name: s.name,
        kind: s.kind,
        attributes: attributes(s.attributes),
        status: s.status?.code ?? 0,
        resource: attributes(rs.resource?.attributes),
      })),
    ),
  )
}

/** A server on a database of its own, with this environment, logging its modules to a file. */
async function start(t: Test, env: Record<string, string>): Promise<{ srv: ServerProcess; modules: () => string[] }> {
  const database = await isolatedDatabase()
  if (database !== undefined) t.teardown(() => database.drop())
  const log = join(tmpdir(), `tessera-modules-${randomBytes(6).toString('hex')}.txt`)
  const srv = await spawnServer(
    t,
    {
      ...(database === undefined ? { DATA_DIR: 'memory://' } : { DATABASE_URL: database.url }),
      KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
      BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
      MODULE_LOG: log,
      MODULE_LOG_MATCH: '@opentelemetry|/observability/',
      ...env,
    },
    // Without tap's own preloaded modules: the list is the server's alone.
    { uninstrumented: true, nodeArgs: ['--import', pathToFileURL(moduleLog).href] },
  )
  return { srv, modules: () => readFileSync(log, 'utf8').split('\n').filter((l) => l !== '') }
}

/** A W3C traceparent (https://www.w3.org/TR/trace-context/#traceparent-header), sampled. */
function traceparent(): { header: string; traceId: string; parentId: string } {
  const traceId = randomBytes(16).toString('hex')
  const parentId = randomBytes(8).toString('hex')
  return { header: `00-${traceId}-${parentId}-01`, traceId, parentId }
}

async function post(srv: ServerProcess, path: string, form: Record<string, string>, auth: Credentials, headers: Record<string, string> = {}) {
  const res = await fetch(`${srv.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(...auth), ...headers },
    body: new URLSearchParams(form).toString(),
  })
  await res.arrayBuffer()
  return { status: res.status }
}

/** The spans of one trace received so far, once `wanted` says they are all there (within 20 s). */
async function traceOf(spans: ReceivedSpan[], traceId: string, wanted: (trace: ReceivedSpan[]) => boolean): Promise<ReceivedSpan[]> {
  for (let waited = 0; ; waited += 50) {
    const trace = spans.filter((s) => s.traceId === traceId)
    if (wanted(trace)) return trace
    if (waited > 20_000) throw new Error(`trace ${traceId} incomplete: ${JSON.stringify(trace.map((s) => s.name))}`)
    await sleep(50)
  }
}

t.test('tracingRequested: an endpoint turns it on; the standard switches turn it off', async (t) => {
  t.equal(tracingRequested({}), false)
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' }), false, 'empty is unset')
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }), true)
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }), true)
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' }), false)
  t.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'none' }), false)
})

t.test('with an OTLP endpoint (http/json): a span per request, its work as children', async (t) => {
  const receiver = await otlpReceiver(t)
  const { srv, modules } = await start(t, {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_BSP_SCHEDULE_DELAY: '50',
    OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=test',
  })
  const cluster = new Cluster([ADMIN_ID, ADMIN_SECRET])
  const app = await cluster.createClient(srv, { grant_types: ['password', 'client_credentials'], scopes: ['read'] })
  t.equal((await cluster.admin(srv, 'POST', '/admin/users', { username: 'tracy', password: 'tracy long password' })).status, 201)

  const login = traceparent()
  const r = await post(srv, '/token', { grant_type: 'password', username: 'tracy', password: 'tracy long password' }, app, { traceparent: login.header })
  t.equal(r.status, 200)
  const loginTrace = await traceOf(receiver.spans, login.traceId, (trace) => trace.some((s) => s.name === 'POST /token') && trace.some((s) => s.name === 'argon2.verify'))
  const request = loginTrace.find((s) => s.name === 'POST /token')!
  t.equal(request.kind, SERVER)
  t.equal(request.parentSpanId, login.parentId, "the request's span continues the caller's trace")
  t.match(request.attributes, { 'http.request.method': 'POST', 'http.route': '/token', 'http.response.status_code': 200, 'tessera.listener': 'public' })
  t.match(request.resource, { 'service.name': 'tessera', 'deployment.environment.name': 'test' }, 'resource: a default name, and OTEL_RESOURCE_ATTRIBUTES')

  const argon = loginTrace.find((s) => s.name === 'argon2.verify')!
  t.equal(argon.kind, INTERNAL)
  t.equal(argon.parentSpanId, request.spanId, 'argon2 is a child of the request')
  t.type(argon.attributes['tessera.hash_queue.wait_ms'], 'number')

  const queries = loginTrace.filter((s) => s.kind === CLIENT)
  t.ok(queries.length >= 3, `${queries.length} database spans (throttle, user, grant)`)
  for (const q of queries) {
    t.equal(q.parentSpanId, request.spanId, `${q.name}: a child of the request`)
    t.equal(q.attributes['db.system.name'], 'postgresql')
    t.ok(typeof q.attributes['db.query.text'] === 'string' && !String(q.attributes['db.query.text']).includes('tracy'), 'the statement, never its parameters')
  }
  t.ok(queries.some((q) => q.name === 'SELECT'), 'the user is read')
  t.ok(queries.some((q) => q.name === 'INSERT'), 'the grant is written')

  // A body that arrives after the headers is read on the socket's own events, outside the
  // request's context: the handler's work must still be in its trace.
  const slow = traceparent()
  const conn = await RawConnection.open(srv.url)
  const body = form({ grant_type: 'password', username: 'tracy', password: 'tracy long password' })
  conn.write(
    `POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic(...app)}\r\ntraceparent: ${slow.header}\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`,
  )
  await sleep(200)
  conn.write(body)
  t.equal((await conn.response()).status, 200)
  conn.socket.destroy()
  const slowTrace = await traceOf(receiver.spans, slow.traceId, (trace) => trace.some((s) => s.name === 'POST /token') && trace.some((s) => s.name === 'argon2.verify'))
  t.equal(slowTrace.find((s) => s.name === 'argon2.verify')!.parentSpanId, slowTrace.find((s) => s.name === 'POST /token')!.spanId, 'a late body: argon2 still a child of the request')

  // A revocation waits for every instance to apply it: a span of its own, after the write's queries.
  const access = await cluster.tokens(srv, { grant_type: 'client_credentials' }, app)
  const revoke = traceparent()
  t.equal((await post(srv, '/revoke', { token: access.access_token }, app, { traceparent: revoke.header })).status, 200)
  const revokeTrace = await traceOf(receiver.spans, revoke.traceId, (trace) => trace.some((s) => s.name === 'POST /revoke') && trace.some((s) => s.name === 'change_feed.await_applied'))
  const revokeSpan = revokeTrace.find((s) => s.name === 'POST /revoke')!
  const wait = revokeTrace.find((s) => s.name === 'change_feed.await_applied')!
  t.equal(wait.parentSpanId, revokeSpan.spanId)
  t.type(wait.attributes['tessera.change.seq'], 'number')
  t.ok(revokeTrace.filter((s) => s.kind === CLIENT && s.parentSpanId === wait.spanId).length >= 1, "the wait's own queries are its children")

  // Without a traceparent, a request starts a trace of its own; a refused one says why.
  t.equal((await post(srv, '/token', { grant_type: 'client_credentials' }, [app[0], 'wrong secret'])).status, 401)
  for (let waited = 0; !receiver.spans.some((s) => s.name === 'POST /token' && s.attributes['http.response.status_code'] === 401); waited += 50) {
    if (waited > 20_000) throw new Error('no span for the refused request')
    await sleep(50)
  }
  const refused = receiver.spans.find((s) => s.name === 'POST /token' && s.attributes['http.response.status_code'] === 401)!
  t.equal(refused.parentSpanId, '', 'a root span')
  t.equal(refused.attributes['tessera.oauth.error'], 'invalid_client')

  // An admin call: its bearer check (before the body is read) and its argon2 hash are children.
  const admin = traceparent()
  const created = await fetch(`${srv.adminUrl}/admin/users`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${(await cluster.tokens(srv, { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET])).access_token}`,
      'content-type': 'application/json',
      traceparent: admin.header,
    },
    body: JSON.stringify({ username: 'tracy2', password: 'another long password' }),
  })
  t.equal(created.status, 201)
  const adminTrace = await traceOf(receiver.spans, admin.traceId, (trace) => trace.some((s) => s.name === 'POST /admin/users') && trace.some((s) => s.name === 'argon2.hash'))
  const adminSpan = adminTrace.find((s) => s.name === 'POST /admin/users')!
  t.equal(adminSpan.attributes['tessera.listener'], 'admin')
  t.equal(adminTrace.find((s) => s.name === 'argon2.hash')!.parentSpanId, adminSpan.spanId)

  // Background work (the lease is renewed every 250 ms, the keys read every second) is no trace.
  await sleep(1000)
  const ids = new Set(receiver.spans.map((s) => s.spanId))
  const orphans = receiver.spans.filter((s) => s.kind === CLIENT && !ids.has(s.parentSpanId))
  t.same(orphans.map((s) => s.name), [], 'every database span belongs to a request')
  t.ok(receiver.exports.every((e) => e.path === '/v1/traces'), 'sent to the endpoint + /v1/traces')

  await srv.stop()
  const loaded = modules()
  t.ok(loaded.some((m) => m.includes('/@opentelemetry/sdk-trace-base/')), 'the SDK was loaded')
  t.ok(loaded.some((m) => m.includes('/@opentelemetry/exporter-trace-otlp-http/')), 'and the JSON exporter')
  t.ok(loaded.some((m) => m.includes('/observability/otel.js')), 'and our tracing module')
})

t.test('the default protocol is http/protobuf', async (t) => {
  const receiver = await otlpReceiver(t)
  const { srv } = await start(t, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50' })
  t.equal((await fetch(`${srv.url}/jwks`)).status, 200)
  for (let waited = 0; !receiver.exports.some((e) => e.body.includes('GET /jwks')); waited += 50) {
    if (waited > 20_000) throw new Error('no export with the span')
    await sleep(50)
  }
  const exported = receiver.exports.find((e) => e.body.includes('GET /jwks'))!
  t.equal(exported.contentType, 'application/x-protobuf')
  t.equal(exported.path, '/v1/traces')
})

t.test('without an endpoint no OpenTelemetry module is loaded, and the server serves as ever', async (t) => {
  const { srv, modules } = await start(t, {})
  const cluster = new Cluster([ADMIN_ID, ADMIN_SECRET])
  const app = await cluster.createClient(srv, { grant_types: ['password', 'client_credentials'], scopes: ['read'] })
  t.equal((await cluster.admin(srv, 'POST', '/admin/users', { username: 'quiet', password: 'quiet long password' })).status, 201)
  t.equal((await post(srv, '/token', { grant_type: 'password', username: 'quiet', password: 'quiet long password' }, app)).status, 200)
  const access = await cluster.tokens(srv, { grant_type: 'client_credentials' }, app)
  t.equal((await post(srv, '/revoke', { token: access.access_token }, app)).status, 200)
  t.equal((await cluster.admin(srv, 'GET', '/metrics')).status, 200)
  await srv.stop()
  const loaded = modules()
  t.same(loaded.filter((m) => m.includes('/observability/')), [], 'our tracing module is never imported')
  // prom-client (its default metrics, for exemplars) requires the OpenTelemetry API itself: a
  // no-op facade with no SDK behind it. Nothing else of OpenTelemetry may be loaded.
  t.same(
    loaded.filter((m) => !/\/node_modules\/@opentelemetry\/api\//.test(m)),
    [],
    'no OpenTelemetry module but the API prom-client requires',
  )
  t.ok(loaded.some((m) => m.includes('/@opentelemetry/api/')), 'the module list does see what is loaded (prom-client loads the API)')
})
