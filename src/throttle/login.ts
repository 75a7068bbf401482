import type { Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { usernameKey } from '../users/repository.js'
import { throttleStore, type Decision, type ThrottlePolicy, type ThrottleState } from './store.js'

export interface LoginThrottleSettings {
  /** Per username, known or not. */
  user: ThrottlePolicy
  /** Per network address, across every username: credential stuffing. */
  address: ThrottlePolicy
}

/** Why an attempt was refused, for the answer and the record. */
export type LoginRefusal = { reason: 'address' | 'username'; retryAfter: number }

/**
 * Brute-force protection of the password grant, in Postgres so that every instance shares it.
 * An attempt is counted before the password is checked, first against the address, then the
 * username: an address over its budget is refused before it can count against anyone's
 * username, so an attacker hammering one username from one address soon stops lengthening its
 * owner's delay, and the owner, from elsewhere, gets in once that (bounded) delay is over.
 * A refused attempt checks no password and looks up no user: the answer is the same, and as
 * fast, whether the username exists or not.
 */
export class LoginThrottle {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly settings: LoginThrottleSettings,
  ) {}

  /** Counts the attempt; a refusal says which count refused it and for how long. */
  async begin(username: string, address: string): Promise<LoginRefusal | undefined> {
    const now = this.clock.now()
    const byAddress = await throttleStore.reserve(this.db, 'login_address', address, this.settings.address, now)
    if (!byAddress.allowed) return { reason: 'address', retryAfter: byAddress.retryAfter }
    const byUser: Decision = await throttleStore.reserve(this.db, 'login_user', usernameKey(username), this.settings.user, now)
    if (!byUser.allowed) return { reason: 'username', retryAfter: byUser.retryAfter }
    return undefined
  }

  /** The attempt succeeded: the username starts afresh, and the address gets its attempt back. */
  async succeeded(username: string, address: string): Promise<void> {
    await throttleStore.clear(this.db, 'login_user', usernameKey(username))
    await throttleStore.refund(this.db, 'login_address', address, this.settings.address)
  }

  /** A username's failed-login state (for the admin API), or undefined when it has none. */
  state(username: string): Promise<ThrottleState | undefined> {
    return throttleStore.state(this.db, 'login_user', usernameKey(username))
  }

  /** Clears a username's failed logins and any delay in force; false when there were none. */
  clear(username: string): Promise<boolean> {
    return throttleStore.clear(this.db, 'login_user', usernameKey(username))
  }
}
