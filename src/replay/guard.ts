import type { Kysely } from 'kysely'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.js'
import type { Database, Executor } from '../db/schema.js'

/** What a jti is the identifier of: a DPoP proof (RFC 9449 §11.1), or a client assertion (RFC 7523 §3). */
export type ReplayKind = 'dpop' | 'client_assertion'

// Uses remembered per instance, so that a replay to the same instance is refused without a round
// trip; bounded, since each is a client's choice. An entry evicted early only costs that trip.
const LOCAL_ENTRIES = 50_000
// The most uses one statement records; a batch that fills up is sent at once.
const MAX_BATCH = 200

interface Pending {
  kind: ReplayKind
  jti: string
  expiresAt: Date
  key: string
  resolve(first: boolean): void
  reject(err: unknown): void
}

/**
 * The jtis of proofs and assertions seen so far, shared by every instance through the database
 * (`replay_guard`), each kept while what it identifies could still be accepted.
 *
 * A use is recorded by one `insert … on conflict … returning`: of two instances racing on one jti,
 * the primary key lets exactly one insert it, and only that one is told "first use". To keep this
 * to one round trip however many requests arrive at once, uses are gathered for the rest of the
 * current turn of the event loop (every request whose bytes arrived together) and written in one
 * multi-row statement (a group commit); each caller then learns its own answer. In front of it, a
 * bounded local memory of the uses this instance has seen answers a replay here at once.
 *
 * With the database out of reach the write fails, and so does the request (503): a proof that
 * cannot be recorded is not accepted, since another instance could accept it too.
 */
export class ReplayGuard {
  private readonly seen = new LRUCache<string, number>({ max: LOCAL_ENTRIES })
  private pending: Pending[] = []
  private scheduled = false

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  /**
   * True for the first use of this jti of this kind, anywhere, which is then remembered until
   * `expiresAt`; false for every other one. Rejects (a database error) when it cannot be known.
   */
  firstUse(kind: ReplayKind, jti: string, expiresAt: Date): Promise<boolean> {
    const key = `${kind} ${jti}`
    const known = this.seen.get(key)
    if (known !== undefined && known > this.clock.now().getTime()) return Promise.resolve(false)
    this.seen.set(key, expiresAt.getTime())
    return new Promise((resolve, reject) => {
      this.pending.push({ kind, jti, expiresAt, key, resolve, reject })
      if (this.pending.length >= MAX_BATCH) this.flush()
      else if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => this.flush())
      }
    })
  }

  private flush(): void {
    this.scheduled = false
    const batch = this.pending
    this.pending = []
    if (batch.length === 0) return
    // One row per key: a statement may not update the same row twice.
    const unique = new Map<string, Pending>()
    for (const p of batch) {
      if (unique.has(p.key)) p.resolve(false)
      else unique.set(p.key, p)
    }
    const uses = [...unique.values()]
    replayRepository.record(this.db, uses, this.clock.now()).then(
      (recorded) => {
        for (const p of uses) p.resolve(recorded.has(p.key))
      },
      (err: unknown) => {
        for (const p of uses) {
          // Not recorded: a retry must reach the database again, not be refused from memory.
          if (this.seen.get(p.key) === p.expiresAt.getTime()) this.seen.delete(p.key)
          p.reject(err)
        }
      },
    )
  }

  /** Forgets uses that no longer matter (housekeeping). */
  purge(now: Date): Promise<void> {
    return replayRepository.purge(this.db, now)
  }
}

export const replayRepository = {
  /**
   * Records the uses not recorded before (or recorded with an expiry that has passed: such a row
   * is as good as gone), and returns their keys (`kind jti`). Uses must be distinct.
   */
  async record(db: Executor, uses: { kind: ReplayKind; jti: string; expiresAt: Date }[], now: Date): Promise<Set<string>> {
    // Rows are inserted, and their keys locked, in the order given: two statements holding the
    // same jtis in opposite order would each insert one and wait for the other's (a deadlock,
    // failing a whole batch). In one fixed order the second waits for the first, then goes on.
    const sorted = uses.toSorted((x, y) => compare(x.kind, y.kind) || compare(x.jti, y.jti))
    const rows = await db
      .insertInto('replay_guard')
      .values(sorted.map((u) => ({ kind: u.kind, jti: u.jti, expires_at: u.expiresAt })))
      .onConflict((oc) =>
        oc
          .columns(['kind', 'jti'])
          .doUpdateSet((eb) => ({ expires_at: eb.ref('excluded.expires_at') }))
          .where('replay_guard.expires_at', '<=', now),
      )
      .returning(['kind', 'jti'])
      .execute()
    return new Set(rows.map((r) => `${r.kind} ${r.jti}`))
  },

  /** Deletes the uses whose expiry has passed. */
  async purge(db: Executor, now: Date): Promise<void> {
    await db.deleteFrom('replay_guard').where('expires_at', '<=', now).execute()
  },
}

// Code-unit order: the same on every instance, whatever its locale.
const compare = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0)
