// OpenTelemetry tracing with the official SDK, loaded by src/tracing.ts only when an OTLP endpoint
// is configured. The standard variables apply: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS,
// _TIMEOUT and _PROTOCOL (http/protobuf, the default, or http/json), OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*.
//
// The spans are made by hand rather than by the auto-instrumentations: those patch modules as
// they are loaded (which, in an ES module program, takes a loader hook given before anything is
// imported) and know nothing of PGlite. Here a request is one span from fastify's hooks, each
// database query a child from a wrapper around the kysely driver (either backend), and argon2
// and the change feed's wait are children made where they happen. The active span is carried in
// an AsyncLocalStorage of this instance: nothing is registered globally, so neither this
// server's spans nor its settings leak into other code in the process (or other instances in a
// test process).
import { AsyncLocalStorage } from 'node:async_hooks'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, defaultTextMapGetter, trace, type Context, type Span } from '@opentelemetry/api'
import { W3CTraceContextPropagator, setGlobalErrorHandler } from '@opentelemetry/core'
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources'
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import type { FastifyRequest } from 'fastify'
import type { CompiledQuery, DatabaseConnection, Dialect, Driver, QueryResult } from 'kysely'
import type { Logger } from 'pino'
import { refusals } from '../http/errors.js'
import { packageRoot } from '../paths.js'
import type { SpanAttributes, Tracing } from '../tracing.js'

type Env = Record<string, string | undefined>

// A statement's text, never its parameters (which hold secrets' hashes, usernames, tokens' ids);
// bounded, since a few queries are long.
const MAX_STATEMENT = 2000
// Exporter failures (a collector down) are told at most this often: every batch would fail.
const EXPORT_WARNING_INTERVAL_MS = 60_000

function protocolOf(env: Env): string {
  return (env['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'] ?? env['OTEL_EXPORTER_OTLP_PROTOCOL'] ?? 'http/protobuf').trim()
}

async function exporterFor(protocol: string): Promise<SpanExporter> {
  switch (protocol) {
    case 'http/protobuf':
      return new (await import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter()
    case 'http/json':
      return new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter()
    default:
      throw new Error(`OTEL_EXPORTER_OTLP_PROTOCOL "${protocol}" is not supported: use http/protobuf (the default) or http/json`)
  }
}

function serviceVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version
}

