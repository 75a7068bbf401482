import type { Kysely } from 'kysely'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { addressKey } from './address.js'
import { WINDOW_SECONDS, secondsUntil, throttleStore, type Decision, type ThrottlePolicy } from './store.js'

export interface ClientAuthThrottleSettings {
  /** Failed authentications per client id, known or not. */
  client: ThrottlePolicy
  /** Failed authentications per network (an IPv4 address, an IPv6 /64), across client ids. */
  address: ThrottlePolicy
  /** How much of an IPv6 address is one network (THROTTLE_IPV6_PREFIX). */
  ipv6Prefix: number
}

/** Why a failure is answered 429, and for how long. */
export type ClientThrottled = { by: 'address' | 'client'; retryAfter: number }

/** A check that `admit` let through: settle it exactly once. */
export interface ClientCheck {
  /** The credentials were right. */
  passed(): Promise<void>
  /** They were wrong: counted; says whether to answer 429 (and why) instead of 401. */
  failed(clientId: string): Promise<ClientThrottled | undefined>
  /** Nothing was judged (an error on the way): whatever was counted is given back. */
  abandon(): Promise<void>
}

/** What this instance knows of a network. */
interface NetworkState {
  /** Until then every check is decided by the database before it is made (ms since the epoch). */
  countedUntil: number
  /** Until then the network is refused outright (ms since the epoch). */
  blockedUntil: number
  /** Checks let through without the database and not yet settled; a failure settles once counted. */
  unsettled: number
  /** Woken each time one of them settles. */
  onSettle: Array<() => void>
}

// Checks let through at once from one network without asking the database, while this instance
// has seen no failure from it. A right secret is checked synchronously from memory, so honest
// traffic seldom has more than one in flight; slower checks (private_key_jwt) beyond this many
// wait for the database instead.
const FAST_IN_FLIGHT = 8
// Networks this instance keeps state for: bounded, since an attacker chooses how many.
const NETWORKS = 100_000

/**
 * Throttling of client authentication, counted in Postgres per client id and per network
 * (unknown client ids included). A client secret is a 256-bit random value and checking one is
 * cheap, so the hot path (a right secret from a network with no failures) never touches the
 * database; and yet every check is decided before it is made:
 *
 * - From a network this instance has seen no failure from, up to FAST_IN_FLIGHT checks at a time
 *   go ahead at once (more wait for one of them to settle). The first failure turns the network over to the database (synchronously,
 *   before its count is written): every later check reserves its place in the network's budget
 *   (CLIENT_AUTH_ADDRESS_FAILURES, one statement, as the login throttle does) after the checks
 *   already in flight have been counted, and gives it back when the credentials were right. So
 *   one instance never checks more failures from a network than its budget, however many arrive
 *   at once; a cluster of K instances at most (K - 1) x FAST_IN_FLIGHT more.
 * - A network over its budget is refused outright (429), right credentials or not, until the
 *   window ends; the instance remembers that and refuses it from memory.
 * - A client id over its budget answers its failures with 429 instead of 401, while a request
 *   with the right secret from any network that is not refused is served as ever: whoever guesses
 *   at a client's secret cannot lock the client out.
 */
