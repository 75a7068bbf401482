import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import { temporarilyUnavailable } from '../errors.js'
import { addressKey } from '../throttle/address.js'

/** A place in the queue: run the hash with it, or leave. */
export interface HashSlot {
  run<T>(work: () => Promise<T>): Promise<T>
  leave(): void
}

interface Entry {
  readonly address: string
  state: 'held' | 'waiting' | 'running' | 'left'
  wake?: () => void
}

// How fast an address's past use of the queue is forgotten: halved every this many ms.
const HALF_LIFE_MS = 10_000
// A share below this is a newcomer's: nothing queued, and no request within the last half-life.
const NEWCOMER = 0.5
// Addresses whose past use is remembered: bounded, since an attacker chooses how many.
const REMEMBERED = 10_000
// What one argon2 hash takes before any has been measured (src/users/passwords.ts: 20-30 ms).
const FIRST_GUESS_MS = 30
// Weight of the latest hash in the running average: a few dozen hashes make the estimate.
const SMOOTHING = 0.1

/**
 * A bounded queue in front of argon2. At most `concurrency` hashes run at once, kept below the
 * number of cores so that one is always left for the event loop (which signs tokens and answers
 * introspection) and the database; at most `waiting` more wait their turn. Past that a request is
 * refused at once (503 temporarily_unavailable), instead of every request in the process waiting
 * behind a flood of password logins.
 *
 * Shared fairly between network addresses (IPv6 by THROTTLE_IPV6_PREFIX), so that a flood from
 * many addresses does not shut out a person arriving from one of their own. An address's share is
 * the places it holds now plus its recent use of the queue (each request counts one, halved every
 * 10 s), so a flooding address ranks behind one that has asked for nothing lately:
 * - a free turn goes to the waiting request whose address has the smallest share (then the one
 *   waiting longest);
 * - when every place is taken, a request from an address with nothing queued and no request in the
 *   last 10 s still gets one of `concurrency` places kept for such newcomers, and so
 *   the next free turn, ahead of every flooding address's waiting request. Anyone else is
 *   answered 503 at once, before the throttles' database is asked anything. (Nothing already
 *   admitted is ever dropped: a flood of ever new addresses would make each drop cost a wasted
 *   attempt.)
 * Retry-After on a 503 is the time the queue ahead is expected to take, from the hashes' measured
 * duration, rounded up to whole seconds.
 */
export class HashQueue {
  private running = 0
  private readonly entries = new Set<Entry>()
  private readonly held = new Map<string, number>()
  private readonly runningBy = new Map<string, number>()
  private readonly waiters: Entry[] = []
  private averageMs = FIRST_GUESS_MS
  private readonly used = new LRUCache<string, { score: number; at: number }>({ max: REMEMBERED })
  /** Admin calls waiting for a place (enterWaiting), woken one at a time as places free up. */
  private readonly admissions: Array<() => void> = []

  constructor(
    readonly concurrency: number,
    readonly waiting: number,
    /** How much of an IPv6 address is one client's (THROTTLE_IPV6_PREFIX). */
    private readonly ipv6Prefix = 64,
  ) {}

  /** Takes a place for a request from `from`, or throws temporarily_unavailable when there is none for it. */
  enter(from = ''): HashSlot {
    const address = addressKey(from, this.ipv6Prefix)
    const now = performance.now()
    const full = this.entries.size >= this.concurrency + this.waiting
    const newcomer = this.share(address, now) < NEWCOMER
    // Every request counts, refused or not: a flooding address never looks new.
    this.used.set(address, { score: this.recentUse(address, now) + 1, at: now })
    // The places kept for newcomers: as many more as run at once, so they bound the extra work.
    if (full && (!newcomer || this.entries.size >= 2 * this.concurrency + this.waiting)) {
      throw temporarilyUnavailable('password hashing queue is full', this.expectedWait())
    }
    const entry: Entry = { address, state: 'held' }
    this.entries.add(entry)
    bump(this.held, address, 1)
    return {
      run: (work) => this.run(entry, work),
      leave: () => this.release(entry),
    }
  }

  /** The address's recent use of the queue, decayed to `now`. */
  private recentUse(address: string, now: number): number {
    const u = this.used.get(address)
    return u === undefined ? 0 : u.score * 2 ** (-(now - u.at) / HALF_LIFE_MS)
  }

  /** The places the address holds plus its recent use: the smaller, the sooner it is served. */
  private share(address: string, now: number): number {
    return (this.held.get(address) ?? 0) + this.recentUse(address, now)
  }

  private async run<T>(entry: Entry, work: () => Promise<T>): Promise<T> {
    if (entry.state !== 'held') throw new Error('hash slot used twice')
    if (this.running < this.concurrency) this.running++
    else {
      // Woken with a finished hash's turn handed over, so nobody can slip in between.
      entry.state = 'waiting'
      await new Promise<void>((resolve) => {
        entry.wake = resolve
        this.waiters.push(entry)
      })
    }
    entry.state = 'running'
    bump(this.runningBy, entry.address, 1)
    const started = performance.now()
    try {
      return await work()
    } finally {
      this.averageMs += SMOOTHING * (performance.now() - started - this.averageMs)
      bump(this.runningBy, entry.address, -1)
      this.release(entry)
      const next = this.nextWaiter()
      if (next !== undefined) next.wake!()
      else this.running--
    }
  }

  /** The waiter whose address has the smallest share, the longest waiting among equals. */
  private nextWaiter(): Entry | undefined {
    const now = performance.now()
    let best = -1
    let bestShare = Infinity
    for (let i = 0; i < this.waiters.length; i++) {
      const n = this.share(this.waiters[i]!.address, now) + (this.runningBy.get(this.waiters[i]!.address) ?? 0)
      if (n < bestShare) {
        best = i
        bestShare = n
      }
    }
    return best < 0 ? undefined : this.waiters.splice(best, 1)[0]
  }

  private release(entry: Entry): void {
    if (entry.state === 'left' || !this.entries.delete(entry)) return
    if (entry.state !== 'running') entry.state = 'left'
    bump(this.held, entry.address, -1)
    this.admissions.shift()?.()
  }

  /**
   * As enter, but when the queue is full waits up to `timeoutMs` for a place instead of refusing
   * at once: for admin calls (an operator's script creating users), which must not fail because
   * logins filled the queue. Logins keep enter's fast 503.
   */
  async enterWaiting(timeoutMs: number, from = ''): Promise<HashSlot> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.entries.size < this.concurrency + this.waiting) return this.enter(from)
      const remaining = deadline - Date.now()
      if (remaining <= 0) throw temporarilyUnavailable('password hashing queue stayed full', this.expectedWait())
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer)
          resolve()
        }
        const timer = setTimeout(() => {
          const i = this.admissions.indexOf(wake)
          if (i !== -1) this.admissions.splice(i, 1)
          resolve()
        }, remaining)
        this.admissions.push(wake)
      })
    }
  }

  /** Seconds until the places taken now are expected to have been hashed (at least 1). */
  private expectedWait(): number {
    return Math.max(1, Math.ceil((Math.ceil(this.entries.size / this.concurrency) * this.averageMs) / 1000))
  }

  /** Hashes in progress and waiting, for metrics. */
  get depth(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.entries.size - this.running }
  }
}

function bump(counts: Map<string, number>, key: string, by: number): void {
  const n = (counts.get(key) ?? 0) + by
  if (n <= 0) counts.delete(key)
  else counts.set(key, n)
}
