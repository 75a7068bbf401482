// @ts-check
// A minimal API on express 5 that accepts Tessera's access tokens: GET /orders needs the scope
// orders:read, GET /me any valid token for this API, GET /health none. See README.md.
import express from 'express'
import { AuthError, optionsFromEnv, requireScope, tesseraAuth } from '../shared/tessera-auth.js'

/** @typedef {import('../shared/tessera-auth.js').Principal} Principal */

const REALM = 'orders-api'
const auth = await tesseraAuth(optionsFromEnv(process.env))
const app = express()

/**
 * Middleware that lets the request through only with a token for this API (and `scope`); the
 * caller is then res.locals.principal.
 * @param {string} [scope]
 * @returns {import('express').RequestHandler}
 */
const tokenRequired = (scope) => async (req, res, next) => {
  try {
    const principal = await auth.check(req.get('authorization'), {
      method: req.method,
      url: `${req.protocol}://${req.get('host')}${req.originalUrl}`,
      dpop: req.headers.dpop,
    })
    if (scope !== undefined) requireScope(principal, scope)
    res.locals['principal'] = principal
    next()
  } catch (err) {
    if (!(err instanceof AuthError)) return next(err)
    res.status(err.status).set('www-authenticate', err.challenge(REALM)).set('cache-control', 'no-store').json(err.body())
  }
}

/** @param {import('express').Response} res */
const caller = (res) => /** @type {Principal} */ (res.locals['principal'])

app.get('/health', (_req, res) => {
  res.json({ status: 'ok' })
})

app.get('/me', tokenRequired(), (_req, res) => {
  const { sub, clientId, scopes } = caller(res)
  res.json({ sub, client_id: clientId, scopes })
})

app.get('/orders', tokenRequired('orders:read'), (_req, res) => {
  res.json({ orders: [{ id: 'o-1001', total: 42 }], for: caller(res).sub })
})

const server = app.listen(Number(process.env['PORT'] ?? 3000), process.env['HOST'] ?? '127.0.0.1', () => {
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address())
  process.stdout.write(
    `listening on http://${process.env['HOST'] ?? '127.0.0.1'}:${port} (tokens checked ${auth.mode === 'local' ? 'locally against /jwks' : 'by introspection'})\n`,
  )
})

for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.on(signal, () => server.close())
