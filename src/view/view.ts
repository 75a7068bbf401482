import { performance } from 'node:perf_hooks'
import { LRUCache } from 'lru-cache'
import type { Client } from '../clients/repository.js'
import { BoundedRevocations } from './revocations.js'

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

/**
 * How much of the state one instance holds in memory (VIEW_CLIENTS, VIEW_REVOCATIONS). Beyond it
 * the view answers UNKNOWN and the caller reads the database: a bound costs reads, never answers.
 */
export interface ViewBounds {
  /** Client records kept (a cache: the others are read when used, then kept). */
  clients: number
  /** Deny-listed jtis kept, and as many revoked grants (src/view/revocations.ts). */
  revocations: number
}

export const DEFAULT_VIEW_BOUNDS: ViewBounds = { clients: 10_000, revocations: 250_000 }

// Users are cached, not loaded whole: a deployment may have millions. The entries that matter
// (those whose tokens are being introspected) stay; a miss reads the database.
const USER_CACHE_SIZE = 50_000
// Deleted clients are remembered so that their tokens answer from memory; bounded, since a miss
// only costs a read.
const TOMBSTONE_CACHE_SIZE = 10_000

/**
 * What the hot paths need, held in memory by each instance: the negative state of live tokens
 * (deny-listed jtis and revoked grants, until they would have expired anyway; complete for every
 * token that expires after what a full set dropped), and bounded caches of clients and users.
 * Only the change feed (src/view/feed.ts) writes it, in sequence order; readers ask isFresh()
 * first, at the moment of use, and read the database instead when it says no.
 *
 * A lookup answers UNKNOWN when the view has no record (a client or user not cached, among them
 * one created on another instance a moment ago) or a revocation set dropped what could concern the
 * token: the caller reads the database and may offer the record back.
 */
export class MemoryView {
  private readonly clients: LRUCache<string, Client>
  private readonly deletedClients = new LRUCache<string, true>({ max: TOMBSTONE_CACHE_SIZE })
  private readonly users = new LRUCache<string, UserState | typeof GONE>({ max: USER_CACHE_SIZE })
  /** jti → when the token expires (ms). */
  private readonly deniedJtis: BoundedRevocations
  /** grant id → until when its revocation matters (ms). */
  private readonly revokedGrants: BoundedRevocations
  /** Lease deadline on the monotonic clock (performance.now()); 0: no lease. */
  private leaseDeadline = 0
  /** The same deadline on the wall clock (Date.now()): the lease ends at whichever comes first. */
  private leaseWallDeadline = 0
  /** Bumped by every change applied, so that a database read started before one is not cached after it. */
  private generation = 0

  constructor(readonly bounds: ViewBounds = DEFAULT_VIEW_BOUNDS) {
    this.clients = new LRUCache({ max: bounds.clients })
    this.deniedJtis = new BoundedRevocations(bounds.revocations)
    this.revokedGrants = new BoundedRevocations(bounds.revocations)
  }

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
   * The revocation facts about an access token expiring at `expMs`, or UNKNOWN when the view lacks
   * its client, (for a user's token) its user, or the revocations that could concern it.
   */
  tokenFacts(t: { jti: string; clientId: string; userId: string | undefined; grantId: string | undefined; expMs: number }): TokenFacts | undefined {
    const denied = this.deniedJtis.has(t.jti, t.expMs)
    if (denied === UNKNOWN) return UNKNOWN
    const grantRevoked = t.grantId === undefined ? false : this.revokedGrants.has(t.grantId, t.expMs)
    if (grantRevoked === UNKNOWN) return UNKNOWN
    const client = this.client(t.clientId)
    if (client === UNKNOWN) return UNKNOWN
    let user: UserState | typeof GONE | undefined
    if (t.userId !== undefined) {
      user = this.users.get(t.userId)
      if (user === UNKNOWN) return UNKNOWN
    }
    const live = user !== undefined && user !== GONE ? user : undefined
    return {
      denied,
      clientExists: client !== GONE,
      clientRevokedAt: client === GONE ? null : client.tokensRevokedAt,
      userExists: live !== undefined,
      userDisabled: live?.disabled ?? false,
      username: live?.username ?? null,
      grantRevoked,
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

  /** The ids of the clients held, to read again on a reload so that they stay warm. */
  cachedClientIds(): string[] {
    return [...this.clients.keys()]
  }

  /**
   * Rows a reload should read of each revocation set: one past the bound, so that replace() can
   * tell a set that fits from one that does not.
   */
  get revocationRows(): number {
    return this.bounds.revocations + 1
  }

  /**
   * Replaces the whole view with what a read of the database found: some clients (those it held,
   * read again), and the revocations ending latest, `revocationRows` of each at most.
   */
  replace(state: {
    clients: Client[]
    deniedJtis: ReadonlyArray<{ id: string; untilMs: number }>
    revokedGrants: ReadonlyArray<{ id: string; untilMs: number }>
  }): void {
    this.generation++
    this.clients.clear()
    for (const c of state.clients) this.clients.set(c.clientId, c)
    this.deletedClients.clear()
    this.users.clear()
    this.deniedJtis.replace(state.deniedJtis)
    this.revokedGrants.replace(state.revokedGrants)
  }

  denyJti(jti: string, untilMs: number): void {
    this.generation++
    this.deniedJtis.add(jti, untilMs)
  }

  revokeGrant(grantId: string, untilMs: number): void {
    this.generation++
    this.revokedGrants.add(grantId, untilMs)
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
    this.deniedJtis.prune(nowMs)
    this.revokedGrants.prune(nowMs)
  }

  /** Sizes, for metrics and the readiness report. */
  get size() {
    return { clients: this.clients.size, deniedJtis: this.deniedJtis.size, revokedGrants: this.revokedGrants.size, users: this.users.size }
  }

  /** What it holds and the most it will, by set, for the metrics. */
  get stats() {
    const { clients, users, deniedJtis, revokedGrants } = this.size
    return {
      entries: { clients, users, denied_jtis: deniedJtis, revoked_grants: revokedGrants },
      limits: { clients: this.bounds.clients, users: USER_CACHE_SIZE, denied_jtis: this.bounds.revocations, revoked_grants: this.bounds.revocations },
    }
  }

  /** Tokens expiring at or before these times (ms) are checked in the database; -Infinity: none. */
  get spilledUntil() {
    return { deniedJtis: this.deniedJtis.spilledUntil, revokedGrants: this.revokedGrants.spilledUntil }
  }
}
