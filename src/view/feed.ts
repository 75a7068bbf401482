import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql, type Kysely, type Transaction } from 'kysely'
import type { Logger } from 'pino'
import { clientRepository } from '../clients/repository.js'
import type { Clock } from '../clock.js'
import type { DatabaseHandle, FeedConnection } from '../db/connect.js'
import type { Database, Executor } from '../db/schema.js'
import { tokenRepository } from '../tokens/repository.js'
import { userRepository } from '../users/repository.js'
import { changeRepository, parseNotification, type Change, type ChangeWriter, type SequencedChange } from './changes.js'
import type { MemoryView } from './view.js'
import { noTracing, type Tracing } from '../tracing.js'

export interface FeedSettings {
  /** false: never take a lease, so that every request reads the database. */
  serveFromMemory: boolean
}

/**
 * How long a lease lasts. One value for every instance: a writer that cannot reach the database
 * after its commit waits this long for leases it cannot see, so no instance may lease for longer.
 */
export const LEASE_MS = 1500

/** What the feed needs from the key manager. */
export interface KeyReloader {
  reload(): Promise<void>
}

export type FeedState = 'leased' | 'behind' | 'disconnected' | 'off' | 'stopped'

// A lease is renewed this many times per lease length, so that one slow renewal does not lose it.
const RENEWALS_PER_LEASE = 6
// The local deadline is kept this much short of the database's, for the two clocks' rates.
const CLOCK_MARGIN_MS = 50
const RECONNECT_MIN_MS = 100
const RECONNECT_MAX_MS = 2000
const REAP_INTERVAL_MS = LEASE_MS / 3

/**
 * The change feed of one instance: it keeps the MemoryView exact and holds the lease that says
 * so, and it makes writers wait until every instance has applied their change.
 *
 * Like a Kubernetes informer, it lists the whole state once (on every connect), then applies the
 * changes after the sequence number the list was taken at, in order, from notifications; a gap
 * is filled from the changes table, and when that has been purged the whole state is listed
 * again. All of that runs one task at a time, so the view has one writer.
 *
 * The lease (the `instances` table) is renewed on the notification connection itself, so it is
 * held only while that connection works, and the database extends it only while this instance
 * has applied every change (acked_seq = change_head.seq, in one statement). A writer that
 * committed change n waits until every unexpired lease has acked n or run out; since a lagging
 * instance cannot extend its lease, that wait is bounded by the lease length. The instance itself
 * trusts its view only until its local deadline (the time it sent the renewal, plus the lease),
 * which is never later than the database's.
 */
export class ChangeFeed implements ChangeWriter {
  readonly instanceId = randomUUID()
  private connection: FeedConnection | undefined
  private applied = 0
  private tasks: Promise<void> = Promise.resolve()
  private renewTimer: NodeJS.Timeout | undefined
  private renewing: Promise<void> | undefined
  private renewAgain = false
  private acknowledging: Promise<void> | undefined
  private acknowledgeAgain = false
  private stopped = false
  private connecting: Promise<void> | undefined
  private lastHead = 0
  /** The one pending reconnect; at most one, whatever failed and however often. */
  private reconnectTimer: NodeJS.Timeout | undefined
  /** The next reconnect's delay: doubles per attempt, back to the minimum once a renewal succeeds. */
  private backoff = RECONNECT_MIN_MS
  private reapTimer: NodeJS.Timeout | undefined
  private reaping: Promise<void> | undefined
  /** Other instances' rows: the row version last seen, and when (performance.now()) it was first seen. */
  private readonly watched = new Map<string, { version: string; since: number }>()
  /** Writers waiting for acknowledgements (awaitApplied), and the one poll that answers them. */
  private waiters: { seq: number; deadline: number; resolve: () => void }[] = []
  private waiting: Promise<void> | undefined

  constructor(
    private readonly database: Pick<DatabaseHandle, 'openFeedConnection'>,
    private readonly db: Kysely<Database>,
    private readonly view: MemoryView,
    private readonly keys: KeyReloader,
    private readonly clock: Clock,
    private readonly settings: FeedSettings,
    private readonly log: Logger,
    private readonly tracing: Pick<Tracing, 'span'> = noTracing,
  ) {}

