import { createHash, createPrivateKey, createPublicKey, generateKeyPair, randomUUID, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { AuditEvent, AuditRecorder } from '../audit/events.js'
import { addSeconds, type Clock } from '../clock.js'
import type { SigningAlg } from '../config.js'
import { tryLock, withLock } from '../db/locks.js'
import { OAuthError } from '../errors.js'
import type { Database, KeyState } from '../db/schema.js'
import type { ChangeWriter } from '../view/changes.js'
import { keyRepository, type KeyRow, type NewKey } from './repository.js'
import { openEither, seal, type KeyEncryptionKeys } from './seal.js'

// The key manager owns the whole life of a signing key:
//
//   next     published in /jwks, not yet signing, for at least one JWKS cache lifetime
//   active   signing and published; exactly one at a time (a unique index holds it)
//   retired  published until every token it signed has expired; its private key is already
//            erased, since it never signs again
//   removed  gone from /jwks; the row stays for the record
//
// Postgres holds the truth. Every instance re-reads it every poll interval (a poll, not
// LISTEN/NOTIFY, so that it works behind a transaction-mode pgbouncer) and runs the scheduled
// transitions under a transaction-scoped advisory try-lock, so one instance does each of them.

const generateKeyPairAsync = promisify(generateKeyPair)

export interface KeyManagerSettings {
  alg: SigningAlg
  /** Seconds an active key signs before the next one is made. */
  rotationInterval: number
  /** Seconds /jwks may be cached. */
  jwksMaxAge: number
  pollIntervalMs: number
  /** The longest an access token may live now, in seconds: a retired key stays published that long. */
  maxAccessTokenTtl: () => Promise<number>
}

export interface SigningKey {
  kid: string
  alg: SigningAlg
  key: KeyObject
}

/** What the admin API shows of a key: never key material. */
export interface KeyInfo {
  kid: string
  alg: string
  state: KeyState
  created_at: string
  activate_at: string | null
  activated_at: string | null
  retired_at: string | null
  remove_at: string | null
  removed_at: string | null
}

interface LiveKey {
  kid: string
  alg: SigningAlg
  state: KeyState
  /** When the key entered its state: published (next), began signing (active), stopped (retired). */
  since: Date
  publicKey: KeyObject
  publicJwk: Record<string, unknown>
}

export interface Jwks {
  body: string
  etag: string
}

// Extra time a retired key stays published past the longest token lifetime, for clock skew
// between instances and resource servers. One poll interval is added to it: an instance that has
// not yet seen the promotion keeps signing with the old key until its next poll.
const RETIRE_MARGIN_SECONDS = 60
// Reads of the keys made for a request that must not miss a key (src/oauth/revocation.ts) begin
// at most this often, whatever kids requests make up; callers meanwhile share the next one.
const DEMANDED_RELOAD_MS = 1000

export class KeyManager {
  private live = new Map<string, LiveKey>()
  private signing: SigningKey | undefined
  private privateKeys = new Map<string, KeyObject>()
  private jwksCache: Jwks = jwksOf([])
  private timer: NodeJS.Timeout | undefined
  private loading: Promise<void> | undefined
  private queuedLoad: Promise<void> | undefined
  private ticking: Promise<void> = Promise.resolve()
  private lastOnDemandReload = 0
  private demandedLoad: Promise<void> | undefined
  private lastDemandedLoad = -Infinity
  private startedAt: Date | undefined

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    /** Seals under the current key; opens under it or, during a rotation, the previous one. */
    private readonly keks: KeyEncryptionKeys,
    private readonly settings: KeyManagerSettings,
    private readonly log: Logger,
    /** Removing a key goes through the change feed: every instance stops trusting it before we answer. */
    private readonly changes: ChangeWriter,
    /** Every key change is a security event, recorded once it has committed. */
    private readonly audit: AuditRecorder,
  ) {}

  /**
   * Seconds between a new key's publication and its first signature: a cache lifetime, plus a
   * poll interval for every other instance to serve it, plus one for the promoting tick to come.
   */
  get prepublishSeconds(): number {
    return this.settings.jwksMaxAge + Math.ceil((2 * this.settings.pollIntervalMs) / 1000)
  }

  /** Loads the keys, makes the first one if there is none, and starts the schedule. */
  async start(): Promise<void> {
    this.startedAt = this.clock.now()
    await this.tick()
    // Instances started together on an empty database: the one that lost the try-lock must wait
    // for the winner's first key rather than start without one.
    if (!this.ready) await this.serialized(() => this.step({ wait: true }))
    if (!this.ready) throw new Error('no active signing key could be loaded')
    this.timer = setInterval(() => {
      this.tick().catch((err: unknown) => this.log.error({ err }, 'key manager tick failed'))
    }, this.settings.pollIntervalMs)
    this.timer.unref()
  }

  /** Stops the schedule; resolves once a tick under way has finished. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    await this.ticking
  }

  /** The active key. Throws before start() has loaded one. */
  signingKey(): SigningKey {
    if (this.signing === undefined) throw new Error('no signing key loaded')
    return this.signing
  }

  get ready(): boolean {
    return this.signing !== undefined
  }

  /**
   * The public key that verifies tokens with this kid and alg, or undefined. A kid this instance
   * has not seen may have been made by another instance a moment ago, so it re-reads the keys
   * once (at most once a second) before giving up.
   */
  async verificationKey(kid: string, alg: string): Promise<KeyObject | undefined> {
    let key = this.live.get(kid)
    // Throttled apart from the poll (which runs every second anyway), so that a burst of tokens
    // with made-up kids costs at most one extra read a second.
    if (key === undefined && Date.now() - this.lastOnDemandReload > 1000) {
      this.lastOnDemandReload = Date.now()
      await this.reload()
      key = this.live.get(kid)
    }
    return key !== undefined && key.alg === alg ? key.publicKey : undefined
  }

  /**
   * Whether a key with this kid is in /jwks now, as far as this instance knows. Exact while the
   * view is fresh: every removal of a key goes through the change feed.
   */
  isPublished(kid: string): boolean {
    return this.live.has(kid)
  }

  jwks(): Jwks {
    return this.jwksCache
  }

  /** The published keys' states, and since when each has been in it, as of the last read. */
  states(): Array<{ state: Exclude<KeyState, 'removed'>; since: Date }> {
    const states: Array<{ state: Exclude<KeyState, 'removed'>; since: Date }> = []
    for (const k of this.live.values()) if (k.state !== 'removed') states.push({ state: k.state, since: k.since })
    return states
  }

  async list(): Promise<KeyInfo[]> {
    return (await keyRepository.listAll(this.db)).map(info)
  }

  /**
   * Starts a rotation: a new key is published now and signs once caches have seen it. With
   * `immediate` (a leaked key), the new key signs at once and every other key is removed.
   */
  async rotate(opts: { immediate: boolean }): Promise<KeyInfo> {
    const key = await newKey(this.settings.alg, this.keks.current)
    const now = this.clock.now()
    const { kid, made, removed } = await this.changes.write(async (trx, change) => {
      await withLock(trx, 'keys')
      const rows = await keyRepository.listLive(trx)
      if (opts.immediate) {
        await keyRepository.remove(trx, rows.map((k) => k.kid), now)
        await keyRepository.insertActive(trx, key, now)
        change({ kind: 'keys', subject: '' })
        return { kid: key.kid, made: true, removed: rows.map((k) => k.kid) }
      }
      // A rotation already under way keeps its key and schedule: asking twice does not delay it.
      const pending = rows.find((k) => k.state === 'next')
      if (pending !== undefined) return { kid: pending.kid, made: false, removed: [] }
      await keyRepository.insertNext(trx, key, now, addSeconds(now, this.prepublishSeconds))
      return { kid: key.kid, made: true, removed: [] }
    })
    // Asked again while a rotation is under way, nothing changed (the admin change is on record).
    if (made) this.audit.record({ type: 'key.rotated', kid, alg: key.alg, immediate: opts.immediate, removed })
    if (opts.immediate) this.log.warn({ kid, alg: key.alg }, 'emergency rotation: every other signing key removed')
    else this.log.info({ kid }, 'signing key rotation started')
    await this.reload()
    const row = await keyRepository.find(this.db, kid)
    if (row === undefined) throw new Error('rotated key vanished')
    return info(row)
  }

  /**
   * Re-encrypts every stored private key under the current KEY_ENCRYPTION_KEY, in one transaction
   * under the keys lock (so no scheduled step seals a new key under the old one meanwhile). Other
   * instances keep signing: they hold their active key opened, and the key material is unchanged.
   * Throws, changing nothing, when a key opens under neither key-encryption key.
   */
  async reseal(): Promise<{ resealed: string[]; already: string[] }> {
    return this.db.transaction().execute(async (trx) => {
      await withLock(trx, 'keys')
      const rows = (await keyRepository.listLive(trx)).filter((k) => k.private_key !== null)
      const resealed: string[] = []
      const already: string[] = []
      for (const row of rows) {
        let opened
        try {
          opened = openEither(this.keks, row.kid, row.private_key!)
        } catch {
          // Nothing is changed: the transaction rolls back. 409, since the server is fine, the data is not.
          throw new OAuthError('conflict', notOpening(this.keks, row.kid).message)
        }
        if (opened.under === 'current') {
          already.push(row.kid)
          continue
        }
        await keyRepository.setPrivateKey(trx, row.kid, seal(this.keks.current, row.kid, opened.plaintext))
        resealed.push(row.kid)
      }
      if (resealed.length > 0) this.log.info({ resealed }, 'signing keys resealed under the current KEY_ENCRYPTION_KEY')
      return { resealed, already }
    })
  }

  /**
   * One step of the schedule: promote a next key whose time has come, make a next key when the
   * active one is due (or of an algorithm no longer configured), remove retired keys whose tokens
   * have all expired, and make the first key if there is none. Then re-read the keys. Calls never
   * overlap within an instance: a call made while the timer's step runs waits for it, then runs.
   */
  tick(): Promise<void> {
    return this.serialized(() => this.step({ wait: false }))
  }

  private serialized(fn: () => Promise<void>): Promise<void> {
    const run = this.ticking.then(fn)
    this.ticking = run.catch(() => undefined)
    return run
  }

  private async step(opts: { wait: boolean }): Promise<void> {
    const now = this.clock.now()
    const policy = { alg: this.settings.alg, rotationInterval: this.settings.rotationInterval, startedAt: this.startedAt ?? now }
    const plan = planTick(await keyRepository.listLive(this.db), now, policy)
    if (plan.length > 0) {
      // Made outside the transaction: RSA takes a while, and PGlite's single connection must not
      // be held across slow work (nor asked for the root database from inside a transaction).
      const key = plan.includes('create-active') || plan.includes('create-next') ? await newKey(this.settings.alg, this.keks.current) : undefined
      const maxTtl = await this.settings.maxAccessTokenTtl()
      const retireFor = maxTtl + RETIRE_MARGIN_SECONDS + Math.ceil(this.settings.pollIntervalMs / 1000)
      // Recorded once the transaction has committed: a rolled-back step did not happen.
      const events: AuditEvent[] = []
      await this.changes.write(async (trx, change) => {
        if (opts.wait) await withLock(trx, 'keys')
        else if (!(await tryLock(trx, 'keys'))) return
        // Decide again under the lock: another instance may have just done it.
        const rows = await keyRepository.listLive(trx)
        for (const step of planTick(rows, now, policy)) {
          if (step === 'create-active' && key !== undefined) {
            await keyRepository.insertActive(trx, key, now)
            events.push({ type: 'key.created', kid: key.kid, alg: key.alg, state: 'active' })
            this.log.info({ kid: key.kid, alg: key.alg }, 'first signing key created')
          } else if (step === 'create-next' && key !== undefined) {
            await keyRepository.insertNext(trx, key, now, addSeconds(now, this.prepublishSeconds))
            events.push({ type: 'key.created', kid: key.kid, alg: key.alg, state: 'next' })
            this.log.info({ kid: key.kid, alg: key.alg }, 'next signing key published')
          } else if (step === 'promote') {
            const next = rows.find((k) => k.state === 'next')
            if (next === undefined) continue
            await keyRepository.promote(trx, next.kid, now, addSeconds(now, retireFor))
            events.push({ type: 'key.activated', kid: next.kid, alg: next.alg })
            this.log.info({ kid: next.kid, alg: next.alg }, 'signing key activated')
          } else if (step === 'remove-expired') {
            const expired = rows.filter((k) => k.state === 'retired' && k.remove_at !== null && k.remove_at <= now)
            await keyRepository.remove(trx, expired.map((k) => k.kid), now)
            change({ kind: 'keys', subject: '' })
            events.push({ type: 'key.removed', kids: expired.map((k) => k.kid) })
            this.log.info({ kids: expired.map((k) => k.kid) }, 'retired signing keys removed')
          }
        }
      })
      for (const event of events) this.audit.record(event)
    }
    await this.reload()
  }

  /**
   * Re-reads the live keys. Resolves after a read that began after the call, so a caller that has
   * just changed the table sees its change; concurrent callers share reads.
   */
  reload(): Promise<void> {
    if (this.loading === undefined) {
      this.loading = this.load().finally(() => {
        this.loading = undefined
      })
      return this.loading
    }
    // The read under way may have begun before the caller's change: one more after it, shared by
    // everyone who asks meanwhile.
    this.queuedLoad ??= this.loading
      .catch(() => undefined)
      .then(() => {
        this.queuedLoad = undefined
        return this.reload()
      })
    return this.queuedLoad
  }

  /**
   * Like reload(), resolves after a read that began after the call, but such reads begin at most
   * once per DEMANDED_RELOAD_MS: a caller within it waits for the next one, shared by every caller
   * meanwhile. A request can always name a kid nobody has, so this is what requests call.
   */
  reloadDemanded(): Promise<void> {
    this.demandedLoad ??= new Promise<void>((resolve) => {
      setTimeout(resolve, Math.max(0, this.lastDemandedLoad + DEMANDED_RELOAD_MS - performance.now()))
    }).then(() => {
      // Callers from now on need a read that begins after them: the next one.
      this.demandedLoad = undefined
      this.lastDemandedLoad = performance.now()
      return this.reload()
    })
    return this.demandedLoad
  }

  private async load(): Promise<void> {
    const rows = await keyRepository.listLive(this.db)
    const live = new Map<string, LiveKey>()
    let signing: SigningKey | undefined
    for (const row of rows) {
      const known = this.live.get(row.kid)
      live.set(row.kid, known === undefined ? liveKey(row) : { ...known, state: row.state, since: stateSince(row) })
      if (row.state === 'active' && row.private_key !== null) {
        let key = this.privateKeys.get(row.kid)
        if (key === undefined) {
          key = openPrivateKey(this.keks, row.kid, row.private_key)
          this.privateKeys.set(row.kid, key)
        }
        signing = { kid: row.kid, alg: row.alg as SigningAlg, key }
      }
    }
    for (const kid of this.privateKeys.keys()) if (signing?.kid !== kid) this.privateKeys.delete(kid)
    this.live = live
    // Keep the last signing key while it is still published if a read ever finds none active.
    if (signing !== undefined) this.signing = signing
    else if (this.signing !== undefined && !live.has(this.signing.kid)) this.signing = undefined
    this.jwksCache = jwksOf([...live.values()])
  }
}

