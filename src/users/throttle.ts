import { sql, type Kysely } from 'kysely'
import { addSeconds, type Clock } from '../clock.js'
import type { Database, Executor } from '../db/schema.js'
import { usernameKey } from './repository.js'

export interface ThrottleSettings {
  /** Consecutive failures allowed before attempts are delayed. */
  freeFailures: number
  /** The longest delay, in seconds. */
  maxDelay: number
}

/**
 * Brute-force protection for the password grant. After `freeFailures` consecutive failures for a
 * username, each further failure blocks it for a delay that doubles (1 s, 2 s, 4 s, ... up to
 * `maxDelay`): online guessing slows to a crawl, while a legitimate user locked out by someone
 * else's guessing waits minutes, not forever. Counted per username, known or not, in Postgres,
 * so every instance shares the count. A success clears it.
 */
export class LoginThrottle {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly settings: ThrottleSettings,
  ) {}

  /** Whether attempts for this username must wait; a blocked attempt does not check the password. */
  async isBlocked(username: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('login_throttle')
      .select('blocked_until')
      .where('username_key', '=', usernameKey(username))
      .executeTakeFirst()
    return row?.blocked_until != null && row.blocked_until > this.clock.now()
  }

  async recordFailure(username: string): Promise<void> {
    const now = this.clock.now()
    const { freeFailures, maxDelay } = this.settings
    // One statement, so concurrent failures all count.
    await sql`
      insert into login_throttle (username_key, failures, last_failure_at, blocked_until)
      values (${usernameKey(username)}, 1, ${now}, null)
      on conflict (username_key) do update set
        failures = login_throttle.failures + 1,
        last_failure_at = excluded.last_failure_at,
        blocked_until = case
          when login_throttle.failures + 1 > ${freeFailures}
          then ${now}::timestamptz + make_interval(secs => least(${maxDelay}::float8,
            power(2, least(login_throttle.failures + 1 - ${freeFailures} - 1, 30))))
          else null
        end
    `.execute(this.db)
  }

  async recordSuccess(username: string): Promise<void> {
    await this.db.deleteFrom('login_throttle').where('username_key', '=', usernameKey(username)).execute()
  }

  /** Forgets failures older than a day with no block in force. */
  static async purge(db: Executor, now: Date): Promise<void> {
    await db
      .deleteFrom('login_throttle')
      .where('last_failure_at', '<', addSeconds(now, -86_400))
      .where((eb) => eb.or([eb('blocked_until', 'is', null), eb('blocked_until', '<', now)]))
      .execute()
  }
}
