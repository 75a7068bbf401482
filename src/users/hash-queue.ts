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

  /** Hashes in progress and waiting, for metrics. */
  get depth(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.entered - this.running }
  }
}
