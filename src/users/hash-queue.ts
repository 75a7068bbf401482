import { temporarilyUnavailable } from '../errors.js'

/** A place in the queue: run the hash with it, or leave. */
export interface HashSlot {
  run<T>(work: () => Promise<T>): Promise<T>
  leave(): void
}

/**
 * A bounded queue in front of argon2. At most `concurrency` hashes run at once, kept below the
 * number of cores so that one is always left for the event loop (which signs tokens and answers
 * introspection) and the database; at most `waiting` more wait their turn. Past that a request is
 * refused at once (503 temporarily_unavailable), instead of every request in the process waiting
 * behind a flood of password logins.
 */
export class HashQueue {
  private running = 0
  private readonly waiters: Array<() => void> = []
  private entered = 0
  /** Admin calls waiting for a place (enterWaiting), woken one at a time as places free up. */
  private readonly admissions: Array<() => void> = []

  constructor(
    readonly concurrency: number,
    readonly waiting: number,
  ) {}

  /** Takes a place, or throws temporarily_unavailable when there is none. */
  enter(): HashSlot {
    if (this.entered >= this.concurrency + this.waiting) throw temporarilyUnavailable('password hashing queue is full')
    this.entered++
    let done = false
    const release = () => {
      if (done) return
      done = true
      this.entered--
      this.admissions.shift()?.()
    }
    return {
      run: async <T>(work: () => Promise<T>): Promise<T> => {
        if (done) throw new Error('hash slot used twice')
        if (this.running < this.concurrency) this.running++
        // Woken with the finished hash's turn handed over, so nobody can slip in between.
        else await new Promise<void>((resolve) => this.waiters.push(resolve))
        try {
          return await work()
        } finally {
          const next = this.waiters.shift()
          if (next !== undefined) next()
          else this.running--
          release()
        }
      },
      leave: release,
    }
  }

  /**
   * As enter, but when the queue is full waits up to `timeoutMs` for a place instead of refusing
   * at once: for admin calls (an operator's script creating users), which must not fail because
   * logins filled the queue. Logins keep enter's fast 503.
   */
  async enterWaiting(timeoutMs: number): Promise<HashSlot> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.entered < this.concurrency + this.waiting) return this.enter()
      const remaining = deadline - Date.now()
      if (remaining <= 0) throw temporarilyUnavailable('password hashing queue stayed full')
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

  /** Hashes in progress and waiting, for metrics. */
  get depth(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.entered - this.running }
  }
}