type Step = 'create-active' | 'create-next' | 'promote' | 'remove-expired'

interface Policy {
  alg: SigningAlg
  rotationInterval: number
  /** When this instance started: see the algorithm check below. */
  startedAt: Date
}

/** What the schedule asks for, given the live keys. Pure, so the decision can be made twice. */
function planTick(rows: KeyRow[], now: Date, p: Policy): Step[] {
  const steps: Step[] = []
  const active = rows.find((k) => k.state === 'active')
  const next = rows.find((k) => k.state === 'next')
  if (active === undefined && next === undefined) steps.push('create-active')
  if (next !== undefined && (active === undefined || (next.activate_at !== null && next.activate_at <= now))) {
    steps.push('promote')
  }
  if (active !== undefined && next === undefined) {
    const due = active.activated_at !== null && addSeconds(active.activated_at, p.rotationInterval) <= now
    // A SIGNING_ALG change rotates through the normal lifecycle. Only keys made before this
    // instance started count as outdated: during a rolling restart an instance still running the
    // old setting must not rotate back a key that a newer instance has just made.
    const outdated = active.alg !== p.alg && active.created_at <= p.startedAt
    if (due || outdated) steps.push('create-next')
  }
  if (rows.some((k) => k.state === 'retired' && k.remove_at !== null && k.remove_at <= now)) steps.push('remove-expired')
  return steps
}