  /**
   * Connects in the background: until the first connection has loaded the view, this instance
   * simply reads the database per call. Resolves once the first attempt has succeeded or failed.
   */
  async start(): Promise<void> {
    // Every instance reaps, leased or not: writers wait for every row until one is reaped.
    this.reapTimer = setInterval(() => {
      this.reaping ??= this.reap()
        .catch((err: unknown) => this.log.debug({ err: message(err) }, 'could not look for dead instances'))
        .finally(() => (this.reaping = undefined))
    }, REAP_INTERVAL_MS)
    this.reapTimer.unref()
    if (!this.settings.serveFromMemory) return
    await this.connect()
    if (this.connection === undefined) this.scheduleReconnect()
  }

  /** Gives up the lease and closes the connection. */
  async stop(): Promise<void> {
    this.stopped = true
    this.view.holdLeaseUntil(0)
    if (this.renewTimer !== undefined) clearInterval(this.renewTimer)
    if (this.reapTimer !== undefined) clearInterval(this.reapTimer)
    await this.reaping
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = undefined
    await this.connecting?.catch(() => undefined)
    await this.renewing?.catch(() => undefined)
    const connection = this.connection
    this.connection = undefined
    // Deleting the row ends the lease at once for writers, who would otherwise wait it out.
    await this.db
      .deleteFrom('instances')
      .where('id', '=', this.instanceId)
      .execute()
      .catch((err: unknown) => this.log.warn({ err: message(err) }, 'could not give up the lease'))
    await connection?.close()
  }

  get state(): FeedState {
    if (this.stopped) return 'stopped'
    if (!this.settings.serveFromMemory) return 'off'
    if (this.connection === undefined) return 'disconnected'
    return this.view.isFresh() ? 'leased' : 'behind'
  }

  /** The sequence number of the last change applied here. */
  get appliedSeq(): number {
    return this.applied
  }

  /** How many changes this instance knows of but has not applied yet. */
  get lag(): number {
    return Math.max(0, this.lastHead - this.applied)
  }

  /**
   * Runs `work` in a transaction, records the changes it reports last in it, and resolves once
   * the transaction has committed and every instance has applied them (or its lease has run out).
   */
  async write<T>(work: (trx: Transaction<Database>, change: (c: Change) => void) => Promise<T>): Promise<T> {
    const changes: Change[] = []
    let last = 0
    const result = await this.db.transaction().execute(async (trx) => {
      const r = await work(trx, (c) => changes.push(c))
      for (const c of changes) last = await changeRepository.record(trx, c)
      return r
    })
    if (last > 0) await this.awaitApplied(last)
    return result
  }

  /**
   * Resolves once every change committed so far has reached every instance (or its lease has run
   * out). For a revocation that found its work done already (a retry, two parties logging out
   * one token): the change that did it may not have reached every instance yet, and the head
   * read after this caller's own commit includes it.
   */
  async fence(): Promise<void> {
    const head = await changeRepository.head(this.db)
    await this.awaitApplied(head)
  }

  /**
   * Resolves once every registered instance has applied change `seq`, or one lease length has
   * passed. Called right after the change committed: a lease that does not acknowledge it cannot
   * be extended, so after one lease length (on this instance's monotonic clock, which needs no
   * database) every lease that could have been held at the commit has ended.
   *
   * Which rows may still hold a lease is not judged by the database's clock (`lease_expires_at`):
   * a forward step of it would make live leases look expired. A row counts until an instance that
   * watched it go unrenewed for a lease length, by its own monotonic clock, has deleted it (reap).
   */
  awaitApplied(seq: number): Promise<void> {
    // A span of the caller's (a revocation's request), whichever path waits: write, fence or a batch.
    return this.tracing.span('change_feed.await_applied', { 'tessera.change.seq': seq }, () => this.acknowledgedBy(seq))
  }

