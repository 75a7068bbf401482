import { performance } from 'node:perf_hooks'
import argon2 from 'argon2'
import { noTracing, type Tracing } from '../tracing.js'
import { isCurrentHash, verifyHash } from './hash-formats.js'
import type { HashQueue, HashSlot } from './hash-queue.js'

/**
 * argon2id with OWASP's recommended floor (m = 19 MiB, t = 2, p = 1): memory-hard enough that a
 * GPU farm gains little, and about 20-30 ms on one core here, so a login stays fast and a burst
 * of logins does not exhaust memory (19 MiB per hash in flight, as many as the hash queue runs). The
 * parameters are stored in every hash, so raising them later only affects new hashes.
 */
export const ARGON2_OPTIONS = {
  type: argon2.argon2id,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const

/** How long an admin call waits for a place in a full hash queue before its 503. */
export const ADMIN_HASH_WAIT_MS = 30_000

let dummyHash: Promise<string> | undefined
const dummy = () => (dummyHash ??= argon2.hash('tessera: no such user', ARGON2_OPTIONS))

/** argon2 behind the bounded queue (src/users/hash-queue.ts): every hash and check takes a place in it. */
export class PasswordHasher {
  constructor(
    private readonly queue: HashQueue,
    /** Told of every hash and check, when it starts: what the metrics (and tests) count. */
    private readonly onWork: (operation: 'hash' | 'verify') => void = () => undefined,
    private readonly tracing: Pick<Tracing, 'span'> = noTracing,
  ) {}

  /** The argon2 work as a span of its own; its wait for a place in the queue is an attribute. */
  private traced<T>(operation: 'hash' | 'verify', queuedAt: number, work: () => Promise<T>): Promise<T> {
    this.onWork(operation)
    const waited = Math.round((performance.now() - queuedAt) * 10) / 10
    return this.tracing.span(`argon2.${operation}`, { 'tessera.hash_queue.wait_ms': waited }, work)
  }

  /** A place in the queue for a request from `address`, taken before the work that leads up to a check; 503 when it is full. */
  enter(address: string): HashSlot {
    return this.queue.enter(address)
  }

  /**
   * For admin calls: hashes once a place is free, waiting for one up to ADMIN_HASH_WAIT_MS when
   * logins fill the queue (then 503), instead of hash's immediate 503.
   */
  async hashWaiting(password: string): Promise<string> {
    const queuedAt = performance.now()
    const slot = await this.queue.enterWaiting(ADMIN_HASH_WAIT_MS)
    return slot.run(() => this.traced('hash', queuedAt, () => argon2.hash(password, ARGON2_OPTIONS)))
  }

  hash(password: string): Promise<string> {
    const queuedAt = performance.now()
    return this.queue.enter().run(() => this.traced('hash', queuedAt, () => argon2.hash(password, ARGON2_OPTIONS)))
  }

  /**
   * Checks a password in the place `slot` holds. With no stored hash (unknown user) it verifies
   * against a dummy hash with the same parameters, so that a wrong username and a wrong password
   * take about the same time.
   */
  async verify(slot: HashSlot, storedHash: string | undefined, password: string): Promise<boolean> {
    return (await this.verifyAndUpgrade(slot, storedHash, password)).ok
  }

  /**
   * As verify, and when the password is right but the stored hash is not the server's own
   * (imported, or argon2id with other parameters), its replacement, hashed in the same place in
   * the queue: a login that upgrades a hash takes no second turn.
   */
  async verifyAndUpgrade(slot: HashSlot, storedHash: string | undefined, password: string): Promise<{ ok: boolean; upgrade?: string }> {
    const hash = storedHash ?? (await dummy())
    const queuedAt = performance.now()
    return slot.run(async () => {
      const ok = await this.traced('verify', queuedAt, () => verifyHash(hash, password).catch(() => false))
      if (!ok || storedHash === undefined) return { ok: false }
      if (isCurrentHash(storedHash)) return { ok }
      return { ok, upgrade: await this.traced('hash', queuedAt, () => argon2.hash(password, ARGON2_OPTIONS)) }
    })
  }

  /** Hashes running and waiting. */
  get depth() {
    return this.queue.depth
  }

  /** Warms the dummy hash at start so the first unknown-user login is not faster than the rest. */
  async prepare(): Promise<void> {
    await dummy()
  }
}
