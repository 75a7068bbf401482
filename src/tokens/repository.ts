import { sql } from 'kysely'
import type { Selectable } from 'kysely'
import type { ClientsTable, Executor, KeyState } from '../db/schema.js'

export interface Grant {
  id: string
  clientId: string
  userId: string
  scopes: string[]
  audiences: string[]
  revokedAt: Date | null
  /** The DPoP key (RFC 7638 thumbprint) every refresh of the family must prove; null: unbound. */
  dpopJkt: string | null
}

export interface RefreshTokenRecord {
  grant: Grant
  issuedAt: Date
  expiresAt: Date
  usedAt: Date | null
}

/** What the database says about an access token whose signature and expiry already checked out. */
export interface AccessTokenStatus {
  denied: boolean
  keyState: KeyState | null
  clientExists: boolean
  clientRevokedAt: Date | null
  userExists: boolean
  userDisabled: boolean
  username: string | null
  grantExists: boolean
  grantRevokedAt: Date | null
}

const CLIENT_COLUMNS = [
  'client_id',
  'name',
  'secret_hash',
  'previous_secret_hash',
  'previous_secret_expires_at',
  'grant_types',
  'scopes',
  'audiences',
  'resource_identifiers',
  'access_token_ttl',
  'refresh_token_ttl',
  'tokens_revoked_at',
  'created_at',
  'updated_at',
  'token_endpoint_auth_method',
  'jwks',
  'jwks_uri',
  'token_endpoint_auth_signing_alg',
  'dpop_bound_access_tokens',
] as const satisfies readonly (keyof ClientsTable)[]
/** Compiles only while CLIENT_COLUMNS names every column: a client read with the caller must be whole. */
export const CLIENT_COLUMNS_COMPLETE: [Exclude<keyof ClientsTable, (typeof CLIENT_COLUMNS)[number]>] extends [never] ? true : never = true
const CALLER_COLUMNS = CLIENT_COLUMNS.map((c) => `caller.${c} as "caller.${c}"`).join(', ')

/** How far behind the others an instance's clock may run (`tessera doctor` fails beyond it too). */
const PURGE_MARGIN_SECONDS = 60

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
/** A value a uuid column can be compared with: anything else can match no row. */
export const asUuid = (v: string | undefined): string | null => (v !== undefined && UUID.test(v) ? v : null)

