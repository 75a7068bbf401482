import type { FastifyRequest } from 'fastify'

/**
 * The network address a request came from, as throttling and the audit log count it: the TCP
 * peer, or, behind the proxies TRUST_PROXY lists, the right-most address in X-Forwarded-For that
 * is not one of them (fastify's trustProxy does that walk). An IPv4 address reached over an IPv6
 * socket is written as plain IPv4, so that one client has one key.
 */
export function clientAddress(request: FastifyRequest): string {
  const ip = request.ip
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip
}
