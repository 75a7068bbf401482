import type { Kysely } from 'kysely'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { secondsUntil, throttleStore, type ThrottlePolicy } from './store.js'

export interface ClientAuthThrottleSettings {
  /** Failed authentications per client id, known or not. */
  client: ThrottlePolicy
  /** Failed authentications per network address, across client ids. */
  address: ThrottlePolicy
}

// Addresses known to be delayed, per instance: bounded, since an attacker chooses how many.
const BLOCKED_ADDRESSES = 10_000

/**
 * Throttling of failed client authentication, counted in Postgres per client id and per address
 * (unknown client ids included). A client secret is a 256-bit random value and checking one is
 * cheap, so what this limits is the cost of failures, not the chance of a guess: the hot path
 * (a correct secret) never touches the database for it.
 *
 * - An address over its budget is refused outright (429) for as long as its delay lasts, right
 *   credentials or not. Each instance learns of the delay from the count its own failures read
 *   back, and then refuses from memory without asking the database.
 * - A client id over its budget answers its failures with 429 instead of 401, while a request
 *   with the right secret from any address that is not delayed is served as ever: whoever guesses
 *   at a client's secret cannot lock the client out.
 */
export class ClientAuthThrottle {
  private readonly blockedAddresses = new LRUCache<string, number>({ max: BLOCKED_ADDRESSES })

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly settings: ClientAuthThrottleSettings,
  ) {}

  /** Seconds the address must wait, if this instance knows it to be delayed; else undefined. */
  addressDelay(address: string): number | undefined {
    const until = this.blockedAddresses.get(address)
    if (until === undefined) return undefined
    const now = this.clock.now()
    if (until <= now.getTime()) {
      this.blockedAddresses.delete(address)
      return undefined
    }
    return secondsUntil(new Date(until), now)
  }

  /**
   * Counts a failed authentication; when the address or the client id is now delayed (answer
   * 429), says which and for how many seconds; undefined: answer 401.
   */
  async failed(clientId: string, address: string): Promise<{ by: 'address' | 'client'; retryAfter: number } | undefined> {
    const now = this.clock.now()
    const byAddress = await throttleStore.reserve(this.db, 'client_address', address, this.settings.address, now)
    if (byAddress.blockedUntil !== null && byAddress.blockedUntil > now) {
      this.blockedAddresses.set(address, byAddress.blockedUntil.getTime())
      return { by: 'address', retryAfter: secondsUntil(byAddress.blockedUntil, now) }
    }
    const byClient = await throttleStore.reserve(this.db, 'client_id', clientId, this.settings.client, now)
    return byClient.blockedUntil !== null && byClient.blockedUntil > now
      ? { by: 'client', retryAfter: secondsUntil(byClient.blockedUntil, now) }
      : undefined
  }
}
