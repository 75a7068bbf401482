import { sql } from 'kysely'
import type { Executor } from '../db/schema.js'

/**
 * What is counted: the networks that failed a username's logins (`login_user`), one network's
 * failed logins for one username (`login_pair`), a network's logins across usernames, a client
 * id's or a network's client authentications. Usernames are keyed by HMAC (src/throttle/login.ts),
 * networks by src/throttle/address.ts.
 */
export type ThrottleKind = 'login_user' | 'login_pair' | 'login_address' | 'client_id' | 'client_address'

/**
 * How a key is throttled. `doubling`: once `free` attempts have been counted, each further one
 * waits a delay that doubles from one second up to `maxDelay`; for a username, whose owner must
 * not be kept out for long. `window`: `free` attempts per window, then none until the window
 * ends; for an address, the budget of everything tried from it.
 */
export type ThrottlePolicy = { delay: 'doubling'; free: number; maxDelay: number } | { delay: 'window'; free: number }

/** Counts are forgotten this long after the first failure of a window, in seconds. */
export const WINDOW_SECONDS = 3600

/** Whether the attempt may be made, and until when the key is delayed now (null: it is not). */
export type Decision = ({ allowed: true } | { allowed: false; retryAfter: number }) & {
  blockedUntil: Date | null
  /** The count in the window, this attempt included when it was allowed. */
  failures: number
}

export interface ThrottleState {
  failures: number
  windowStartedAt: Date
  blockedUntil: Date | null
}

/** Whole seconds until `until` (at least 1): a Retry-After value. */
export const secondsUntil = (until: Date, now: Date): number => Math.max(1, Math.ceil((until.getTime() - now.getTime()) / 1000))

export const throttleStore = {
  /**
   * Counts an attempt as a failure before it is made, in one statement: the decision to make the
   * attempt and the count it adds are one step, so N concurrent attempts never check more than
   * the budget that was left. While a delay is in force the attempt is refused and not counted.
   * The attempt that uses up the free budget starts the delay (see ThrottlePolicy). A success is
   * the caller's to `clear` (or, for a count of many keys, to `refund`).
   */
  async reserve(db: Executor, kind: ThrottleKind, key: string, policy: ThrottlePolicy, now: Date): Promise<Decision> {
    const windowEnd = sql`${now}::timestamptz - make_interval(secs => ${WINDOW_SECONDS})`
    const counted = sql`(case when t.window_started_at <= ${windowEnd} then 1 else t.failures + 1 end)`
    const windowStart = sql`(case when t.window_started_at <= ${windowEnd} then ${now}::timestamptz else t.window_started_at end)`
    const delay = (n: unknown, started: unknown) =>
      policy.delay === 'doubling'
        ? sql`${now}::timestamptz + make_interval(secs => least(${policy.maxDelay}::float8, power(2, least(${n} - ${policy.free}, 30))))`
        : sql`${started}::timestamptz + make_interval(secs => ${WINDOW_SECONDS})`
    const r = await sql<{ refused: boolean; blocked_until: Date | null; failures: number }>`
      insert into throttle as t (kind, key, failures, window_started_at, blocked_until, refused)
      values (${kind}, ${key}, 1, ${now}, case when 1 >= ${policy.free} then ${delay(sql`1`, now)} end, false)
      on conflict (kind, key) do update set
        refused = coalesce(t.blocked_until > ${now}, false),
        failures = case when t.blocked_until > ${now} then t.failures else ${counted} end,
        window_started_at = case when t.blocked_until > ${now} then t.window_started_at else ${windowStart} end,
        blocked_until = case
          when t.blocked_until > ${now} then t.blocked_until
          when ${counted} >= ${policy.free} then ${delay(counted, windowStart)}
        end
      returning refused, blocked_until, failures`.execute(db)
    const { refused, blocked_until: blockedUntil, failures } = r.rows[0]!
    return refused && blockedUntil !== null
      ? { allowed: false, retryAfter: secondsUntil(blockedUntil, now), blockedUntil, failures }
      : { allowed: true, blockedUntil, failures }
  },

  /**
   * Takes back one counted attempt that turned out well (a success, among an address's many).
   * A delay that the attempts still in flight started ends when their successes bring the count
   * back under the budget: many people behind one address (an office, a carrier's NAT) logging in
   * at once are not shut out for the rest of the window.
   */
  async refund(db: Executor, kind: ThrottleKind, key: string, policy: ThrottlePolicy): Promise<void> {
    const left = sql`greatest(t.failures - 1, 0)`
    await sql`
      update throttle as t set
        failures = ${left},
        blocked_until = case when ${left} < ${policy.free} then null else t.blocked_until end
      where t.kind = ${kind} and t.key = ${key}`.execute(db)
  },

  /** Until when the key is delayed, without counting anything; null when it is not. */
  async blockedUntil(db: Executor, kind: ThrottleKind, key: string, now: Date): Promise<Date | null> {
    const row = await db
      .selectFrom('throttle')
      .select('blocked_until')
      .where('kind', '=', kind)
      .where('key', '=', key)
      .where('blocked_until', '>', now)
      .executeTakeFirst()
    return row?.blocked_until ?? null
  },

  /** The failures counted for every key of `kind` that starts with `prefix` and a space, added up. */
  async sumPrefixed(db: Executor, kind: ThrottleKind, prefix: string): Promise<number> {
    const r = await sql<{ n: string | number | null }>`
      select sum(failures) as n from throttle where kind = ${kind} and left(key, ${prefix.length + 1}) = ${`${prefix} `}`.execute(db)
    return Number(r.rows[0]?.n ?? 0)
  },

  /** Forgets every key of `kind` that starts with `prefix` and a space; how many there were. */
  async clearPrefixed(db: Executor, kind: ThrottleKind, prefix: string): Promise<number> {
    const r = await sql`delete from throttle where kind = ${kind} and left(key, ${prefix.length + 1}) = ${`${prefix} `}`.execute(db)
    return Number(r.numAffectedRows ?? 0n)
  },

  /** Forgets the key's failures and any delay in force. */
  async clear(db: Executor, kind: ThrottleKind, key: string): Promise<boolean> {
    const r = await db.deleteFrom('throttle').where('kind', '=', kind).where('key', '=', key).executeTakeFirst()
    return r.numDeletedRows > 0n
  },

  /** The key's count, or undefined when it has none. */
  async state(db: Executor, kind: ThrottleKind, key: string): Promise<ThrottleState | undefined> {
    const row = await db
      .selectFrom('throttle')
      .select(['failures', 'window_started_at', 'blocked_until'])
      .where('kind', '=', kind)
      .where('key', '=', key)
      .executeTakeFirst()
    return row && { failures: row.failures, windowStartedAt: row.window_started_at, blockedUntil: row.blocked_until }
  },

  /** Deletes counts whose window has ended and whose delay, if any, is over. */
  async purge(db: Executor, now: Date): Promise<void> {
    await db
      .deleteFrom('throttle')
      .where('window_started_at', '<', new Date(now.getTime() - WINDOW_SECONDS * 1000))
      .where((eb) => eb.or([eb('blocked_until', 'is', null), eb('blocked_until', '<', now)]))
      .execute()
  },
}
