import type { Logger } from 'pino'
import type { AuditRecord } from './events.js'

export interface WriterSettings {
  /** How often what is pending is written. */
  flushIntervalMs: number
  /** Pending records that start a write at once rather than at the next interval. */
  flushAt: number
  /** Records per insert statement (9 parameters each; Postgres allows 65535 per statement). */
  maxBatch: number
  /** Writes a record is tried in before it is dropped. */
  maxAttempts: number
  /** Records held at most; beyond that new ones are dropped, so an outage cannot exhaust memory. */
  maxPending: number
}

export const DEFAULT_WRITER_SETTINGS: WriterSettings = {
  flushIntervalMs: 1000,
  flushAt: 100,
  maxBatch: 500,
  maxAttempts: 3,
  maxPending: 10_000,
}

const FULL_WARNING_INTERVAL_MS = 10_000

interface Pending {
  record: AuditRecord
  attempts: number
}

/**
 * Buffers records and writes them in multi-row inserts, off the path of the request that made
 * them: every `flushIntervalMs`, or as soon as `flushAt` are pending. One write runs at a time. A
 * failed write (the database is down) keeps its records for the next interval, up to
 * `maxAttempts` tries each; then they are dropped with a warning and counted, so an outage costs
 * audit records, never requests. The log has each event anyway (src/audit/service.ts).
 */
export class AuditWriter {
  private pending: Pending[] = []
  private running: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private soon = false
  private lastFullWarning = 0

  constructor(
    private readonly insert: (records: AuditRecord[]) => Promise<void>,
    private readonly log: Logger,
    private readonly counters: { written(n: number): void; dropped(n: number): void },
    private readonly settings: WriterSettings = DEFAULT_WRITER_SETTINGS,
  ) {}

  /** Synchronous, and never throws: it only buffers. */
  add(record: AuditRecord): void {
    if (this.pending.length >= this.settings.maxPending) {
      this.counters.dropped(1)
      // Counted each time, told once in a while: a flood of events must not become a flood of lines.
      const now = Date.now()
      if (now - this.lastFullWarning >= FULL_WARNING_INTERVAL_MS) {
        this.lastFullWarning = now
        this.log.warn({ pending: this.pending.length }, 'audit buffer full: new events are dropped until the database takes them')
      }
      return
    }
    this.pending.push({ record, attempts: 0 })
    if (this.pending.length >= this.settings.flushAt && !this.soon && this.running === undefined) {
      // On a later turn of the event loop: building the insert is not the request's work.
      this.soon = true
      setImmediate(() => {
        this.soon = false
        if (this.running === undefined) void this.flush()
      })
    }
  }

  get pendingCount(): number {
    return this.pending.length
  }

  start(): void {
    this.timer ??= setInterval(() => {
      // A write still under way (a slow or unreachable database) is not queued behind.
      if (this.running === undefined) void this.flush()
    }, this.settings.flushIntervalMs)
    this.timer.unref()
  }

  /**
   * Writes everything pending now (one try each); resolves when done, never rejects. A call made
   * during a write waits for it, then writes what is left.
   */
  async flush(): Promise<void> {
    while (this.running !== undefined) await this.running
    this.running = this.drain().finally(() => {
      this.running = undefined
    })
    await this.running
  }

  /** Stops the timer and writes what is pending; what cannot be written now is dropped. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    await this.flush()
    if (this.pending.length > 0) {
      const n = this.pending.length
      this.pending = []
      this.drop(n, 'audit events dropped at shutdown: the database did not take them')
    }
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.settings.maxBatch)
      try {
        await this.insert(batch.map((p) => p.record))
        this.counters.written(batch.length)
      } catch (err) {
        const retry: Pending[] = []
        let lost = 0
        for (const p of batch) {
          p.attempts += 1
          if (p.attempts < this.settings.maxAttempts) retry.push(p)
          else lost += 1
        }
        this.pending.unshift(...retry)
        if (lost > 0) this.drop(lost, 'audit events dropped: the database did not take them', err)
        else this.log.warn({ err: message(err), pending: this.pending.length }, 'audit events not written yet; will retry')
        // The database is likely unreachable: the rest waits for the next interval.
        return
      }
    }
  }

  private drop(n: number, msg: string, err?: unknown): void {
    this.counters.dropped(n)
    this.log.warn({ dropped: n, ...(err !== undefined && { err: message(err) }) }, msg)
  }
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err))
