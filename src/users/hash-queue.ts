import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import { temporarilyUnavailable } from '../errors.js'
import { addressKey } from '../throttle/address.js'

/** A place in the queue: run the hash with it, or leave. */
export interface HashSlot {
  run<T>(work: () => Promise<T>): Promise<T>
  leave(): void
  /** Whether the place was given to another address before the hash ran (run then throws 503). */
  readonly dropped: boolean
}

interface Entry {
  readonly address: string
  readonly seq: number
  state: 'held' | 'waiting' | 'running' | 'left'
  dropped: boolean
  wake?: () => void
  refuse?: (err: Error) => void
}

// How fast an address's past use of the queue is forgotten: halved every this many ms.
const HALF_LIFE_MS = 10_000
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
 * - when every place is taken, a request whose address's share is smaller than another's takes the
 *   newest not-yet-running place of the address with the largest. An address with nothing queued
 *   and no recent use therefore gets in while any flooding address's request is still waiting;
 *   the one it displaced is answered 503, and its attempt is given back
 *   (src/oauth/grants/password.ts).
 * Retry-After on a 503 is the time the queue ahead is expected to take, from the hashes' measured
 * duration, rounded up to whole seconds.
 */
export class HashQueue {
  private running = 0
  private seq = 0
  private readonly entries = new Set<Entry>()
  private readonly held = new Map<string, number>()
  private readonly runningBy = new Map<string, number>()
  private readonly waiters: Entry[] = []
  private averageMs = FIRST_GUESS_MS
  private readonly used = new LRUCache<string, { score: number; at: number }>({ max: REMEMBERED })

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
    if (this.entries.size >= this.concurrency + this.waiting) {
      const victim = this.displaceable(this.share(address, now), now)
      if (victim === undefined) throw temporarilyUnavailable('password hashing queue is full', this.expectedWait())
      this.drop(victim)
    }
    const entry: Entry = { address, seq: this.seq++, state: 'held', dropped: false }
    this.entries.add(entry)
    bump(this.held, address, 1)
    this.used.set(address, { score: this.recentUse(address, now) + 1, at: now })
    return {
      run: (work) => this.run(entry, work),
      leave: () => this.release(entry),
      get dropped() {
        return entry.dropped
      },
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

  /** The newest place not yet running, of the address with the largest share (larger than `mine`). */
  private displaceable(mine: number, now: number): Entry | undefined {
    let best: Entry | undefined
    let bestShare = mine
    for (const e of this.entries) {
      if (e.state === 'running') continue
      const n = this.share(e.address, now)
      if (n > bestShare || (n === bestShare && best !== undefined && e.seq > best.seq)) {
        best = e
        bestShare = n
      }
    }
    return best
  }

  private drop(entry: Entry): void {
    entry.dropped = true
    const waiting = this.waiters.indexOf(entry)
    if (waiting >= 0) this.waiters.splice(waiting, 1)
    this.release(entry)
    entry.refuse?.(temporarilyUnavailable('password hashing turn given to another address', this.expectedWait()))
  }

  private async run<T>(entry: Entry, work: () => Promise<T>): Promise<T> {
    if (entry.dropped) throw temporarilyUnavailable('password hashing turn given to another address', this.expectedWait())
    if (entry.state !== 'held') throw new Error('hash slot used twice')
    if (this.running < this.concurrency) this.running++
    else {
      // Woken with a finished hash's turn handed over, so nobody can slip in between.
      entry.state = 'waiting'
      await new Promise<void>((resolve, reject) => {
        entry.wake = resolve
        entry.refuse = reject
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
