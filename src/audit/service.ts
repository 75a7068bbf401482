import { createHmac, hkdfSync } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { addSeconds, type Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import type { Metrics } from '../metrics.js'
import { usernameKey } from '../users/repository.js'
import { toRecord, type AuditEvent, type AuditRecord, type AuditRecorder } from './events.js'
import { auditRepository, type AuditFilter, type StoredAuditEvent } from './repository.js'
import { AuditWriter, DEFAULT_WRITER_SETTINGS, type WriterSettings } from './writer.js'

export interface AuditSettings {
  /** Events older than this many days are deleted by housekeeping. */
  retentionDays: number
  /** The key-encryption key: the username hash's key is derived from it. */
  keyEncryptionKey: Buffer
}

/**
 * The security record of this instance: `record()` logs each event at once (one pino line at info,
 * msg "audit", the event in the `audit` field) and buffers it for the database (AuditWriter).
 */
export class AuditService implements AuditRecorder {
  private readonly writer: AuditWriter
  private readonly hashKey: Buffer

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly settings: AuditSettings,
    writerSettings: WriterSettings = DEFAULT_WRITER_SETTINGS,
  ) {
    // A keyed hash, not a plain one: a username field may hold a password, and a plain SHA-256 of
    // a weak password is found by guessing. The key lives apart from the database (like the one it
    // comes from), so a copy of the audit table alone tells no typed string.
    this.hashKey = Buffer.from(hkdfSync('sha256', settings.keyEncryptionKey, Buffer.alloc(0), 'tessera audit username hash', 32))
    this.writer = new AuditWriter(
      (records) => auditRepository.insertMany(this.db, records),
      log,
      { written: (n) => metrics.auditEventsWritten.inc(n), dropped: (n) => metrics.auditEventsDropped.inc(n) },
      writerSettings,
    )
  }

  /** Logs the event and buffers it; never waits and never throws (see src/audit/events.ts). */
  record(event: AuditEvent): void {
    try {
      // Counted here, where every call site already reports its events with their reasons.
      this.metrics.securityEvent(event)
      const record = toRecord(event, this.clock.now(), (typed) => this.hashUsername(typed))
      this.log.info({ audit: auditView(record) }, 'audit')
      this.writer.add(record)
    } catch (err) {
      this.metrics.auditEventsDropped.inc()
      this.log.warn({ err: err instanceof Error ? err.message : String(err), type: event.type }, 'audit event could not be recorded')
    }
  }

  /**
   * The keyed hash a username is recorded as: the same for every spelling that logs in as the same
   * user (Unicode NFC, any case), so the events of one typed name can be found without storing it.
   */
  hashUsername(typed: string): string {
    return createHmac('sha256', this.hashKey).update(usernameKey(typed)).digest('base64url').slice(0, 22)
  }

  list(filter: AuditFilter): Promise<StoredAuditEvent[]> {
    return auditRepository.list(this.db, filter)
  }

  /** Events recorded and not yet written. */
  get pending(): number {
    return this.writer.pendingCount
  }

  /** Writes what is pending now. */
  flush(): Promise<void> {
    return this.writer.flush()
  }

  /** Deletes the events older than the retention; how many there were. */
  purge(): Promise<number> {
    return auditRepository.purge(this.db, addSeconds(this.clock.now(), -this.settings.retentionDays * 86_400))
  }

  start(): void {
    this.writer.start()
  }

  /** Writes what is pending; call it before the database closes. */
  stop(): Promise<void> {
    return this.writer.stop()
  }
}

/** An event as the admin API shows it and the log carries it. */
export function auditView(e: AuditRecord & { id?: string }) {
  return {
    ...(e.id !== undefined && { id: e.id }),
    type: e.type,
    at: e.at.toISOString(),
    address: e.address,
    client_id: e.client_id,
    admin_client_id: e.admin_client_id,
    user_id: e.user_id,
    username: e.username,
    username_hash: e.username_hash,
    details: e.details,
  }
}
