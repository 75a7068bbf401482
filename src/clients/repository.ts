import { sql, type Selectable } from 'kysely'
import type { ClientsTable, Executor } from '../db/schema.js'
import type { ClientAlg } from '../oauth/jws.js'

export type GrantType = 'password' | 'client_credentials' | 'refresh_token'
export const GRANT_TYPES: readonly GrantType[] = ['password', 'client_credentials', 'refresh_token']

/**
 * How a client authenticates at the token, introspection and revocation endpoints (RFC 7591 §2):
 * with a secret (Basic or in the form: either one, whichever is registered), with a JWT signed by
 * its key (RFC 7523 §2.2), or not at all (a public client, RFC 6749 §2.1).
 */
export type AuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none'
export const AUTH_METHODS: readonly AuthMethod[] = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none']
export const usesSecret = (method: AuthMethod): boolean => method === 'client_secret_basic' || method === 'client_secret_post'

/** A JWK Set (RFC 7517 §5) of public keys. */
export interface JwkSet {
  keys: Record<string, unknown>[]
}

export interface Client {
  clientId: string
  name: string
  /** Null for a client that has no secret (private_key_jwt, none, or not made yet). */
  secretHash: Uint8Array | null
  previousSecretHash: Uint8Array | null
  previousSecretExpiresAt: Date | null
  grantTypes: GrantType[]
  scopes: string[]
  audiences: string[]
  resourceIdentifiers: string[]
  accessTokenTtl: number | null
  refreshTokenTtl: number | null
  tokensRevokedAt: Date | null
  createdAt: Date
  updatedAt: Date
  tokenEndpointAuthMethod: AuthMethod
  /** private_key_jwt: the client's public keys, or where to fetch them; one of the two. */
  jwks: JwkSet | null
  jwksUri: string | null
  /** private_key_jwt: the one algorithm its assertions are signed with. */
  tokenEndpointAuthSigningAlg: ClientAlg | null
  /** RFC 9449 §5.2: its token requests must carry a DPoP proof. */
  dpopBoundAccessTokens: boolean
}

/** The fields an administrator sets; everything else is managed by Tessera. */
export interface ClientSettings {
  name: string
  grantTypes: GrantType[]
  scopes: string[]
  audiences: string[]
  resourceIdentifiers: string[]
  accessTokenTtl: number | null
  refreshTokenTtl: number | null
  tokenEndpointAuthMethod: AuthMethod
  jwks: JwkSet | null
  jwksUri: string | null
  tokenEndpointAuthSigningAlg: ClientAlg | null
  dpopBoundAccessTokens: boolean
}

export function toClient(row: Selectable<ClientsTable>): Client {
  return {
    clientId: row.client_id,
    name: row.name,
    secretHash: row.secret_hash,
    previousSecretHash: row.previous_secret_hash,
    previousSecretExpiresAt: row.previous_secret_expires_at,
    grantTypes: row.grant_types as GrantType[],
    scopes: row.scopes,
    audiences: row.audiences,
    resourceIdentifiers: row.resource_identifiers,
    accessTokenTtl: row.access_token_ttl,
    refreshTokenTtl: row.refresh_token_ttl,
    tokensRevokedAt: row.tokens_revoked_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    tokenEndpointAuthMethod: row.token_endpoint_auth_method as AuthMethod,
    jwks: row.jwks,
    jwksUri: row.jwks_uri,
    tokenEndpointAuthSigningAlg: row.token_endpoint_auth_signing_alg as ClientAlg | null,
    dpopBoundAccessTokens: row.dpop_bound_access_tokens,
  }
}

function settingsColumns(s: Partial<ClientSettings>) {
  return {
    ...(s.name !== undefined && { name: s.name }),
    ...(s.grantTypes !== undefined && { grant_types: s.grantTypes }),
    ...(s.scopes !== undefined && { scopes: s.scopes }),
    ...(s.audiences !== undefined && { audiences: s.audiences }),
    ...(s.resourceIdentifiers !== undefined && { resource_identifiers: s.resourceIdentifiers }),
    ...(s.accessTokenTtl !== undefined && { access_token_ttl: s.accessTokenTtl }),
    ...(s.refreshTokenTtl !== undefined && { refresh_token_ttl: s.refreshTokenTtl }),
    ...(s.tokenEndpointAuthMethod !== undefined && { token_endpoint_auth_method: s.tokenEndpointAuthMethod }),
    ...(s.jwks !== undefined && { jwks: s.jwks === null ? null : JSON.stringify(s.jwks) }),
    ...(s.jwksUri !== undefined && { jwks_uri: s.jwksUri }),
    ...(s.tokenEndpointAuthSigningAlg !== undefined && { token_endpoint_auth_signing_alg: s.tokenEndpointAuthSigningAlg }),
    ...(s.dpopBoundAccessTokens !== undefined && { dpop_bound_access_tokens: s.dpopBoundAccessTokens }),
  }
}

