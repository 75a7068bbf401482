import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
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
  app.addHook('onRequest', async (request) => {
    const socket = request.raw.socket
    const at = until.get(socket)
    if (at === undefined) return
    until.delete(socket)
    const wait = at - performance.now()
    if (wait > 0) await sleep(wait)
  })
  app.addHook('onResponse', async (request) => {
    const refusal = refusals.get(request)
    if (refusal?.retryAfter === undefined) return
    const socket = request.raw.socket
    if (request.ips !== undefined && request.ips.length > 1) return
    until.set(socket, performance.now() + Math.min(MAX_COOL_DOWN_MS, refusal.retryAfter * 1000))
  })
}
