import { sql, type Kysely, type Transaction } from 'kysely'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { changeRepository, type Change, type ChangeWriter } from '../view/changes.js'

/** One revocation at /revoke: an access token's jti until it expires, or a grant. */
export type Revocation = { kind: 'access_token'; jti: string; until: Date } | { kind: 'grant'; grantId: string }

interface Pending {
  item: Revocation
  resolve: (took: boolean) => void
  reject: (err: unknown) => void
}

/**
 * Group commit for revocations. Every change holds the one `change_head` row lock until its commit
 * and then waits for every instance to acknowledge it, so one revocation per transaction makes the
 * cluster revoke one commit at a time. Here the revocations that arrive while a batch's transaction
 * is in flight queue, and then go together: one statement per kind, one update of the head, one
 * commit, one wait for the instances. The first caller after a quiet spell goes alone, at once;
 * throughput grows with concurrency. The wait for one batch overlaps the next one's transaction.
 *
 * Each caller resolves only once every instance has applied the batch's changes (or its lease ran
 * out), whether its own revocation took effect or had been done already: the head the batch
 * waits for is read after its statements, which waited for the earlier revocation's row and so
 * for its commit (the fence of a repeated revocation, src/view/feed.ts).
 *
 * Rows are locked in order of their key (all jtis, then all grants), so two batches never wait for
 * each other in a cycle. If a batch fails for any reason (a deadlock with another kind of write,
 * a bad value), each of its revocations is tried again in a transaction of its own, so one bad
 * item fails only its own caller.
 */
export class RevocationBatcher {
  private queue: Pending[] = []
  private running = false

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly changes: Pick<ChangeWriter, 'awaitApplied'>,
  ) {}

  /** True if this revoked it, false if it had been revoked already (or the grant is gone). */
  revoke(item: Revocation): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject })
      if (!this.running) void this.drain()
    })
  }

  private async drain(): Promise<void> {
    this.running = true
    try {
      while (this.queue.length > 0) {
        const batch = this.queue
        this.queue = []
        await this.commit(batch)
      }
    } finally {
      this.running = false
    }
  }

  /** Commits the batch; resolves once it has committed (or failed), not once it is acknowledged. */
  private async commit(batch: Pending[]): Promise<void> {
    let outcome: { took: boolean[]; head: number }
    try {
      outcome = await this.db.transaction().execute((trx) => this.revokeIn(trx, batch.map((p) => p.item)))
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(err)
        return
      }
      for (const p of batch) void this.alone(p)
      return
    }
    void this.changes.awaitApplied(outcome.head).then(() => batch.forEach((p, i) => p.resolve(outcome.took[i]!)))
  }

  private async alone(p: Pending): Promise<void> {
    try {
      const { took, head } = await this.db.transaction().execute((trx) => this.revokeIn(trx, [p.item]))
      await this.changes.awaitApplied(head)
      p.resolve(took[0]!)
    } catch (err) {
      p.reject(err)
    }
  }

  /** The revocations in `trx`: whether each took effect, and the head to wait for. */
  private async revokeIn(trx: Transaction<Database>, items: Revocation[]): Promise<{ took: boolean[]; head: number }> {
    const now = this.clock.now()
    const denials = new Map<string, number>()
    const grants = new Set<string>()
    for (const item of items) {
      if (item.kind === 'access_token') denials.set(item.jti, item.until.getTime())
      else grants.add(item.grantId)
    }
    const changes: Change[] = []
    const denied = new Set<string>()
    if (denials.size > 0) {
      const jtis = [...denials.keys()].sort()
      const r = await sql<{ jti: string; until: Date }>`
        insert into revoked_access_tokens (jti, expires_at)
        select jti, to_timestamp(until_ms / 1000.0) from unnest(${jtis}::text[], ${jtis.map((j) => denials.get(j)!)}::float8[]) as t(jti, until_ms)
        order by jti
        on conflict (jti) do nothing
        returning jti, expires_at as until`.execute(trx)
      for (const row of r.rows) {
        denied.add(row.jti)
        changes.push({ kind: 'access_token', subject: row.jti, until: row.until })
      }
    }
    const revoked = new Set<string>()
    if (grants.size > 0) {
      const ids = [...grants].sort()
      const r = await sql<{ id: string; until: Date }>`
        with target as (
          select id from grants where id = any(${ids}::uuid[]) and revoked_at is null order by id for update
        )
        update grants g set revoked_at = ${now} from target
        where g.id = target.id and g.revoked_at is null
        returning g.id::text as id, g.expires_at as until`.execute(trx)
      for (const row of r.rows) {
        revoked.add(row.id)
        changes.push({ kind: 'grant', subject: row.id, until: row.until })
      }
    }
    const head = await changeRepository.recordMany(trx, changes)
    // Of two callers naming one token in a batch, the first is told it revoked it.
    const took = items.map((item) => {
      const done = item.kind === 'access_token' ? denied.delete(item.jti) : revoked.delete(item.grantId)
      return done
    })
    return { took, head }
  }
}