export const tokenRepository = {
  /**
   * Locks the client and the user against "revoke every token" while a grant is made for them,
   * so that a revocation either sees the new grant or happens after it. A share lock, because the
   * key-share lock the grant's foreign keys take does not wait for an update of the client's row.
   * Returns the user as it is now, under the lock (a login checks that it is still the user whose
   * password it verified: a row locked after a wait is read as the writer left it); undefined
   * when either has just been deleted.
   */
  async lockGrantOwners(db: Executor, clientId: string, userId: string): Promise<{ passwordHash: string; disabled: boolean } | undefined> {
    const r = await sql<{ passwordHash: string; disabled: boolean }>`
      select u.password_hash as "passwordHash", u.disabled
      from clients c, users u where c.client_id = ${clientId} and u.id = ${asUuid(userId)}::uuid for share
    `.execute(db)
    return r.rows[0]
  },

  /** Locks the user's row, the other side of lockGrantOwners; false when there is no such user. */
  async lockUser(db: Executor, userId: string): Promise<boolean> {
    const r = await sql`select 1 from users where id = ${asUuid(userId)}::uuid for update`.execute(db)
    return r.rows.length > 0
  },

  async insertGrant(db: Executor, grant: Omit<Grant, 'revokedAt'>, now: Date, expiresAt: Date): Promise<void> {
    await db
      .insertInto('grants')
      .values({
        id: grant.id,
        client_id: grant.clientId,
        user_id: grant.userId,
        scopes: grant.scopes,
        audiences: grant.audiences,
        created_at: now,
        expires_at: expiresAt,
        revoked_at: null,
        dpop_jkt: grant.dpopJkt,
      })
      .execute()
  },

  /**
   * Keeps the grant (and so reuse detection and its tokens' status) until at least `until`, if it
   * is not revoked; false when it is (or is gone). The update waits for a revocation of the grant
   * under way and then reads its outcome, so a grant is never extended past its revocation: the
   * expiry a revocation reads (revokeGrant) is the last any token of the grant will have.
   */
  async extendLiveGrant(db: Executor, grantId: string, until: Date): Promise<boolean> {
    const r = await db
      .updateTable('grants')
      .set((eb) => ({ expires_at: sql<Date>`greatest(${eb.ref('expires_at')}, ${until})` }))
      .where('id', '=', grantId)
      .where('revoked_at', 'is', null)
      .executeTakeFirst()
    return r.numUpdatedRows > 0n
  },

  /**
   * Binds a grant begun without a DPoP proof to the key `jkt` (RFC 9449 §5: a public client's
   * grant, at its first refresh with a proof). A grant bound already keeps its key.
   */
  async bindGrant(db: Executor, grantId: string, jkt: string): Promise<void> {
    await db.updateTable('grants').set({ dpop_jkt: jkt }).where('id', '=', grantId).where('dpop_jkt', 'is', null).execute()
  },

  /** Stores a refresh token's hash. */
  async insertRefreshToken(db: Executor, hash: Uint8Array, grantId: string, now: Date, expiresAt: Date): Promise<void> {
    await db
      .insertInto('refresh_tokens')
      .values({ token_hash: hash, grant_id: grantId, issued_at: now, expires_at: expiresAt, used_at: null })
      .execute()
  },

  /** The refresh token with this hash and its grant, or undefined when there is none. */
  async findRefreshToken(db: Executor, hash: Uint8Array): Promise<RefreshTokenRecord | undefined> {
    const row = await db
      .selectFrom('refresh_tokens as r')
      .innerJoin('grants as g', 'g.id', 'r.grant_id')
      .select([
        'r.issued_at',
        'r.expires_at',
        'r.used_at',
        'g.id',
        'g.client_id',
        'g.user_id',
        'g.scopes',
        'g.audiences',
        'g.revoked_at',
        'g.dpop_jkt',
      ])
      .where('r.token_hash', '=', hash)
      .executeTakeFirst()
    if (row === undefined) return undefined
    return {
      grant: {
        id: row.id,
        clientId: row.client_id,
        userId: row.user_id,
        scopes: row.scopes,
        audiences: row.audiences,
        revokedAt: row.revoked_at,
        dpopJkt: row.dpop_jkt,
      },
      issuedAt: row.issued_at,
      expiresAt: row.expires_at,
      usedAt: row.used_at,
    }
  },

  /**
   * Marks the token used if nobody has; true for the one caller that did. Concurrent callers with
   * the same token serialize on the row lock, and all but the first see it used.
   */
  async markUsed(db: Executor, hash: Uint8Array, now: Date): Promise<boolean> {
    const r = await db
      .updateTable('refresh_tokens')
      .set({ used_at: now })
      .where('token_hash', '=', hash)
      .where('used_at', 'is', null)
      .executeTakeFirst()
    return r.numUpdatedRows > 0n
  },

  /**
   * Revokes the grant; returns until when that matters (its expiry: by then every token issued
   * from it has expired), or undefined when it was revoked already or does not exist.
   */
  async revokeGrant(db: Executor, grantId: string, now: Date): Promise<Date | undefined> {
    const row = await db
      .updateTable('grants')
      .set({ revoked_at: now })
      .where('id', '=', grantId)
      .where('revoked_at', 'is', null)
      .returning('expires_at')
      .executeTakeFirst()
    return row?.expires_at
  },

  async revokeGrantsOfUser(db: Executor, userId: string, now: Date): Promise<void> {
    await db.updateTable('grants').set({ revoked_at: now }).where('user_id', '=', userId).where('revoked_at', 'is', null).execute()
  },

  async revokeGrantsOfClient(db: Executor, clientId: string, now: Date): Promise<void> {
    await db
      .updateTable('grants')
      .set({ revoked_at: now })
      .where('client_id', '=', clientId)
      .where('revoked_at', 'is', null)
      .execute()
  },

  /**
   * Puts an access token on the deny-list until it would have expired anyway. Idempotent: false
   * when it was there already.
   */
  async denyAccessToken(db: Executor, jti: string, expiresAt: Date): Promise<boolean> {
    const r = await db
      .insertInto('revoked_access_tokens')
      .values({ jti, expires_at: expiresAt })
      .onConflict((oc) => oc.column('jti').doNothing())
      .executeTakeFirst()
    return (r.numInsertedOrUpdatedRows ?? 0n) > 0n
  },

  /**
   * Everything revocation depends on, in one round trip; with `callerId`, the calling client's
   * row too (undefined when there is none), so that introspection authenticates its caller in
   * the same trip. A token of no grant (client_credentials) has no user or grant to look at and
   * skips those joins: introspection is the hot path.
   */
  async accessTokenStatus(
    db: Executor,
    t: {
      jti: string
      kid: string
      clientId: string
      userId: string | undefined
      grantId: string | undefined
      callerId?: string | undefined
    },
  ): Promise<AccessTokenStatus & { caller?: Selectable<ClientsTable> | undefined }> {
    const common = sql`
        exists (select 1 from revoked_access_tokens where jti = ${t.jti}) as "denied",
        (select state from signing_keys where kid = ${t.kid}) as "keyState",
        c.client_id is not null as "clientExists",
        c.tokens_revoked_at as "clientRevokedAt"`
    const withCaller = t.callerId !== undefined
    const callerColumns = withCaller ? sql`, ${sql.raw(CALLER_COLUMNS)}` : sql``
    const callerJoin = withCaller ? sql`left join clients caller on caller.client_id = ${t.callerId}` : sql``
    const query =
      t.userId === undefined && t.grantId === undefined
        ? sql<Record<string, unknown>>`
      select ${common},
        false as "userExists", false as "userDisabled", null as "username",
        false as "grantExists", null as "grantRevokedAt" ${callerColumns}
      from (select 1) as one
      left join clients c on c.client_id = ${t.clientId}
      ${callerJoin}`
        : sql<Record<string, unknown>>`
      select ${common},
        u.id is not null as "userExists",
        coalesce(u.disabled, false) as "userDisabled",
        u.username as "username",
        g.id is not null as "grantExists",
        g.revoked_at as "grantRevokedAt" ${callerColumns}
      from (select 1) as one
      left join clients c on c.client_id = ${t.clientId}
      left join users u on u.id = ${asUuid(t.userId)}::uuid
      left join grants g on g.id = ${asUuid(t.grantId)}::uuid
      ${callerJoin}`
    const row = (await query.execute(db)).rows[0]!
    const status = row as unknown as AccessTokenStatus
    if (!withCaller) return status
    const caller: Record<string, unknown> = {}
    for (const column of CLIENT_COLUMNS) caller[column] = row[`caller.${column}`]
    return { ...status, caller: caller['client_id'] == null ? undefined : (caller as unknown as Selectable<ClientsTable>) }
  },

  /** The deny-listed access tokens that have not expired yet, with their expiry. */
  async deniedJtis(db: Executor, now: Date, limit: number): Promise<Array<{ jti: string; until: Date }>> {
    return db
      .selectFrom('revoked_access_tokens')
      .select(['jti', 'expires_at as until'])
      .where('expires_at', '>', now)
      .orderBy('expires_at', 'desc')
      .limit(limit)
      .execute()
  },

  /**
   * The revoked grants whose tokens may not have expired yet, with the time they all will have;
   * the `limit` that end latest.
   */
  async revokedGrants(db: Executor, now: Date, limit: number): Promise<Array<{ id: string; until: Date }>> {
    return db
      .selectFrom('grants')
      .select(['id', 'expires_at as until'])
      .where('revoked_at', 'is not', null)
      .where('expires_at', '>', now)
      .orderBy('expires_at', 'desc')
      .limit(limit)
      .execute()
  },

  /** revokedGrants, of one user. */
  async revokedGrantsOfUser(db: Executor, userId: string, now: Date): Promise<Array<{ id: string; until: Date }>> {
    return db
      .selectFrom('grants')
      .select(['id', 'expires_at as until'])
      .where('user_id', '=', userId)
      .where('revoked_at', 'is not', null)
      .where('expires_at', '>', now)
      .execute()
  },

  /** revokedGrants, of one client: what its revoke-tokens revoked, for the views to apply. */
  async revokedGrantsOfClient(db: Executor, clientId: string, now: Date): Promise<Array<{ id: string; until: Date }>> {
    return db
      .selectFrom('grants')
      .select(['id', 'expires_at as until'])
      .where('client_id', '=', clientId)
      .where('revoked_at', 'is not', null)
      .where('expires_at', '>', now)
      .execute()
  },

  /**
   * Deletes what can no longer matter: expired deny-list entries, grants and refresh tokens. Only
   * once both the database's clock and this instance's (`now`) are past the expiry by a margin
   * for the other instances' clocks: one clock running ahead or stepping forward alone never
   * deletes a row an instance whose clock is behind still needs (docs/freshness.md).
   */
  async purgeExpired(db: Executor, now: Date): Promise<void> {
    const before = sql<Date>`least(now(), ${now}::timestamptz) - make_interval(secs => ${PURGE_MARGIN_SECONDS})`
    await db.deleteFrom('revoked_access_tokens').where('expires_at', '<', before).execute()
    await db.deleteFrom('grants').where('expires_at', '<', before).execute()
    await db.deleteFrom('refresh_tokens').where('expires_at', '<', before).execute()
  },
}