export const clientRepository = {
  /** The client, or undefined when there is none with this id. */
  async find(db: Executor, clientId: string): Promise<Client | undefined> {
    const row = await db.selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirst()
    return row && toClient(row)
  },

  /** The clients of these ids that exist (a reload of the view's cache, src/view/). */
  async findMany(db: Executor, clientIds: string[]): Promise<Client[]> {
    if (clientIds.length === 0) return []
    // One array parameter: a list of parameters would stop at Postgres' 65,535.
    const rows = await db.selectFrom('clients').selectAll().where(sql<boolean>`client_id = any(${clientIds}::text[])`).execute()
    return rows.map(toClient)
  },

  /** Clients ordered by id, starting after the given id. */
  async list(db: Executor, opts: { limit: number; after?: string | undefined }): Promise<Client[]> {
    let q = db.selectFrom('clients').selectAll().orderBy('client_id').limit(opts.limit)
    if (opts.after !== undefined) q = q.where('client_id', '>', opts.after)
    return (await q.execute()).map(toClient)
  },

  /** The client, its row locked until the transaction `trx` ends; undefined when there is none. */
  async findForUpdate(trx: Executor, clientId: string): Promise<Client | undefined> {
    const row = await trx.selectFrom('clients').selectAll().where('client_id', '=', clientId).forUpdate().executeTakeFirst()
    return row && toClient(row)
  },

  /** Inserts a client (with no secret: null); undefined when the id is taken (nothing is written then). */
  async insert(
    db: Executor,
    clientId: string,
    secretHash: Uint8Array | null,
    settings: ClientSettings,
    now: Date,
  ): Promise<Client | undefined> {
    const row = await db
      .insertInto('clients')
      .values({
        client_id: clientId,
        secret_hash: secretHash,
        previous_secret_hash: null,
        previous_secret_expires_at: null,
        tokens_revoked_at: null,
        created_at: now,
        updated_at: now,
        ...settingsColumns(settings),
      } as never)
      .onConflict((oc) => oc.column('client_id').doNothing())
      .returningAll()
      .executeTakeFirst()
    return row && toClient(row)
  },

  /**
   * Changes the given settings; undefined when the client does not exist. `dropSecret`: the client
   * no longer authenticates with a secret, so none is kept.
   */
  async update(db: Executor, clientId: string, settings: Partial<ClientSettings>, now: Date, opts: { dropSecret?: boolean } = {}) {
    const row = await db
      .updateTable('clients')
      .set({
        ...settingsColumns(settings),
        ...(opts.dropSecret === true && { secret_hash: null, previous_secret_hash: null, previous_secret_expires_at: null }),
        updated_at: now,
      })
      .where('client_id', '=', clientId)
      .returningAll()
      .executeTakeFirst()
    return row && toClient(row)
  },

  /**
   * Replaces the secret. The old one keeps working until `previousValidUntil` (null: it stops at
   * once). Undefined when the client does not exist.
   */
  async replaceSecret(
    db: Executor,
    clientId: string,
    secretHash: Uint8Array,
    previousValidUntil: Date | null,
    now: Date,
  ): Promise<Client | undefined> {
    const row = await db
      .updateTable('clients')
      .set((eb) => ({
        previous_secret_hash: previousValidUntil === null ? null : eb.ref('secret_hash'),
        previous_secret_expires_at: previousValidUntil,
        secret_hash: secretHash,
        updated_at: now,
      }))
      .where('client_id', '=', clientId)
      .returningAll()
      .executeTakeFirst()
    return row && toClient(row)
  },

  /**
   * Marks every access token issued to the client so far as revoked; false when there is none.
   * The mark only moves forward (src/tokens/status.ts compares a token's `cgen` with it), even when
   * the revoker's clock is behind the previous one's.
   */
  async revokeTokens(db: Executor, clientId: string, now: Date): Promise<boolean> {
    const r = await db
      .updateTable('clients')
      .set({ tokens_revoked_at: sql<Date>`greatest(${now}::timestamptz, tokens_revoked_at + interval '1 millisecond')` })
      .where('client_id', '=', clientId)
      .executeTakeFirst()
    return r.numUpdatedRows > 0n
  },

  /** Deletes the client and, by cascade, its grants and refresh tokens; false when there is none. */
  async delete(db: Executor, clientId: string): Promise<boolean> {
    const r = await db.deleteFrom('clients').where('client_id', '=', clientId).executeTakeFirst()
    return r.numDeletedRows > 0n
  },

  /** The longest access-token lifetime any client overrides to; null when none does. */
  async maxAccessTokenTtl(db: Executor): Promise<number | null> {
    const row = await db
      .selectFrom('clients')
      .select((eb) => eb.fn.max('access_token_ttl').as('max'))
      .executeTakeFirst()
    return row?.max ?? null
  },

  /** Whether any client may obtain the `admin` scope. */
  async anyAdmin(db: Executor): Promise<boolean> {
    const row = await db
      .selectFrom('clients')
      .select('client_id')
      .where((eb) => eb(eb.val('admin'), '=', eb.fn.any('scopes')))
      .limit(1)
      .executeTakeFirst()
    return row !== undefined
  },
}
