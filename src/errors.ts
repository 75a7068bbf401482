// Errors are values: an error code from the RFCs (or the admin API), a public description that
// the client sees, and a private detail that only the log sees. src/http/errors.ts is the one
// place that turns them into HTTP.

export type ErrorCode =
  // RFC 6749 §5.2
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  // RFC 6749 §4.1.2.1, used as §5.2 JSON with 503 by most servers: the database is out of reach,
  // or the password hashing queue is full
  | 'temporarily_unavailable'
  // RFC 8628 §3.5's "slow down", with 429: too many failed attempts from this address, for this
  // username or this client
  | 'slow_down'
  // RFC 8707 §2
  | 'invalid_target'
  // RFC 9449 §5, §8: a DPoP proof that fails a check, or one without the nonce the server requires
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  // RFC 6750 §3.1, for the admin API's bearer tokens
  | 'invalid_token'
  | 'insufficient_scope'
  // admin API
  | 'not_found'
  | 'conflict'
  | 'server_error'

const STATUS: Record<ErrorCode, number> = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  invalid_scope: 400,
  temporarily_unavailable: 503,
  slow_down: 429,
  invalid_target: 400,
  invalid_dpop_proof: 400,
  use_dpop_nonce: 400,
  invalid_token: 401,
  insufficient_scope: 403,
  not_found: 404,
  conflict: 409,
  server_error: 500,
}

/** What an answer carries beyond its code: another status than the code's, and headers. */
export interface ErrorExtras {
  /** A resource server answers a DPoP failure 401 (RFC 9449 §7.1) where the token endpoint says 400. */
  status?: number
  /** E.g. DPoP-Nonce (RFC 9449 §8), or a WWW-Authenticate challenge of its own. */
  headers?: Record<string, string>
}

export class OAuthError extends Error {
  override name = 'OAuthError'
  readonly status: number
  readonly headers: Readonly<Record<string, string>>

  constructor(
    readonly code: ErrorCode,
    /** Shown to the client as error_description. */
    readonly description?: string,
    /** Logged, never shown. */
    readonly detail?: string,
    /** Seconds to wait before trying again (Retry-After), for 429 and 503. */
    readonly retryAfter?: number,
    extras: ErrorExtras = {},
  ) {
    // No stack trace: an OAuthError is an answer, not a bug, and under a flood of refused
    // requests capturing one for each was most of what refusing them cost.
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(description === undefined ? code : `${code}: ${description}`)
    Error.stackTraceLimit = limit
    this.status = extras.status ?? STATUS[code]
    this.headers = extras.headers ?? {}
  }

  /** The same error with another status or more headers. */
  with(extras: ErrorExtras): OAuthError {
    return new OAuthError(this.code, this.description, this.detail, this.retryAfter, {
      status: extras.status ?? this.status,
      headers: { ...this.headers, ...extras.headers },
    })
  }
}

export const invalidRequest = (description: string, detail?: string) =>
  new OAuthError('invalid_request', description, detail)
export const invalidClient = (detail?: string) =>
  new OAuthError('invalid_client', 'client authentication failed', detail)
export const invalidGrant = (description: string, detail?: string) =>
  new OAuthError('invalid_grant', description, detail)
export const invalidScope = (description: string) => new OAuthError('invalid_scope', description)
export const invalidTarget = (description: string) => new OAuthError('invalid_target', description)
export const invalidDpopProof = (description: string, detail?: string) =>
  new OAuthError('invalid_dpop_proof', description, detail)
export const notFound = (what: string) => new OAuthError('not_found', `${what} not found`)
export const temporarilyUnavailable = (detail?: string, retryAfter = 2) =>
  new OAuthError('temporarily_unavailable', 'the service is temporarily unavailable; try again shortly', detail, retryAfter)
export const slowDown = (retryAfter: number, detail?: string) =>
  new OAuthError('slow_down', `too many failed attempts; try again in ${retryAfter} s`, detail, retryAfter)