async function newKey(alg: SigningAlg, kek: Buffer): Promise<NewKey> {
  const { publicKey, privateKey } = await generate(alg)
  const kid = randomUUID()
  const der = privateKey.export({ format: 'der', type: 'pkcs8' })
  return { kid, alg, publicJwk: publicJwk(publicKey, kid, alg), sealedPrivateKey: seal(kek, kid, der) }
}

function generate(alg: SigningAlg) {
  switch (alg) {
    case 'ES256':
      return generateKeyPairAsync('ec', { namedCurve: 'P-256' })
    case 'EdDSA':
      return generateKeyPairAsync('ed25519')
    case 'RS256':
    case 'PS256':
      return generateKeyPairAsync('rsa', { modulusLength: 2048 })
  }
}

/**
 * RFC 7517 §4: the published members. Exported from a public KeyObject, which has no private
 * members to give, whatever the stored JWK holds.
 */
function publicJwk(publicKey: KeyObject, kid: string, alg: string): Record<string, unknown> {
  return { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' }
}

function liveKey(row: KeyRow): LiveKey {
  // createPublicKey derives the public half even from a JWK that (tampered with) holds private members.
  const publicKey = createPublicKey({ key: row.public_jwk as never, format: 'jwk' })
  return { kid: row.kid, alg: row.alg as SigningAlg, state: row.state, since: stateSince(row), publicKey, publicJwk: publicJwk(publicKey, row.kid, row.alg) }
}

function stateSince(row: KeyRow): Date {
  switch (row.state) {
    case 'active':
      return row.activated_at ?? row.created_at
    case 'retired':
      return row.retired_at ?? row.created_at
    default:
      return row.created_at
  }
}

/** A stored private key, opened; throws, naming the kid and the fix, when no key-encryption key held opens it. */
export function openPrivateKey(keks: KeyEncryptionKeys, kid: string, sealed: Uint8Array): KeyObject {
  let der: Buffer
  try {
    der = openEither(keks, kid, sealed).plaintext
  } catch {
    throw notOpening(keks, kid)
  }
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
}

function notOpening(keks: KeyEncryptionKeys, kid: string): Error {
  return new Error(
    `the private key of signing key ${kid} does not open with this KEY_ENCRYPTION_KEY` +
      (keks.previous === undefined ? '' : ' nor with KEY_ENCRYPTION_KEY_PREVIOUS') +
      ': every instance over one database needs the same KEY_ENCRYPTION_KEY; if it was changed, ' +
      'set KEY_ENCRYPTION_KEY_PREVIOUS to the one it replaced and run `tessera keys reseal`',
  )
}

const STATE_ORDER: Record<KeyState, number> = { active: 0, next: 1, retired: 2, removed: 3 }

function jwksOf(keys: LiveKey[]): Jwks {
  // Stable sort over rows read oldest first: every instance serves the same bytes, so the same ETag.
  const sorted = [...keys].sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state])
  const body = JSON.stringify({ keys: sorted.map((k) => k.publicJwk) })
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`
  return { body, etag }
}

function info(row: KeyRow): KeyInfo {
  const iso = (d: Date | null) => (d === null ? null : d.toISOString())
  return {
    kid: row.kid,
    alg: row.alg,
    state: row.state,
    created_at: row.created_at.toISOString(),
    activate_at: iso(row.activate_at),
    activated_at: iso(row.activated_at),
    retired_at: iso(row.retired_at),
    remove_at: iso(row.remove_at),
    removed_at: iso(row.removed_at),
  }
}
