// Security events: what is recorded, and the one place that decides what of it is stored.
//
// To record one, call `record(event)` on the audit service (`tessera.audit`, or an AuditRecorder
// handed to a service). It only buffers (src/audit/writer.ts): it never waits, never throws and
// never touches the database on the caller's path. Events that come from a request carry the
// client's network address, `request.ip` (which TRUST_PROXY makes the real client's behind
// proxies); pass `null` only where there is no request.
//
//   tessera.audit.record({ type: 'login.failed', address: request.ip, clientId: client.clientId,
//     username: typedUsername, reason: 'invalid_credentials' })
//
// Nothing secret goes in: no password, client secret, token or Authorization header. A token is
// named by its jti (an access token) or its grant id (a refresh-token family), a client by its id,
// a user by id and username. A username typed at login is kept only as a keyed hash (see
// LoginFailed): people type passwords into username fields.

/** Where a request came from: `{ address: request.ip }`. */
export interface Origin {
  address: string | null
}

/** No request behind it (a scheduled job), or a caller that has not passed its address yet. */
export const NO_ORIGIN: Origin = { address: null }

/** A user as the audit names them: never the password. */
export interface AuditUser {
  id: string
  username: string
}

/** A password login that issued tokens. */
export interface LoginSucceeded {
  type: 'login.succeeded'
  address: string | null
  clientId: string
  user: AuditUser
}

/**
 * A password login refused. `username` is what was typed: stored and logged only as a keyed hash
 * (username_hash), never as text, because it may be a password typed into the wrong field. Give
 * `user` when the username names an existing user (a wrong password, a disabled user), so that
 * the event is found by that user's id.
 */
export interface LoginFailed {
  type: 'login.failed'
  address: string | null
  clientId: string
  username: string
  user?: AuditUser | undefined
  /** A short code, e.g. 'invalid_credentials', 'user_disabled'; never the password. */
  reason?: string | undefined
}

/** A password login refused without checking the password, because the username is throttled. */
export interface LoginThrottled {
  type: 'login.throttled'
  address: string | null
  clientId: string
  /** As typed; kept only as a keyed hash, as in LoginFailed. */
  username: string
  user?: AuditUser | undefined
  /** Which count refused it: the username's, or the address's (credential stuffing). */
  by?: 'username' | 'address' | undefined
  /** Until when attempts for this username are refused, when known. */
  blockedUntil?: Date | undefined
}

/**
 * A client failed to authenticate (token, introspection or revocation endpoint). `clientId` is
 * the id presented (which may name no client), or null when none was; never the secret or the
 * assertion.
 */
export interface ClientAuthenticationFailed {
  type: 'client.authentication_failed'
  address: string | null
  clientId: string | null
  /** The method tried: 'client_secret_basic', 'client_secret_post', 'private_key_jwt', … */
  method?: string | undefined
  /** A short code, e.g. 'unknown_client', 'invalid_secret', 'malformed'; never the credential. */
  reason?: string | undefined
}

/** A client's requests refused for a while because of repeated failures. */
export interface ClientThrottled {
  type: 'client.throttled'
  address: string | null
  clientId: string | null
  /** Which count refused it: the client id's, or the address's. */
  by?: 'client' | 'address' | undefined
  /** Seconds until the client may try again, when known. */
  retryAfter?: number | undefined
}

/** A spent refresh token presented again: its whole family was revoked (RFC 9700 §4.14.2). */
export interface RefreshTokenReused {
  type: 'refresh_token.reused'
  address: string | null
  clientId: string
  userId: string
  grantId: string
  /** True when it lost a race with another exchange of the same token. */
  concurrent: boolean
}

/** Tokens revoked: one access token, one grant, or everything of a client or a user. */
export type TokenRevoked = {
  type: 'token.revoked'
  address: string | null
} & (
  | { via: 'revocation_endpoint'; clientId: string; userId: string | null; token: { kind: 'access_token'; jti: string } | { kind: 'refresh_token'; grantId: string } }
  | { via: 'admin'; adminClientId: string | null; target: { kind: 'client'; clientId: string } | { kind: 'user'; userId: string } }
)

/** A signing key made: the first one (active at once) or the next one (published, not yet signing). */
export interface KeyCreated {
  type: 'key.created'
  kid: string
  alg: string
  state: 'next' | 'active'
}

/** A next key began to sign; the key it replaces is retired. */
export interface KeyActivated {
  type: 'key.activated'
  kid: string
  alg: string
}

/** Keys removed from /jwks once every token they signed had expired. */
export interface KeyRemoved {
  type: 'key.removed'
  kids: string[]
}

/**
 * A rotation asked for through the admin API made a key. `immediate`: the new key signs at once
 * and `removed` left /jwks (a leaked key).
 */
export interface KeyRotated {
  type: 'key.rotated'
  kid: string
  alg: string
  immediate: boolean
  removed: string[]
}

/**
 * A call to a mutating admin route, whatever its outcome (a refused one too: `status` says).
 * `changes` holds settings as validated by the route's schema, never a password or secret.
 */
export interface AdminChange {
  type: 'admin.change'
  address: string | null
  /** The client whose bearer token made the call; null when there was no usable token. */
  adminClientId: string | null
  method: string
  /** The route pattern, e.g. '/admin/users/:id'. */
  route: string
  status: number
  target?: { client?: string; user?: string; kid?: string } | undefined
  changes?: Record<string, unknown> | undefined
}

