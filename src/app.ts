import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { adminRoutes } from './http/admin.js'
import { coolDownRefusedConnections } from './http/cool-down.js'
import { installErrorHandling, refusals, sendError, toOAuthError } from './http/errors.js'
import { checkRequestTarget, clientErrorHandler, installFormParser, installJsonParser } from './http/parsers.js'
import { describeRoutes, serveApiDescription, type Json } from './http/openapi.js'
import { publicRoutes } from './http/public.js'
import type { Tessera } from './tessera.js'

function baseApp(t: Tessera, name: 'public' | 'admin'): FastifyInstance {
  const app = Fastify({
    loggerInstance: t.log.child({ listener: name }) as FastifyBaseLogger,
    // One line per request (below) instead of fastify's two, and no child logger made for every
    // request (pino builds one per call, redaction and all): the line names its request itself.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: (logger) => logger,
    // Token requests are small; a large body is a mistake or an attack.
    bodyLimit: 64 * 1024,
    // The shutdown drains the listeners before it closes the apps (src/server.ts); a request that
    // arrives during the drain on a connection already open is answered, with Connection: close.
    return503OnClosing: false,
    // allowUnionTypes: `type: ['integer', 'null']` is how a schema says "or null". x-examples: named
    // examples of a request body for the OpenAPI document, which ajv need not understand.
    ajv: {
      customOptions: {
        removeAdditional: false,
        coerceTypes: false,
        allErrors: false,
        allowUnionTypes: true,
        keywords: ['x-examples'],
      },
    },
    // Errors the router raises itself (an undecodable path, an overlong parameter) take the
    // same §5.2 shape as every other error.
    frameworkErrors: (err, _request, reply) => {
      sendError(reply, toOAuthError(err))
    },
    routerOptions: { maxParamLength: 500 },
    // request.ip: the TCP peer, or behind these proxies the right-most address they did not add.
    trustProxy: t.config.trustProxy.length > 0 ? t.config.trustProxy : false,
    clientErrorHandler,
  })
  app.decorateRequest('firstReading', null)
  // First, so that every hook after it runs inside the request's span.
  t.tracing.instrumentHttp(app, name)
  installErrorHandling(app, t.metrics)
  installJsonParser(app)
  // Callback hooks rather than async ones: every request runs them, and a promise each is not free.
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      checkRequestTarget(request.raw.url ?? '')
    } catch (err) {
      return done(err as Error)
    }
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    t.metrics.observeRequest(request.method, request.routeOptions.url ?? 'unknown', reply.statusCode, reply.elapsedTime / 1000)
    // Built only when it is written: with LOG_LEVEL above info, a request pays for no log line.
    if (t.log.isLevelEnabled('info')) {
      // The path only: a query string could carry what a client should not have put there.
      const path = request.url.split('?')[0]
      const ms = Math.round(reply.elapsedTime * 10) / 10
      const refused = refusals.get(request)
      request.log.info(
        refused === undefined
          ? { reqId: request.id, method: request.method, url: path, status: reply.statusCode, ms }
          : { reqId: request.id, method: request.method, url: path, status: reply.statusCode, ms, error: refused.code, detail: refused.detail },
        'request',
      )
    }
    done()
  })
  return app
}

/** The public API: token, introspection, revocation, keys, metadata and health. Never listens. */
export async function buildPublicApp(t: Tessera): Promise<FastifyInstance> {
  const app = baseApp(t, 'public')
  coolDownRefusedConnections(app)
  await installFormParser(app)
  await describeRoutes(app, 'public')
  publicRoutes(app, t)
  return app
}

/**
 * The admin API, on its own listener. Never listens. `publicDocument` is the public app's own
 * OpenAPI document (its `swagger()`), which the admin listener serves merged with its own.
 */
export async function buildAdminApp(t: Tessera, publicDocument: () => Json): Promise<FastifyInstance> {
  const app = baseApp(t, 'admin')
  await describeRoutes(app, 'admin')
  adminRoutes(app, t)
  await serveApiDescription(app, t, publicDocument)
  return app
}
