import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { FastifyInstance } from 'fastify'
import { refusals } from './errors.js'

// Long enough that a client looping on refusals makes a handful of requests a second per
// connection, short enough that an honest client's next request on it barely notices.
const MAX_COOL_DOWN_MS = 1000

/**
 * A client told to come back later (429 slow_down, 503 temporarily_unavailable) gets its answer
 * at once, but its connection's next request is not looked at until a moment has passed (at most
 * a second, never longer than Retry-After). A flood from clients that ignore Retry-After then
 * costs a few requests a second per connection instead of all the event loop can answer, so the
 * requests of everyone else keep their latency. Only where the peer is the client itself: a
 * connection from a trusted proxy (TRUST_PROXY) carries other clients' requests too.
 */
export function coolDownRefusedConnections(app: FastifyInstance): void {
  const until = new WeakMap<Socket, number>()
  // Callback hooks: every request passes them, and almost none has anything to wait for.
  app.addHook('onRequest', (request, _reply, done) => {
    const socket = request.raw.socket
    const at = until.get(socket)
    if (at === undefined) return done()
    until.delete(socket)
    const wait = at - performance.now()
    if (wait > 0) setTimeout(done, wait)
    else done()
  })
  app.addHook('onResponse', (request, _reply, done) => {
    const refusal = refusals.get(request)
    if (refusal?.retryAfter !== undefined && !(request.ips !== undefined && request.ips.length > 1)) {
      until.set(request.raw.socket, performance.now() + Math.min(MAX_COOL_DOWN_MS, refusal.retryAfter * 1000))
    }
    done()
  })
}
