import type { Selectable } from 'kysely'
import type { ClientsTable, Executor } from '../db/schema.js'

export type GrantType = 'password' | 'client_credentials' | 'refresh_token'
export const GRANT_TYPES: readonly GrantType[] = ['password', 'client_credentials', 'refresh_token']

export interface Client {
  clientId: string
  name: string
  secretHash: Uint8Array
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
  }
}

export const clientRepository = {
  /** The client, or undefined when there is none with this id. */
  async find(db: Executor, clientId: string): Promise<Client | undefined> {
    const row = await db.selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirst()
    return row && toClient(row)
  },

  /** Every client: what each instance holds in memory (src/view/). */
  async all(db: Executor): Promise<Client[]> {
    return (await db.selectFrom('clients').selectAll().execute()).map(toClient)
  },

  /** Clients ordered by id, starting after the given id. */
  async list(db: Executor, opts: { limit: number; after?: string | undefined }): Promise<Client[]> {
    let q = db.selectFrom('clients').selectAll().orderBy('client_id').limit(opts.limit)
    if (opts.after !== undefined) q = q.where('client_id', '>', opts.after)
    return (await q.execute()).map(toClient)
  },

  /** Inserts a client; false when the id is taken (nothing is written then). */
  async insert(
    db: Executor,
    clientId: string,
    secretHash: Uint8Array,
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

  /** Changes the given settings; undefined when the client does not exist. */
  async update(db: Executor, clientId: string, settings: Partial<ClientSettings>, now: Date) {
    const row = await db
      .updateTable('clients')
      .set({ ...settingsColumns(settings), updated_at: now })
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

  /** Marks every access token issued to the client so far as revoked; false when there is none. */
  async revokeTokens(db: Executor, clientId: string, now: Date): Promise<boolean> {
    const r = await db
      .updateTable('clients')
      .set({ tokens_revoked_at: now })
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
