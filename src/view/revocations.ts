/** The answer of a lookup the set cannot give from memory: ask the database. */
const UNKNOWN = undefined

// A full set drops down to this fraction of its bound, so that the sort a drop costs is paid once
// per tenth of the bound added, not on every addition.
const KEEP_FRACTION = 0.9

/**
 * Revoked ids (deny-listed jtis, revoked grants), each with the time it stops mattering: the
 * latest expiry of any access token it affects. At most `bound` of them are held. A full set
 * drops the entries that stop mattering soonest and remembers the latest time among them
 * (`spilledUntil`); from then on it answers only for tokens that expire after that time. A token
 * that expires at or before it may be one whose entry was dropped, and its lookup answers UNKNOWN,
 * which sends the caller to the database, as a cache miss does.
 *
 * Why that is exact: a dropped entry ends at or before `spilledUntil`, and no token outlives the
 * entry that revokes it (a jti's entry ends when its token expires; a grant's when the last token
 * issued from it does), so a token expiring after `spilledUntil` was never covered by a dropped
 * entry. It compares the token's own `exp` with times derived from the tokens' own `exp`: no
 * clock is read. Once the clock passes `spilledUntil` every token it covers has expired anyway.
 */
export class BoundedRevocations {
  private entries = new Map<string, number>()
  private spilled = -Infinity

  constructor(readonly bound: number) {
    if (!(bound >= 1)) throw new Error(`a revocation set needs a bound of 1 or more, got ${bound}`)
  }

  /**
   * Whether `id` is revoked, for a token expiring at `tokenExpMs`: true, false, or UNKNOWN when
   * an entry for it may have been dropped.
   */
  has(id: string, tokenExpMs: number): boolean | undefined {
    if (this.entries.has(id)) return true
    return tokenExpMs <= this.spilled ? UNKNOWN : false
  }

  /** Revokes `id` until `untilMs`. */
  add(id: string, untilMs: number): void {
    // Tokens it could affect are answered by the database already.
    if (untilMs <= this.spilled) return
    const known = this.entries.get(id)
    if (known !== undefined && known >= untilMs) return
    this.entries.set(id, untilMs)
    if (this.entries.size > this.bound) this.spill(this.entries.size - Math.floor(this.bound * KEEP_FRACTION))
  }

  /**
   * Replaces everything with `rows`: a read of the database, which may stop at the `bound + 1`
   * rows that end latest (more would not be held anyway). Beyond the bound, what ends at or
   * before the first row left out is treated as dropped.
   */
  replace(rows: ReadonlyArray<{ id: string; untilMs: number }>): void {
    this.entries = new Map()
    this.spilled = -Infinity
    let kept = rows
    if (rows.length > this.bound) {
      const cut = rows.map((r) => r.untilMs).sort((a, b) => b - a)[this.bound]!
      kept = rows.filter((r) => r.untilMs > cut)
      this.spilled = cut
    }
    for (const r of kept) this.entries.set(r.id, Math.max(r.untilMs, this.entries.get(r.id) ?? -Infinity))
  }

  /** Forgets what has stopped mattering by `nowMs`. */
  prune(nowMs: number): void {
    for (const [id, until] of this.entries) if (until <= nowMs) this.entries.delete(id)
  }

  get size(): number {
    return this.entries.size
  }

  /** Tokens expiring at or before this (ms) are answered by the database; -Infinity: none. */
  get spilledUntil(): number {
    return this.spilled
  }

  /** Drops at least `count` of the entries that end soonest. */
  private spill(count: number): void {
    const untils = Float64Array.from(this.entries.values()).sort()
    const cut = untils[Math.min(count, untils.length) - 1]!
    for (const [id, until] of this.entries) if (until <= cut) this.entries.delete(id)
    this.spilled = Math.max(this.spilled, cut)
  }
}