export async function openTelemetryTracing(env: Env, log: Logger): Promise<Tracing> {
  const protocol = protocolOf(env)
  const exporter = await exporterFor(protocol)
  let lastWarning = 0
  setGlobalErrorHandler((err) => {
    const now = Date.now()
    if (now - lastWarning < EXPORT_WARNING_INTERVAL_MS) return
    lastWarning = now
    log.warn({ err: err instanceof Error ? err.message : String(err) }, 'tracing: spans could not be exported')
  })
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the env detector) override these.
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': 'tessera', 'service.version': serviceVersion() }))
    .merge(detectResources({ detectors: [envDetector] }))
  const provider = new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(exporter)] })
  const tracer = provider.getTracer('tessera', serviceVersion())
  const active = new AsyncLocalStorage<Context>()
  const propagator = new W3CTraceContextPropagator()
  log.info({ protocol }, 'tracing: OpenTelemetry spans are exported over OTLP')

  const fail = (span: Span, err: unknown) => {
    span.recordException(err instanceof Error ? err : String(err))
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) })
  }

  async function span<T>(name: string, attributes: SpanAttributes, work: () => Promise<T>, kind = SpanKind.INTERNAL): Promise<T> {
    const parent = active.getStore()
    if (parent === undefined) return work()
    const s = tracer.startSpan(name, { kind, attributes }, parent)
    try {
      return await active.run(trace.setSpan(parent, s), work)
    } catch (err) {
      fail(s, err)
      throw err
    } finally {
      s.end()
    }
  }

  /** The connection with executeQuery made a span; everything else (the drivers' symbol-keyed methods too) is the connection's own. */
  function tracedConnection(connection: DatabaseConnection): DatabaseConnection {
    const executeQuery = <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
      if (active.getStore() === undefined) return connection.executeQuery<R>(query)
      const operation = /^\s*([a-zA-Z]+)/.exec(query.sql)?.[1]?.toUpperCase() ?? 'QUERY'
      const attributes = {
        'db.system.name': 'postgresql',
        'db.operation.name': operation,
        'db.query.text': query.sql.length > MAX_STATEMENT ? `${query.sql.slice(0, MAX_STATEMENT)}…` : query.sql,
      }
      return span(operation, attributes, () => connection.executeQuery<R>(query), SpanKind.CLIENT)
    }
    return new Proxy(connection, {
      get(target, prop) {
        if (prop === 'executeQuery') return executeQuery
        const value = Reflect.get(target, prop, target) as unknown
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
  }

  function tracedDriver(driver: Driver): Driver {
    const acquireConnection: Driver['acquireConnection'] = async (options) => tracedConnection(await driver.acquireConnection(options))
    return new Proxy(driver, {
      get(target, prop) {
        if (prop === 'acquireConnection') return acquireConnection
        const value = Reflect.get(target, prop, target) as unknown
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
  }

  return {
    enabled: true,
    span: (name, attributes, work) => span(name, attributes, work),

    instrumentHttp(app, listener) {
      const spans = new WeakMap<FastifyRequest, Span>()
      // Routing is done before onRequest, so the span has its route (the pattern, never the
      // path's ids) from the start. The hook takes `done` so that the rest of the request's hooks
      // and its handler run inside the span's context: fastify calls them from `done`, and runs
      // a body parser's callback in the async scope the parse began in, so a body that arrives
      // later on the socket does not lose it (test/ops/tracing.test.ts sends one).
      app.addHook('onRequest', (request, _reply, done) => {
        const route = request.routeOptions.url
        const remote = propagator.extract(ROOT_CONTEXT, request.headers, defaultTextMapGetter)
        const s = tracer.startSpan(
          route === undefined ? request.method : `${request.method} ${route}`,
          {
            kind: SpanKind.SERVER,
            attributes: {
              'http.request.method': request.method,
              ...(route !== undefined && { 'http.route': route }),
              'url.scheme': 'http',
              'tessera.listener': listener,
            },
          },
          remote,
        )
        spans.set(request, s)
        active.run(trace.setSpan(remote, s), done)
      })
      app.addHook('onResponse', (request, reply, done) => {
        const s = spans.get(request)
        if (s === undefined) return done()
        spans.delete(request)
        s.setAttribute('http.response.status_code', reply.statusCode)
        const refused = refusals.get(request)
        if (refused !== undefined) s.setAttribute('tessera.oauth.error', refused.code)
        if (reply.statusCode >= 500) {
          s.setAttribute('error.type', String(reply.statusCode))
          s.setStatus({ code: SpanStatusCode.ERROR })
        }
        s.end()
        done()
      })
      app.addHook('onRequestAbort', (request, done) => {
        // The client went away before its answer: no status code to record.
        const s = spans.get(request)
        if (s !== undefined) {
          s.setAttribute('tessera.aborted', true)
          s.end()
          spans.delete(request)
        }
        done()
      })
    },

    instrumentDatabase(dialect: Dialect): Dialect {
      const createDriver = () => tracedDriver(dialect.createDriver())
      return new Proxy(dialect, {
        get(target, prop) {
          if (prop === 'createDriver') return createDriver
          const value = Reflect.get(target, prop, target) as unknown
          return typeof value === 'function' ? value.bind(target) : value
        },
      })
    },

    async shutdown() {
      await provider.shutdown().catch((err: unknown) => log.warn({ err: err instanceof Error ? err.message : String(err) }, 'tracing: shutdown failed'))
    },
  }
}
