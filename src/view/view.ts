import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import type { Client } from '../clients/repository.js'

/** What the view knows of a user: enough to answer introspection. */
export interface UserState {
  username: string
  disabled: boolean
}

/** The answer of a lookup the view cannot give: ask the database. */
export const UNKNOWN = undefined

/** A record that no longer exists (deleted), as far as the change feed has told this instance. */
export const GONE = Symbol('gone')

/** What is revoked about an access token, from the view; the same facts the database query gives. */
export interface TokenFacts {
  denied: boolean
  clientExists: boolean
  clientRevokedAt: Date | null
  userExists: boolean
  userDisabled: boolean
  username: string | null
  grantRevoked: boolean
}

// Users are cached, not loaded whole: a deployment may have millions. The entries that matter
// (those whose tokens are being introspected) stay; a miss reads the database.
const USER_CACHE_SIZE = 50_000
// Deleted clients are remembered so that their tokens answer from memory; bounded, since a miss
// only costs a read.
const TOMBSTONE_CACHE_SIZE = 10_000

/**
 * What the hot paths need, held in memory by each instance: every client record, and the
 * complete negative state of live tokens (deny-listed jtis and revoked grants, until they would
 * have expired anyway), plus a bounded cache of users. Only the change feed (src/view/feed.ts)
 * writes it, in sequence order; readers ask isFresh() first, at the moment of use, and read the
 * database instead when it says no.
 *
 * A lookup answers UNKNOWN when the view has no record (a client created on another instance a
 * moment ago, a user not cached): the caller reads the database and may offer the result back.
 */
export class MemoryView {
  private clients = new Map<string, Client>()
  private readonly deletedClients = new LRUCache<string, true>({ max: TOMBSTONE_CACHE_SIZE })
  private readonly users = new LRUCache<string, UserState | typeof GONE>({ max: USER_CACHE_SIZE })
  /** jti → when the token expires (ms). */
  private deniedJtis = new Map<string, number>()
  /** grant id → until when its revocation matters (ms). */
  private revokedGrants = new Map<string, number>()
  /** Lease deadline on the monotonic clock (performance.now()); 0: no lease. */
  private leaseDeadline = 0
  /** The same deadline on the wall clock (Date.now()): the lease ends at whichever comes first. */
  private leaseWallDeadline = 0
  /** Bumped by every change applied, so that a database read started before one is not cached after it. */
  private generation = 0

  /**
   * Whether memory is the truth right now: this instance holds a lease, which it renews only
   * while it has applied every change, and which every writer waits out or sees acknowledged.
   * Checked against both clocks at the moment of use: an instance that was paused wakes up past
   * its deadline on the monotonic clock, and a guest VM resumed without it advancing is past it
   * on the wall clock, once that has been set right. Either clock stepping alone only ends the
   * lease early.
   */
  isFresh(): boolean {
    return performance.now() < this.leaseDeadline && Date.now() < this.leaseWallDeadline
  }

  /**
   * The lease now runs until `deadline` (performance.now() time) and `wallDeadline` (Date.now()
   * time), whichever comes first; 0 gives it up.
   */
  holdLeaseUntil(deadline: number, wallDeadline = deadline === 0 ? 0 : Number.POSITIVE_INFINITY): void {
    this.leaseDeadline = deadline
    this.leaseWallDeadline = wallDeadline
  }

  /** A token to offer(): the view's generation when a database read began. */
  get readMark(): number {
    return this.generation
  }

  // --- reads (ask isFresh() first) ---

  /** The client, GONE if it was deleted, or UNKNOWN. */
  client(clientId: string): Client | typeof GONE | undefined {
    return this.clients.get(clientId) ?? (this.deletedClients.has(clientId) ? GONE : UNKNOWN)
  }

  /** The user, GONE if deleted, or UNKNOWN when not cached. */
  user(userId: string): UserState | typeof GONE | undefined {
    return this.users.get(userId)
  }

  /**
   * The revocation facts about an access token, or UNKNOWN when the view lacks its client or
   * (for a user's token) its user.
   */
  tokenFacts(t: { jti: string; clientId: string; userId: string | undefined; grantId: string | undefined }): TokenFacts | undefined {
    const client = this.client(t.clientId)
    if (client === UNKNOWN) return UNKNOWN
    let user: UserState | typeof GONE | undefined
    if (t.userId !== undefined) {
      user = this.users.get(t.userId)
      if (user === UNKNOWN) return UNKNOWN
    }
    const live = user !== undefined && user !== GONE ? user : undefined
    return {
      denied: this.deniedJtis.has(t.jti),
      clientExists: client !== GONE,
      clientRevokedAt: client === GONE ? null : client.tokensRevokedAt,
      userExists: live !== undefined,
      userDisabled: live?.disabled ?? false,
      username: live?.username ?? null,
      grantRevoked: t.grantId !== undefined && this.revokedGrants.has(t.grantId),
    }
  }

  // --- offers from readers that missed (kept only if no change was applied meanwhile) ---

  offerClient(clientId: string, client: Client | undefined, mark: number): void {
    if (mark !== this.generation) return
    if (client !== undefined) this.clients.set(clientId, client)
  }

  offerUser(userId: string, user: UserState | undefined, mark: number): void {
    if (mark !== this.generation || this.users.has(userId)) return
    this.users.set(userId, user ?? GONE)
  }

  // --- writes (the change feed only) ---

  /** Replaces the whole view with what a full read of the database found. */
  replace(state: { clients: Client[]; deniedJtis: Map<string, number>; revokedGrants: Map<string, number> }): void {
    this.generation++
    this.clients = new Map(state.clients.map((c) => [c.clientId, c]))
    this.deletedClients.clear()
    this.users.clear()
    this.deniedJtis = state.deniedJtis
    this.revokedGrants = state.revokedGrants
  }

  denyJti(jti: string, untilMs: number): void {
    this.generation++
    this.deniedJtis.set(jti, untilMs)
  }

  revokeGrant(grantId: string, untilMs: number): void {
    this.generation++
    this.revokedGrants.set(grantId, untilMs)
  }

  /** The client as the database has it now; undefined: deleted. */
  setClient(clientId: string, client: Client | undefined): void {
    this.generation++
    if (client === undefined) {
      this.clients.delete(clientId)
      this.deletedClients.set(clientId, true)
    } else {
      this.clients.set(clientId, client)
      this.deletedClients.delete(clientId)
    }
  }

  /** The user as the database has it now; undefined: deleted. */
  setUser(userId: string, user: UserState | undefined): void {
    this.generation++
    this.users.set(userId, user ?? GONE)
  }

  /** Forgets revocations of tokens that have expired anyway. */
  prune(nowMs: number): void {
    for (const [jti, until] of this.deniedJtis) if (until <= nowMs) this.deniedJtis.delete(jti)
    for (const [id, until] of this.revokedGrants) if (until <= nowMs) this.revokedGrants.delete(id)
  }

  /** Sizes, for metrics and the readiness report. */
  get size() {
    return { clients: this.clients.size, deniedJtis: this.deniedJtis.size, revokedGrants: this.revokedGrants.size, users: this.users.size }
  }
}
