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
  // RFC 6749 §4.1.2.1, used as §5.2 JSON with 503 by most servers: the database is out of reach
  | 'temporarily_unavailable'
  // RFC 8707 §2
  | 'invalid_target'
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
  invalid_target: 400,
  invalid_token: 401,
  insufficient_scope: 403,
  not_found: 404,
  conflict: 409,
  server_error: 500,
}

export class OAuthError extends Error {
  override name = 'OAuthError'
  readonly status: number

  constructor(
    readonly code: ErrorCode,
    /** Shown to the client as error_description. */
    readonly description?: string,
    /** Logged, never shown. */
    readonly detail?: string,
  ) {
    super(description === undefined ? code : `${code}: ${description}`)
    this.status = STATUS[code]
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
export const notFound = (what: string) => new OAuthError('not_found', `${what} not found`)
export const temporarilyUnavailable = (detail?: string) =>
  new OAuthError('temporarily_unavailable', 'the service is temporarily unavailable; try again shortly', detail)
