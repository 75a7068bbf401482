import { createHmac, hkdfSync } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { usernameKey } from '../users/repository.js'
import { addressKey } from './address.js'
import { secondsUntil, throttleStore, type ThrottlePolicy, type ThrottleState } from './store.js'

export interface LoginThrottleSettings {
  /** Per username and network: LOGIN_FREE_FAILURES, then a doubling delay up to LOGIN_MAX_DELAY. */
  pair: ThrottlePolicy
  /**
   * Per username, across networks: counts the networks that failed it in the window
   * (LOGIN_USER_ADDRESSES), then a doubling delay for every network.
   */
  user: ThrottlePolicy
  /** Per network, across every username: credential stuffing. */
  address: ThrottlePolicy
  /** How much of an IPv6 address is one network (THROTTLE_IPV6_PREFIX). */
  ipv6Prefix: number
  /** The key that usernames are hashed with before they are stored (derived from KEY_ENCRYPTION_KEY). */
  keyEncryptionKey: Buffer
}

/** Why an attempt was refused, for the answer and the record. */
export type LoginRefusal = { reason: 'address' | 'username'; retryAfter: number }

/** An attempt that was counted and may be checked; hand it back to `succeeded` when it succeeds. */
export interface LoginAttempt {
  readonly user: string
  readonly network: string
  /** Whether this attempt was its network's first at the username in the window (and so counted there). */
  readonly countedForUser: boolean
}

export const isRefusal = (r: LoginAttempt | LoginRefusal): r is LoginRefusal => 'reason' in r

/**
 * Brute-force protection of the password grant, in Postgres so that every instance shares it.
 * Every attempt is counted before the password is checked, in three counts:
 *
 * - the network's (an IPv4 address, an IPv6 /64): LOGIN_ADDRESS_FAILURES an hour across all
 *   usernames, checked first, against credential stuffing;
 * - the username's from that network: LOGIN_FREE_FAILURES, then a delay doubling up to
 *   LOGIN_MAX_DELAY. This is what slows one network guessing one username, and it holds that
 *   network alone: the owner, from any other network, is not kept out by it;
 * - the username's across networks: the number of networks that began failing it in the window.
 *   Once LOGIN_USER_ADDRESSES of them have, each further one waits a delay that doubles, and so
 *   does every attempt at the username while it lasts. Fewer networks than that never delay the
 *   owner; more (a botnet) can, for LOGIN_MAX_DELAY per network they bring in (SECURITY.md).
 *
 * A refused attempt checks no password and looks up no user: the answer is the same, and as fast,
 * whether the username exists or not. Usernames are stored as an HMAC (as the audit log keeps
 * them), never as typed.
 */
export class LoginThrottle {
  private readonly hashKey: Buffer

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly settings: LoginThrottleSettings,
  ) {
    this.hashKey = Buffer.from(hkdfSync('sha256', settings.keyEncryptionKey, Buffer.alloc(0), 'tessera throttle username key', 32))
  }

  /** The stored form of a typed username: keyed, so the table does not reveal what was typed. */
  private userKey(username: string): string {
    return createHmac('sha256', this.hashKey).update(usernameKey(username)).digest('base64url').slice(0, 22)
  }

  /** Counts the attempt; a refusal says which count refused it and for how long. */
  async begin(username: string, address: string): Promise<LoginAttempt | LoginRefusal> {
    const { db, settings } = this
    const now = this.clock.now()
    const network = addressKey(address, settings.ipv6Prefix)
    const user = this.userKey(username)
    const byAddress = await throttleStore.reserve(db, 'login_address', network, settings.address, now)
    if (!byAddress.allowed) return { reason: 'address', retryAfter: byAddress.retryAfter }
    const userDelayed = await throttleStore.blockedUntil(db, 'login_user', user, now)
    if (userDelayed !== null) return { reason: 'username', retryAfter: secondsUntil(userDelayed, now) }
    const byPair = await throttleStore.reserve(db, 'login_pair', `${user} ${network}`, settings.pair, now)
    if (!byPair.allowed) return { reason: 'username', retryAfter: byPair.retryAfter }
    if (byPair.failures !== 1) return { user, network, countedForUser: false }
    const byUser = await throttleStore.reserve(db, 'login_user', user, settings.user, now)
    if (!byUser.allowed) return { reason: 'username', retryAfter: byUser.retryAfter }
    return { user, network, countedForUser: true }
  }

  /**
   * The attempt succeeded: its network starts afresh at the username, and gives back what the
   * attempt counted elsewhere. The username's count of other networks stays: the owner logging
   * in does not wipe out a spread of guessers.
   */
  async succeeded(attempt: LoginAttempt): Promise<void> {
    await throttleStore.clear(this.db, 'login_pair', `${attempt.user} ${attempt.network}`)
    await throttleStore.refund(this.db, 'login_address', attempt.network, this.settings.address)
    if (attempt.countedForUser) await throttleStore.refund(this.db, 'login_user', attempt.user, this.settings.user)
  }

  /**
   * A username's failed logins (for the admin API): the failures counted from every network, and
   * the delay in force for all of them, if any; undefined when it has none.
   */
  async state(username: string): Promise<ThrottleState | undefined> {
    const user = this.userKey(username)
    const across = await throttleStore.state(this.db, 'login_user', user)
    const failures = await throttleStore.sumPrefixed(this.db, 'login_pair', user)
    if (across === undefined) return undefined
    return { ...across, failures }
  }

  /** Clears a username's failed logins, from every network, and any delay in force; false when there were none. */
  async clear(username: string): Promise<boolean> {
    const user = this.userKey(username)
    const pairs = await throttleStore.clearPrefixed(this.db, 'login_pair', user)
    return (await throttleStore.clear(this.db, 'login_user', user)) || pairs > 0
  }
}
