// Which database failures mean "the database is out of reach right now" (answered 503 with
// Retry-After, src/http/errors.ts) rather than a bug (500). Stores let these errors through
// unchanged; only the mapping to HTTP asks this question.

// SQLSTATE classes and codes (PostgreSQL, Appendix A): 08 connection exception; 57P01-57P05
// operator intervention (shutdown, crash recovery, cannot connect now, idle-session timeout);
// 57014 query_canceled (statement_timeout); 53300 too_many_connections; 40001/40P01 a
// serialization failure or deadlock, which a retry resolves.
const UNAVAILABLE_CODES = new Set(['57P01', '57P02', '57P03', '57P04', '57P05', '57014', '53300', '40001', '40P01'])

// Errors of the socket under node-postgres, by errno.
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
])

// node-postgres reports its own timeouts and dead connections only by message.
const NETWORK_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Query read timeout',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'Connection ended unexpectedly',
]

/** Whether the error says the database could not be reached or did not answer in time. */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  if (err instanceof DatabaseUnavailableError) return true
  const { code, message } = err as { code?: unknown; message?: unknown }
  if (typeof code === 'string') {
    if (code.startsWith('08') || UNAVAILABLE_CODES.has(code) || NETWORK_CODES.has(code)) return true
  }
  return typeof message === 'string' && NETWORK_MESSAGES.some((m) => message.includes(m))
}

/** Raised by our own code when it gives up on the database (a timeout of its own, say). */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError'
}
