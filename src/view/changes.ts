import { sql, type Transaction } from 'kysely'
import type { Database, Executor } from '../db/schema.js'

/**
 * A write that can turn a "yes" into a "no", as the instances learn of it. Each kind says what
 * to do with the view (src/view/view.ts):
 *
 *   access_token  jti `subject` is deny-listed until `until`
 *   grant         grant `subject` (a refresh-token family) is revoked; it matters until `until`
 *   client        client `subject` was created, changed, deleted or had its tokens revoked: re-read it
 *   user          user `subject` was disabled, enabled, deleted, given a new password or had its
 *                 grants revoked: re-read it and its revoked grants
 *   keys          a signing key was removed: re-read the keys
 */
export type Change =
  | { kind: 'access_token'; subject: string; until: Date }
  | { kind: 'grant'; subject: string; until: Date }
  | { kind: 'client'; subject: string }
  | { kind: 'user'; subject: string }
  | { kind: 'keys'; subject: '' }

export type ChangeKind = Change['kind']

/**
 * How a service makes a write that takes something away: `work` runs in a transaction and reports
 * its changes through `change`; the promise resolves once the transaction has committed and every
 * instance has applied them (src/view/feed.ts).
 */
export interface ChangeWriter {
  write<T>(work: (trx: Transaction<Database>, change: (c: Change) => void) => Promise<T>): Promise<T>
  /** Resolves once every change committed so far has reached every instance: see ChangeFeed.fence. */
  fence(): Promise<void>
  /** Resolves once every instance has applied change `seq` (or its lease ran out): see ChangeFeed.awaitApplied. */
  awaitApplied(seq: number): Promise<void>
}

/** A change with its place in the sequence. */
export type SequencedChange = Change & { seq: number }

const KINDS = new Set<string>(['access_token', 'grant', 'client', 'user', 'keys'])

/**
 * The notification channel of this database and schema: instances of several deployments (or
 * test files) may share one Postgres database under different schemas, and channels are
 * per database.
 */
const CHANNEL = sql<string>`'tessera_' || left(md5(current_schema()), 16)`

export const changeRepository = {
  /**
   * Records the change in the transaction `trx` and returns its sequence number. Call it last in
   * the transaction: the head row stays locked until commit, which is what keeps the sequence in
   * commit order. The notification goes out when the transaction commits, and not at all if it
   * rolls back (and then neither does the sequence number).
   */
  async record(trx: Executor, change: Change): Promise<number> {
    const until = 'until' in change ? change.until : null
    const r = await sql<{ seq: number }>`
      with head as (update change_head set seq = seq + 1 returning seq),
      recorded as (
        insert into changes (seq, kind, subject, until)
        select seq, ${change.kind}::text, ${change.subject}::text, ${until}::timestamptz from head
        returning seq
      )
      select seq::float8 as seq,
        pg_notify(${CHANNEL}, concat_ws('|', seq, ${change.kind}::text,
          coalesce((extract(epoch from ${until}::timestamptz) * 1000)::bigint::text, ''), ${change.subject}::text))
      from recorded`.execute(trx)
    return r.rows[0]!.seq
  },

  /**
   * Records `changes` in the transaction `trx`, numbered in their order, with one update of the head
   * (a group commit: src/tokens/revocation-batch.ts), and returns the head after them. With no
   * changes it records nothing and returns the head as this statement sees it: under read
   * committed that includes every change committed before the statement began. Call it last in
   * the transaction, as record().
   */
  async recordMany(trx: Executor, changes: Change[]): Promise<number> {
    if (changes.length === 0) return changeRepository.head(trx)
    const kinds = changes.map((c) => c.kind)
    const subjects = changes.map((c) => c.subject)
    // As epoch ms, not Dates: both drivers pass a number array alike.
    const untils = changes.map((c) => ('until' in c ? c.until.getTime() : null))
    const r = await sql<{ seq: number }>`
      with head as (update change_head set seq = seq + ${changes.length} returning seq),
      numbered as (
        select (head.seq - ${changes.length} + t.ord)::bigint as seq, t.kind, t.subject,
          to_timestamp(t.until_ms / 1000.0) as until
        from head, unnest(${kinds}::text[], ${subjects}::text[], ${untils}::float8[])
          with ordinality as t(kind, subject, until_ms, ord)
      ),
      recorded as (
        insert into changes (seq, kind, subject, until)
        select seq, kind, subject, until from numbered
        returning seq, kind, subject, until
      )
      select max(seq)::float8 as seq, count(pg_notify(${CHANNEL}, concat_ws('|', seq, kind,
          coalesce((extract(epoch from until) * 1000)::bigint::text, ''), subject)))
      from (select * from recorded order by seq) r`.execute(trx)
    return r.rows[0]!.seq
  },

  /** The channel name, as listeners must LISTEN to it. */
  async channel(db: Executor): Promise<string> {
    const r = await sql<{ channel: string }>`select ${CHANNEL} as channel`.execute(db)
    return r.rows[0]!.channel
  },

  /** The sequence number of the latest committed change. */
  async head(db: Executor): Promise<number> {
    const r = await sql<{ seq: number }>`select seq::float8 as seq from change_head`.execute(db)
    return r.rows[0]!.seq
  },

  /**
   * The changes after `after`, up to and including `upTo`, in order; undefined when some of them
   * were purged already (the caller must then reload everything).
   */
  async since(db: Executor, after: number, upTo: number): Promise<SequencedChange[] | undefined> {
    if (upTo <= after) return []
    const rows = await sql<{ seq: number; kind: string; subject: string; until: Date | null }>`
      select seq::float8 as seq, kind, subject, until from changes
      where seq > ${after} and seq <= ${upTo} order by seq`.execute(db)
    if (rows.rows.length !== upTo - after) return undefined
    return rows.rows.map((r) => toChange(r.seq, r.kind, r.subject, r.until))
  },

  /**
   * Forgets changes older than `seconds` (by the database's clock, as they were stamped: a step
   * only makes an instance that missed them list everything again). Dead instances' rows are
   * not purged by any clock: the change feed reaps them (src/view/feed.ts).
   */
  async purge(db: Executor, seconds: number): Promise<void> {
    await sql`delete from changes where created_at < now() - make_interval(secs => ${seconds})`.execute(db)
  },
}

/** A notification's payload (`seq|kind|until in ms|subject`), or undefined if it is not one. */
export function parseNotification(payload: string): SequencedChange | undefined {
  const [seq, kind, until, ...rest] = payload.split('|')
  if (seq === undefined || kind === undefined || until === undefined) return undefined
  const n = Number(seq)
  if (!Number.isSafeInteger(n)) return undefined
  return toChange(n, kind, rest.join('|'), until === '' ? null : new Date(Number(until)))
}

function toChange(seq: number, kind: string, subject: string, until: Date | null): SequencedChange {
  if (!KINDS.has(kind)) throw new Error(`unknown change kind ${JSON.stringify(kind)}`)
  // Kinds with a lifetime always record one; a record without it would be a bug, read as "forever".
  return { seq, kind, subject, ...(until !== null && { until }) } as SequencedChange
}
