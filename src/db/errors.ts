// Which database failures mean "the database cannot serve this right now" (answered 503 with
// Retry-After, src/http/errors.ts) rather than a bug (500). Stores let these errors through
// unchanged; only the mapping to HTTP asks this question.
//
// The question for each SQLSTATE class (PostgreSQL, Appendix A) is whether the failure is the
// database's state or environment, which an operator or time puts right without a change to
// Tessera (503, and the client retries), or a statement Tessera should not have sent (500, logged
// as an error to be fixed). The decision for every class:
//
//   00 01 02    success, warning, no data: never raised as errors.
//   03 0A 0B    SQL statement not yet complete, feature not supported, invalid transaction
//               initiation: our SQL (500).
//   08          connection exception: 503.
//   09 0F 0L 0P 0Z 20 21 22 23 24 26 27 2B 2D 2F 34 38 39 3B 3F 42 44 HV P0
//               triggered actions, locators, grantors, roles, diagnostics, case, cardinality,
//               data, integrity (the stores turn the expected unique violations into answers),
//               cursors, statement names, dependent privileges, transaction termination,
//               routines, savepoints, schema names, syntax and access rules, check option, FDW,
//               PL/pgSQL: our SQL or our schema (500).
//   25          invalid transaction state: 25006 read_only_sql_transaction is a primary demoted
//               (or a hot standby reached) during a failover, 25P03 and 25P04 are the server
//               ending an idle or overlong transaction: 503. The rest (25001, 25P02, ...) are
//               our transaction handling (500).
//   28 3D000    invalid authorization, no such database: raised only while connecting, when the
//               database cannot be reached as configured (a password rotated, a database
//               renamed), the same for clients as a host that refuses connections: 503.
//   40          transaction rollback: 40001 serialization failure, 40P01 deadlock, 40003
//               statement completion unknown and 40000 are resolved by a retry: 503. 40002
//               integrity violation at commit is our constraints (500).
//   53          insufficient resources (disk full, out of memory, too many connections,
//               configuration limit): the server's state: 503.
//   54          program limit exceeded (54000, stack depth 54001, too many columns or
//               arguments): our inputs are bounded by validation before they reach SQL, so this
//               is the server's limits (max_stack_depth, a build's limits) met under its load or
//               settings: 503.
//   55          object not in prerequisite state: 55P03 lock_not_available (lock_timeout, a lock
//               held elsewhere) passes: 503. 55000, 55006 object in use, 55P02, 55P04: our
//               statements or a migration running beside us (500).
//   57          operator intervention: 57014 query canceled (statement_timeout,
//               pg_cancel_backend), 57P01-57P05 shutdown, crash, not accepting connections yet,
//               database dropped, idle session timeout: 503.
//   58          system error (I/O error, files missing or duplicated in the server's data
//               directory): the database host's failure: 503.
//   72          snapshot too old: a retry takes a new snapshot: 503.
//   F0          configuration file error: the server's configuration: 503.
//   XX          internal error, data corrupted, index corrupted: a retry does not heal them and
//               an operator must see them at once: 500, logged as an error.
const UNAVAILABLE_CLASSES = new Set(['08', '28', '53', '54', '57', '58', '72', 'F0'])
const UNAVAILABLE_CODES = new Set(['25006', '25P03', '25P04', '3D000', '40000', '40001', '40003', '40P01', '55P03'])

// Errors of the socket under node-postgres, by errno: the network between us and the database,
// never the request.
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENETRESET',
  'ECONNABORTED',
  // No local port left to connect from: passes as connections in TIME_WAIT expire.
  'EADDRNOTAVAIL',
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

/** Whether a SQLSTATE or errno means the database cannot serve the request now (see above). */
export function isUnavailableCode(code: string): boolean {
  return UNAVAILABLE_CODES.has(code) || (code.length === 5 && UNAVAILABLE_CLASSES.has(code.slice(0, 2))) || NETWORK_CODES.has(code)
}

/** Whether the error says the database could not be reached or could not serve the request now. */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  if (err instanceof DatabaseUnavailableError) return true
  const { code, message } = err as { code?: unknown; message?: unknown }
  if (typeof code === 'string' && isUnavailableCode(code)) return true
  return typeof message === 'string' && NETWORK_MESSAGES.some((m) => message.includes(m))
}

/** Raised by our own code when it gives up on the database (a timeout of its own, say). */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError'
}