  private acknowledgedBy(seq: number): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push({ seq, deadline: performance.now() + LEASE_MS + CLOCK_MARGIN_MS, resolve })
      this.waiting ??= this.watchAcknowledgements().finally(() => (this.waiting = undefined))
    })
  }

  /**
   * One poll for all the writers waiting, however many: the lowest acknowledgement answers each.
   * Instances acknowledge as soon as they have applied a change (notified, then renew), so the
   * poll is fast, 1 ms doubling to 4 ms, and only while someone waits.
   */
  private async watchAcknowledgements(): Promise<void> {
    let pause = 1
    while (this.waiters.length > 0) {
      // Only a read that began after a writer's commit may answer it (as the renewal argument
      // in docs/freshness.md needs): writers that came in during the read wait for the next.
      const asked = new Set(this.waiters)
      let lowest: number | undefined
      try {
        const r = await sql<{ lowest: number | null; rows: number }>`
          select min(acked_seq)::float8 as lowest, count(*)::int as rows from instances`.execute(this.db)
        lowest = r.rows[0]!.rows === 0 ? Infinity : r.rows[0]!.lowest!
      } catch (err) {
        // The changes are committed; without the database each wait is simply the full bound.
        this.log.debug({ err: message(err) }, 'waiting for acknowledgements without the database')
      }
      const now = performance.now()
      const still: typeof this.waiters = []
      let progress = false
      for (const w of this.waiters) {
        if ((lowest !== undefined && asked.has(w) && w.seq <= lowest) || w.deadline <= now) {
          progress = true
          w.resolve()
        } else still.push(w)
      }
      this.waiters = still
      if (still.length === 0) return
      pause = progress ? 1 : Math.min(pause * 2, 4)
      const left = Math.min(...still.map((w) => w.deadline)) - performance.now()
      await sleep(Math.max(0, Math.min(pause, left)))
    }
  }

  /**
   * Deletes the rows of instances that have not renewed for a lease length as this instance's
   * monotonic clock measures it: their leases have ended (a lease runs a lease length from the
   * renewal that extended it, on the lessee's own monotonic clock, and every renewal writes a new
   * row version). No database clock is involved, so none can step a live lease out of the
   * writers' sight. A delete that races a renewal finds a new version and deletes nothing; a
   * renewal after it registers the instance again, leased only if it has applied the head.
   */
  private async reap(): Promise<void> {
    const rows = await sql<{ id: string; version: string }>`
      select id::text as id, xmin::text as version from instances where id <> ${this.instanceId}::uuid`.execute(this.db)
    // Taken after the read: no later than the first moment the version was seen.
    const now = performance.now()
    const present = new Set<string>()
    for (const { id, version } of rows.rows) {
      present.add(id)
      const seen = this.watched.get(id)
      if (seen === undefined || seen.version !== version) {
        this.watched.set(id, { version, since: now })
      } else if (now - seen.since > LEASE_MS + CLOCK_MARGIN_MS) {
        await sql`delete from instances where id = ${id}::uuid and xmin::text = ${version}`.execute(this.db)
        this.watched.delete(id)
        this.log.info({ instance: id }, 'removed an instance that stopped renewing its lease')
      }
    }
    for (const id of this.watched.keys()) if (!present.has(id)) this.watched.delete(id)
  }

  // --- connection ---

  private connect(): Promise<void> {
    this.connecting ??= this.openAndLoad().finally(() => {
      this.connecting = undefined
    })
    return this.connecting
  }

  private async openAndLoad(): Promise<void> {
    // One feed session per instance, ever: a second would leak, and hold a LISTEN nobody reads.
    if (this.stopped || this.connection !== undefined) return
    let connection: FeedConnection | undefined
    try {
      connection = await this.database.openFeedConnection()
      const opened = connection
      opened.onLost((err) => this.lost(opened, err))
      const channel = await changeRepository.channel(opened.db)
      await opened.listen(channel, (payload) => this.notified(payload))
      // Listening before the list is read, so that nothing committed after it goes unseen.
      await this.enqueue(() => this.reload(opened.db))
      if (this.stopped) {
        await opened.close()
        return
      }
      this.connection = opened
      this.log.info({ instance: this.instanceId, seq: this.applied }, 'change feed connected')
      this.renewTimer ??= setInterval(() => this.renew(), Math.floor(LEASE_MS / RENEWALS_PER_LEASE))
      this.renewTimer.unref()
      this.renew()
      await this.renewing
    } catch (err) {
      this.log.warn({ err: message(err) }, 'change feed could not connect; reading the database per call')
      await connection?.close()
    }
  }

  private lost(connection: FeedConnection, err: Error): void {
    this.view.holdLeaseUntil(0)
    if (this.connection !== connection) return
    this.connection = undefined
    this.log.warn({ err: err.message }, 'change feed connection lost; reading the database per call until it is back')
    void connection.close()
    this.scheduleReconnect()
  }

  /**
   * Tries to connect again after the current backoff, with jitter (instances that lost the same
   * database do not come back in step). Every failure path calls this; while an attempt is
   * pending or under way it does nothing, so failures never multiply the attempts. The backoff
   * is reset by a successful renewal, not by a successful connect: a database that accepts the
   * session but refuses the renewal (read-only after a failover, a full disk) is a failure too.
   */
  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== undefined) return
    const delay = this.backoff * (0.5 + Math.random() / 2)
    this.backoff = Math.min(this.backoff * 2, RECONNECT_MAX_MS)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      void this.connect().then(() => {
        if (this.connection === undefined) this.scheduleReconnect()
      })
    }, delay)
    this.reconnectTimer.unref()
  }

  // --- applying changes, one task at a time ---

  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.tasks.then(task)
    this.tasks = run.catch(() => undefined)
    return run
  }

  private notified(payload: string): void {
    let change: SequencedChange | undefined
    try {
      change = parseNotification(payload)
    } catch {
      change = undefined
    }
    // Something this version cannot read: the whole state, read again, covers it.
    if (change === undefined) {
      void this.enqueue(() => this.reloadOnCurrent())
      return
    }
    this.lastHead = Math.max(this.lastHead, change.seq)
    const c = change
    void this.enqueue(() => this.applyInOrder(c)).then(
      () => this.acknowledge(),
      (err: unknown) => this.failed(err),
    )
  }

  private async applyInOrder(change: SequencedChange): Promise<void> {
    const connection = this.connection
    if (connection === undefined || change.seq <= this.applied) return
    if (change.seq > this.applied + 1) await this.catchUp(connection.db, change.seq - 1)
    if (change.seq === this.applied + 1) {
      await this.apply(connection.db, change)
      this.applied = change.seq
    }
  }

  /** Applies the changes up to `head` from the table; lists everything again if some are gone. */
  private async catchUp(db: Executor, head: number): Promise<void> {
    if (head <= this.applied) return
    const missed = await changeRepository.since(db, this.applied, head)
    if (missed === undefined) {
      await this.reload(db)
      return
    }
    for (const change of missed) {
      await this.apply(db, change)
      this.applied = change.seq
    }
  }

  private async apply(db: Executor, change: SequencedChange): Promise<void> {
    switch (change.kind) {
      case 'access_token':
        this.view.denyJti(change.subject, change.until.getTime())
        return
      case 'grant':
        this.view.revokeGrant(change.subject, change.until.getTime())
        return
      case 'client': {
        // A revoke-tokens revoked the client's grants in the same transaction: the tokens of a
        // grant are judged by their grant alone, so the view must learn of each, as for a user.
        const [client, grants] = await Promise.all([
          clientRepository.find(db, change.subject),
          tokenRepository.revokedGrantsOfClient(db, change.subject, this.clock.now()),
        ])
        for (const g of grants) this.view.revokeGrant(g.id, g.until.getTime())
        this.view.setClient(change.subject, client)
        return
      }
      case 'user': {
        const [user, grants] = await Promise.all([
          userRepository.find(db, change.subject),
          tokenRepository.revokedGrantsOfUser(db, change.subject, this.clock.now()),
        ])
        for (const g of grants) this.view.revokeGrant(g.id, g.until.getTime())
        this.view.setUser(change.subject, user && { username: user.username, disabled: user.disabled })
        return
      }
      case 'keys':
        await this.keys.reload()
        return
    }
  }

  /** Lists the whole state again. The head is read first: whatever commits after it is notified. */
  private async reload(db: Executor): Promise<void> {
    const head = await changeRepository.head(db)
    const now = this.clock.now()
    const [clients, deniedJtis, revokedGrants] = await Promise.all([
      clientRepository.findMany(db, this.view.cachedClientIds()),
      tokenRepository.deniedJtis(db, now, this.view.revocationRows),
      tokenRepository.revokedGrants(db, now, this.view.revocationRows),
      this.keys.reload(),
    ])
    this.view.replace({
      clients,
      deniedJtis: deniedJtis.map((d) => ({ id: d.jti, untilMs: d.until.getTime() })),
      revokedGrants: revokedGrants.map((g) => ({ id: g.id, untilMs: g.until.getTime() })),
    })
    this.applied = head
    this.lastHead = Math.max(this.lastHead, head)
  }

  private async reloadOnCurrent(): Promise<void> {
    const connection = this.connection
    if (connection !== undefined) await this.reload(connection.db)
  }

  /** A task failed: most likely the connection did. Start over with a fresh one. */
  private failed(err: unknown): void {
    this.view.holdLeaseUntil(0)
    const connection = this.connection
    this.log.warn({ err: message(err) }, 'change feed failed to apply a change; reconnecting')
    if (connection !== undefined) this.lost(connection, err instanceof Error ? err : new Error(String(err)))
  }

  // --- the lease ---

  /**
   * Tells writers what this instance has applied, at once; calls made meanwhile coalesce. Unlike a
   * renewal it extends no lease, so it needs no lock on the head and does not queue behind
   * writers: `acked_seq` only ever says what is true of this instance's memory. Committed without
   * waiting for the WAL flush, for the same reason as the renewal.
   */
  private acknowledge(): void {
    if (this.acknowledging !== undefined) {
      this.acknowledgeAgain = true
      return
    }
    if (this.connection === undefined || this.stopped) return
    const applied = this.applied
    this.acknowledging = sql`
      with quick as (select set_config('synchronous_commit', 'off', true))
      update instances set acked_seq = greatest(acked_seq, ${applied})
      from quick where id = ${this.instanceId}::uuid`
      .execute(this.db)
      .then(
        () => undefined,
        // The next renewal acknowledges it as well.
        (err: unknown) => this.log.debug({ err: message(err) }, 'could not acknowledge'),
      )
      .finally(() => {
        this.acknowledging = undefined
        if (this.acknowledgeAgain) {
          this.acknowledgeAgain = false
          this.acknowledge()
        }
      })
  }

  /** Renews the lease and acknowledges what has been applied; calls made meanwhile coalesce. */
  private renew(): void {
    if (this.renewing !== undefined) {
      this.renewAgain = true
      return
    }
    const connection = this.connection
    if (connection === undefined || this.stopped) return
    this.renewing = this.renewOnce(connection)
      .catch((err: unknown) => {
        this.view.holdLeaseUntil(0)
        if (this.connection === connection) this.lost(connection, err instanceof Error ? err : new Error(String(err)))
      })
      .finally(() => {
        this.renewing = undefined
        if (this.renewAgain) {
          this.renewAgain = false
          this.renew()
        }
      })
  }

  private async renewOnce(connection: FeedConnection): Promise<void> {
    const applied = this.applied
    const sent = performance.now()
    const sentWall = Date.now()
    const leaseSeconds = LEASE_MS / 1000
    // The lease is extended only if nothing committed is unapplied. The head is read under a share
    // lock, which a writer's update of it waits for: either this renewal commits first, and the
    // writer's count (taken after its commit) sees the lease, or the writer commits first and
    // this reads its sequence number, not the one of a snapshot taken before the commit.
    //
    // Committed without waiting for the WAL flush: the share lock is held until the commit, and
    // writers queue behind it, so a flush here would be paid by every writer. Nothing is lost by
    // it: what the row says (this instance applied `applied`) is true of its memory, and a crash
    // that loses the row also ends this session, and with it the lease (lost()).
    const r = await sql<{ head: number }>`
      with h as (select seq from change_head for share),
      quick as (select set_config('synchronous_commit', 'off', true))
      insert into instances as i (id, host, pid, lease_expires_at, acked_seq)
      select ${this.instanceId}::uuid, ${hostname()}, ${process.pid},
        case when ${applied} >= h.seq then now() + make_interval(secs => ${leaseSeconds}) else now() end,
        ${applied}
      from h, quick
      on conflict (id) do update set
        acked_seq = greatest(i.acked_seq, excluded.acked_seq),
        renewed_at = now(),
        lease_expires_at = greatest(i.lease_expires_at, excluded.lease_expires_at)
      returning (select seq::float8 from h) as head`.execute(connection.db)
    const head = r.rows[0]!.head
    const heard = this.lastHead
    this.lastHead = Math.max(this.lastHead, head)
    this.backoff = RECONNECT_MIN_MS
    if (this.connection !== connection || this.stopped) return
    if (applied >= head) {
      this.view.holdLeaseUntil(sent + LEASE_MS - CLOCK_MARGIN_MS, sentWall + LEASE_MS - CLOCK_MARGIN_MS)
      return
    }
    if (this.applied < head) {
      // A change committed that this instance never heard of (its notification is late or lost):
      // its writer waits for this lease by the writer's clock, not this one's, so the view is
      // not trusted until it has caught up. One it has heard of is being applied already.
      if (heard < head) this.view.holdLeaseUntil(0)
      // A notification may be on its way; if it was lost, this fills the gap.
      void this.enqueue(() => this.catchUp(connection.db, head)).then(
        () => this.renew(),
        (err: unknown) => this.failed(err),
      )
    }
  }
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err))
