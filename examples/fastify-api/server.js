// @ts-check
// A minimal API on fastify that accepts Tessera's access tokens: GET /orders needs the scope
// orders:read, GET /me any valid token for this API, GET /health none. See README.md.
import Fastify from 'fastify'
import { AuthError, optionsFromEnv, requireScope, tesseraAuth } from '../shared/tessera-auth.js'

/** @typedef {import('../shared/tessera-auth.js').Principal} Principal */

const REALM = 'orders-api'
const auth = await tesseraAuth(optionsFromEnv(process.env))
const app = Fastify({ logger: false })

// Who called, per request (a WeakMap rather than a decorated property keeps the types plain).
/** @type {WeakMap<import('fastify').FastifyRequest, Principal>} */
const principals = new WeakMap()

/**
 * A preHandler that lets the request through only with a token for this API (and `scope`).
 * @param {string} [scope]
 * @returns {import('fastify').preHandlerAsyncHookHandler}
 */
const tokenRequired = (scope) =>
  async function (request, reply) {
    try {
      const principal = await auth.check(request.headers.authorization, {
        method: request.method,
        url: `${request.protocol}://${request.host}${request.url}`,
        dpop: request.headers.dpop,
      })
      if (scope !== undefined) requireScope(principal, scope)
      principals.set(request, principal)
    } catch (err) {
      if (!(err instanceof AuthError)) throw err
      return reply.code(err.status).header('www-authenticate', err.challenge(REALM)).header('cache-control', 'no-store').send(err.body())
    }
  }

/** @param {import('fastify').FastifyRequest} request */
const caller = (request) => /** @type {Principal} */ (principals.get(request))

app.get('/health', async () => ({ status: 'ok' }))

app.get('/me', { preHandler: tokenRequired() }, async (request) => {
  const { sub, clientId, scopes } = caller(request)
  return { sub, client_id: clientId, scopes }
})

app.get('/orders', { preHandler: tokenRequired('orders:read') }, async (request) => ({
  orders: [{ id: 'o-1001', total: 42 }],
  for: caller(request).sub,
}))

const address = await app.listen({ host: process.env['HOST'] ?? '127.0.0.1', port: Number(process.env['PORT'] ?? 3000) })
process.stdout.write(`listening on ${address} (tokens checked ${auth.mode === 'local' ? 'locally against /jwks' : 'by introspection'})\n`)

for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.on(signal, () => void app.close())
