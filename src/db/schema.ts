import type { ColumnType, Generated, Kysely, Transaction } from 'kysely'

// Row types as the database returns them. bytea arrives as Buffer from pg and as Uint8Array from
// PGlite, so it is typed as the common Uint8Array.

type Timestamp = ColumnType<Date, Date, Date>

export interface ClientsTable {
  client_id: string
  name: string
  secret_hash: Uint8Array | null
  previous_secret_hash: Uint8Array | null
  previous_secret_expires_at: Timestamp | null
  grant_types: string[]
  scopes: string[]
  audiences: string[]
  resource_identifiers: string[]
  access_token_ttl: number | null
  refresh_token_ttl: number | null
  tokens_revoked_at: Timestamp | null
  created_at: Timestamp
  updated_at: Timestamp
  token_endpoint_auth_method: Generated<string>
  /** A JWK Set (public keys only); written as JSON text. */
  jwks: ColumnType<{ keys: Record<string, unknown>[] } | null, string | null, string | null>
  jwks_uri: string | null
  token_endpoint_auth_signing_alg: string | null
  dpop_bound_access_tokens: Generated<boolean>
}

export interface UsersTable {
  id: string
  username: string
  username_key: string
  password_hash: string
  disabled: Generated<boolean>
  scopes: string[] | null
  created_at: Timestamp
  updated_at: Timestamp
}

export type KeyState = 'next' | 'active' | 'retired' | 'removed'

export interface SigningKeysTable {
  kid: string
  alg: string
  state: KeyState
  public_jwk: ColumnType<Record<string, unknown>, string, string>
  private_key: Uint8Array | null
  created_at: Timestamp
  activate_at: Timestamp | null
  activated_at: Timestamp | null
  retired_at: Timestamp | null
  remove_at: Timestamp | null
  removed_at: Timestamp | null
}

export interface GrantsTable {
  id: string
  client_id: string
  user_id: string
  scopes: string[]
  audiences: string[]
  created_at: Timestamp
  expires_at: Timestamp
  revoked_at: Timestamp | null
  dpop_jkt: string | null
}

export interface RefreshTokensTable {
  token_hash: Uint8Array
  grant_id: string
  issued_at: Timestamp
  expires_at: Timestamp
  used_at: Timestamp | null
}

export interface RevokedAccessTokensTable {
  jti: string
  expires_at: Timestamp
}

export interface ThrottleTable {
  kind: string
  key: string
  failures: number
  window_started_at: Timestamp
  blocked_until: Timestamp | null
  refused: Generated<boolean>
}

export interface ChangeHeadTable {
  one: Generated<boolean>
  seq: ColumnType<string, string | number, string | number>
}

export interface ChangesTable {
  /** bigint: arrives as a string from both drivers. */
  seq: ColumnType<string, string | number, never>
  kind: string
  subject: string
  until: Timestamp | null
  created_at: Generated<Date>
}

export interface InstancesTable {
  id: string
  host: string
  pid: number
  started_at: Generated<Date>
  lease_expires_at: Timestamp
  acked_seq: ColumnType<string, string | number, string | number>
  renewed_at: Generated<Date>
}

export interface AuditEventsTable {
  /** bigint: read as text (both drivers would otherwise disagree on its type). */
  id: Generated<string>
  occurred_at: Timestamp
  type: string
  address: string | null
  client_id: string | null
  admin_client_id: string | null
  user_id: string | null
  username: string | null
  username_hash: string | null
  details: ColumnType<Record<string, unknown>, string, string>
}

export interface ReplayGuardTable {
  kind: string
  jti: string
  expires_at: Timestamp
}

export interface Database {
  clients: ClientsTable
  users: UsersTable
  signing_keys: SigningKeysTable
  grants: GrantsTable
  refresh_tokens: RefreshTokensTable
  revoked_access_tokens: RevokedAccessTokensTable
  throttle: ThrottleTable
  change_head: ChangeHeadTable
  changes: ChangesTable
  instances: InstancesTable
  audit_events: AuditEventsTable
  replay_guard: ReplayGuardTable
}

/**
 * What a repository method runs its queries on: the root database or a transaction. Repositories
 * take it as a parameter and never capture the root, because PGlite has one connection and a
 * query on the root issued inside a transaction would wait forever.
 */
export type Executor = Kysely<Database> | Transaction<Database>
