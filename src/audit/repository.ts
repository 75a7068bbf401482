import { sql } from 'kysely'
import type { Executor } from '../db/schema.js'
import type { AuditEventType, AuditRecord } from './events.js'

/** A stored event: its record and its place in the table. */
export interface StoredAuditEvent extends AuditRecord {
  id: string
}

/** Where a page of events starts: after this event, in newest-first order. */
export interface AuditCursor {
  at: Date
  id: string
}

export interface AuditFilter {
  types?: AuditEventType[] | undefined
  userId?: string | undefined
  /** Events about this client, or made by it as an admin. */
  clientId?: string | undefined
  usernameHash?: string | undefined
  /** Inclusive. */
  since?: Date | undefined
  /** Exclusive. */
  until?: Date | undefined
  after?: AuditCursor | undefined
  limit: number
}

export const auditRepository = {
  /** Inserts the records in one statement; all or none. */
  async insertMany(db: Executor, records: AuditRecord[]): Promise<void> {
    if (records.length === 0) return
    await db
      .insertInto('audit_events')
      .values(
        records.map((r) => ({
          occurred_at: r.at,
          type: r.type,
          address: r.address,
          client_id: r.client_id,
          admin_client_id: r.admin_client_id,
          user_id: r.user_id,
          username: r.username,
          username_hash: r.username_hash,
          details: JSON.stringify(r.details),
        })),
      )
      .execute()
  },

  /**
   * Up to `limit` events matching every filter given, newest first (by the time of the event,
   * then by the order they were stored), starting after `after`. An empty list when none match.
   */
  async list(db: Executor, f: AuditFilter): Promise<StoredAuditEvent[]> {
    let q = db
      .selectFrom('audit_events')
      .select([
        sql<string>`id::text`.as('id'),
        'occurred_at',
        'type',
        'address',
        'client_id',
        'admin_client_id',
        'user_id',
        'username',
        'username_hash',
        'details',
      ])
      .orderBy('occurred_at', 'desc')
      // Qualified: a bare "id" would sort by the text the select makes of it.
      .orderBy('audit_events.id', 'desc')
      .limit(f.limit)
    if (f.types !== undefined) q = q.where('type', 'in', f.types)
    if (f.userId !== undefined) q = q.where('user_id', '=', f.userId)
    if (f.clientId !== undefined) {
      const clientId = f.clientId
      q = q.where((eb) => eb.or([eb('client_id', '=', clientId), eb('admin_client_id', '=', clientId)]))
    }
    if (f.usernameHash !== undefined) q = q.where('username_hash', '=', f.usernameHash)
    if (f.since !== undefined) q = q.where('occurred_at', '>=', f.since)
    if (f.until !== undefined) q = q.where('occurred_at', '<', f.until)
    if (f.after !== undefined) q = q.where(sql<boolean>`(occurred_at, id) < (${f.after.at}::timestamptz, ${f.after.id}::bigint)`)
    const rows = await q.execute()
    return rows.map((r) => ({
      id: r.id,
      type: r.type as AuditEventType,
      at: r.occurred_at,
      address: r.address,
      client_id: r.client_id,
      admin_client_id: r.admin_client_id,
      user_id: r.user_id,
      username: r.username,
      username_hash: r.username_hash,
      details: r.details,
    }))
  },

  /** Deletes the events older than `before`; how many there were. */
  async purge(db: Executor, before: Date): Promise<number> {
    const r = await db.deleteFrom('audit_events').where('occurred_at', '<', before).executeTakeFirst()
    return Number(r.numDeletedRows)
  },
}