export type AuditEvent =
  | LoginSucceeded
  | LoginFailed
  | LoginThrottled
  | ClientAuthenticationFailed
  | ClientThrottled
  | RefreshTokenReused
  | TokenRevoked
  | KeyCreated
  | KeyActivated
  | KeyRemoved
  | KeyRotated
  | AdminChange

export type AuditEventType = AuditEvent['type']

/** Every type, for validating filters. */
export const AUDIT_EVENT_TYPES: readonly AuditEventType[] = [
  'login.succeeded',
  'login.failed',
  'login.throttled',
  'client.authentication_failed',
  'client.throttled',
  'refresh_token.reused',
  'token.revoked',
  'key.created',
  'key.activated',
  'key.removed',
  'key.rotated',
  'admin.change',
] satisfies readonly AuditEventType[]

/** What a service needs to record events. */
export interface AuditRecorder {
  record(event: AuditEvent): void
}

/** An event as stored, logged and shown by the admin API. */
export interface AuditRecord {
  type: AuditEventType
  at: Date
  address: string | null
  client_id: string | null
  admin_client_id: string | null
  user_id: string | null
  username: string | null
  username_hash: string | null
  details: Record<string, unknown>
}

/**
 * The stored form of an event at `at`. `hashUsername` is the keyed hash of a typed username
 * (src/audit/service.ts). Strings are cleaned: a multi-row insert fails as a whole, so one value
 * Postgres refuses (a NUL character, a lone surrogate) must not cost a batch its other events.
 */
export function toRecord(event: AuditEvent, at: Date, hashUsername: (typed: string) => string): AuditRecord {
  const base = {
    type: event.type,
    at,
    address: null as string | null,
    client_id: null as string | null,
    admin_client_id: null as string | null,
    user_id: null as string | null,
    username: null as string | null,
    username_hash: null as string | null,
    details: {} as Record<string, unknown>,
  }
  const user = (u: AuditUser | undefined) => (u === undefined ? {} : { user_id: u.id, username: u.username })
  let record: AuditRecord
  switch (event.type) {
    case 'login.succeeded':
      record = { ...base, address: event.address, client_id: event.clientId, ...user(event.user), username_hash: hashUsername(event.user.username) }
      break
    case 'login.failed':
      record = {
        ...base,
        address: event.address,
        client_id: event.clientId,
        ...user(event.user),
        username_hash: hashUsername(event.username),
        details: defined({ reason: event.reason }),
      }
      break
    case 'login.throttled':
      record = {
        ...base,
        address: event.address,
        client_id: event.clientId,
        ...user(event.user),
        username_hash: hashUsername(event.username),
        details: defined({ by: event.by, blocked_until: event.blockedUntil?.toISOString() }),
      }
      break
    case 'client.authentication_failed':
      record = { ...base, address: event.address, client_id: event.clientId, details: defined({ method: event.method, reason: event.reason }) }
      break
    case 'client.throttled':
      record = { ...base, address: event.address, client_id: event.clientId, details: defined({ by: event.by, retry_after: event.retryAfter }) }
      break
    case 'refresh_token.reused':
      record = {
        ...base,
        address: event.address,
        client_id: event.clientId,
        user_id: event.userId,
        details: { grant_id: event.grantId, concurrent: event.concurrent },
      }
      break
    case 'token.revoked':
      if (event.via === 'revocation_endpoint') {
        const token = event.token
        record = {
          ...base,
          address: event.address,
          client_id: event.clientId,
          user_id: event.userId,
          details: token.kind === 'access_token' ? { via: event.via, token_type: token.kind, jti: token.jti } : { via: event.via, token_type: token.kind, grant_id: token.grantId },
        }
      } else {
        const target = event.target
        record = {
          ...base,
          address: event.address,
          admin_client_id: event.adminClientId,
          ...(target.kind === 'client' ? { client_id: target.clientId } : { user_id: target.userId }),
          details: { via: event.via, scope: target.kind === 'client' ? 'every token of the client' : 'every grant of the user' },
        }
      }
      break
    case 'key.created':
      record = { ...base, details: { kid: event.kid, alg: event.alg, state: event.state } }
      break
    case 'key.activated':
      record = { ...base, details: { kid: event.kid, alg: event.alg } }
      break
    case 'key.removed':
      record = { ...base, details: { kids: event.kids } }
      break
    case 'key.rotated':
      record = { ...base, details: { kid: event.kid, alg: event.alg, immediate: event.immediate, removed: event.removed } }
      break
    case 'admin.change':
      record = {
        ...base,
        address: event.address,
        admin_client_id: event.adminClientId,
        client_id: event.target?.client ?? null,
        user_id: event.target?.user ?? null,
        details: defined({
          method: event.method,
          route: event.route,
          status: event.status,
          kid: event.target?.kid,
          changes: event.changes,
        }),
      }
      break
  }
  return clean(record) as AuditRecord
}

/** The fields whose value is not undefined. */
function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined))
}

// Longer than any id, username or route here; a client id typed at a failed authentication can be
// as long as the request body.
const MAX_STRING = 500

/** Strings Postgres text and jsonb accept, and bounded; Dates and other values as they are. */
function clean(value: unknown): unknown {
  if (typeof value === 'string') {
    // Cut first, so that a cut through a surrogate pair is mended below.
    const cut = value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value
    return cut
      .replace(/\u0000/g, '\ufffd')
      .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
  }
  if (Array.isArray(value)) return value.map(clean)
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [clean(k) as string, clean(v)]))
  }
  return value
}