export class ClientAuthThrottle {
  private readonly networks = new LRUCache<string, NetworkState>({ max: NETWORKS })

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly settings: ClientAuthThrottleSettings,
  ) {}

  /**
   * Lets a check from `address` go ahead, or says how many seconds the network must wait. The
   * common case (a network with no failures and room in flight) is decided synchronously, with
   * no promise, since every request that authenticates a client passes here.
   */
  admit(address: string): ClientCheck | number | Promise<ClientCheck | number> {
    const network = addressKey(address, this.settings.ipv6Prefix)
    return this.admitNow(network) ?? this.admitLater(network)
  }

  /** The decision that needs no waiting, if there is one. */
  private admitNow(network: string): ClientCheck | number | undefined {
    const now = this.clock.now().getTime()
    let state = this.networks.get(network)
    if (state !== undefined && state.blockedUntil > now) return secondsUntil(new Date(state.blockedUntil), new Date(now))
    if (state !== undefined && state.countedUntil > now) return undefined
    if (state === undefined) {
      state = { countedUntil: 0, blockedUntil: 0, unsettled: 0, onSettle: [] }
      this.networks.set(network, state)
    }
    return state.unsettled < FAST_IN_FLIGHT ? this.uncounted(network, state) : undefined
  }

  private async admitLater(network: string): Promise<ClientCheck | number> {
    for (;;) {
      const fast = this.admitNow(network)
      if (fast !== undefined) return fast
      const state = this.networks.get(network)!
      if (state.countedUntil <= this.clock.now().getTime()) {
        // As many checks in flight as may go ahead at once: wait for one to settle, and look again
        // (a failure among them turns the network over to the database).
        await this.settled(state)
        continue
      }
      while (state.unsettled > 0) await this.settled(state)
      const at = this.clock.now()
      const decision = await throttleStore.reserve(this.db, 'client_address', network, this.settings.address, at)
      this.learn(state, decision)
      if (!decision.allowed) return decision.retryAfter
      return this.counted(network, state, decision, at)
    }
  }

  /** Resolves when one of the network's unsettled checks settles. */
  private settled(state: NetworkState): Promise<void> {
    return new Promise((resolve) => state.onSettle.push(resolve))
  }

  /** A check the database has not counted: a failure is counted after it, before anything else from the network. */
  private uncounted(network: string, state: NetworkState): ClientCheck {
    state.unsettled++
    let open = true
    // The network's state stays for the LRU to evict: deleting the last entry of an LRUCache
    // clears all its slots, a cost in the size of the cache on every request.
    const done = () => {
      if (!open) return
      open = false
      state.unsettled--
      if (state.onSettle.length > 0) for (const wake of state.onSettle.splice(0)) wake()
    }
    return {
      passed: async () => done(),
      abandon: async () => done(),
      failed: async (clientId) => {
        const now = this.clock.now()
        state.countedUntil = Math.max(state.countedUntil, now.getTime() + WINDOW_SECONDS * 1000)
        try {
          const decision = await throttleStore.reserve(this.db, 'client_address', network, this.settings.address, now)
          this.learn(state, decision)
          return this.answer(decision, clientId, now)
        } finally {
          done()
        }
      },
    }
  }

  /** A check whose place in the network's budget was reserved before it was made. */
  private counted(network: string, state: NetworkState, reserved: Decision, at: Date): ClientCheck {
    const giveBack = async () => {
      await throttleStore.refund(this.db, 'client_address', network, this.settings.address)
      // A delay this check started ends with its refund (store.ts); the next check asks the database.
      if (reserved.blockedUntil !== null && state.blockedUntil === reserved.blockedUntil.getTime()) state.blockedUntil = 0
    }
    return {
      passed: giveBack,
      abandon: giveBack,
      failed: (clientId) => this.answer(reserved, clientId, at),
    }
  }

  /** 429 by address when this failure's count delayed the network, else by client id when that is delayed. */
  private async answer(byAddress: Decision, clientId: string, now: Date): Promise<ClientThrottled | undefined> {
    if (byAddress.blockedUntil !== null && byAddress.blockedUntil > now) {
      return { by: 'address', retryAfter: secondsUntil(byAddress.blockedUntil, now) }
    }
    const byClient = await throttleStore.reserve(this.db, 'client_id', clientId, this.settings.client, now)
    return byClient.blockedUntil !== null && byClient.blockedUntil > now
      ? { by: 'client', retryAfter: secondsUntil(byClient.blockedUntil, now) }
      : undefined
  }

  private learn(state: NetworkState, decision: Decision): void {
    if (decision.blockedUntil !== null) state.blockedUntil = Math.max(state.blockedUntil, decision.blockedUntil.getTime())
  }
}
