import { createHash, createPrivateKey, createPublicKey, generateKeyPair, randomUUID, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { addSeconds, type Clock } from '../clock.js'
import type { SigningAlg } from '../config.js'
import { tryLock, withLock } from '../db/locks.js'
import type { Database, KeyState } from '../db/schema.js'
import { keyRepository, type KeyRow, type NewKey } from './repository.js'
import { open, seal } from './seal.js'

// The key manager owns the whole life of a signing key:
//
//   next     published in /jwks, not yet signing, for at least one JWKS cache lifetime
//   active   signing and published; exactly one at a time (a unique index holds it)
//   retired  published until every token it signed has expired
//   removed  gone from /jwks, private key erased; the row stays for the record
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
  publicKey: KeyObject
  publicJwk: Record<string, unknown>
}

export interface Jwks {
  body: string
  etag: string
}

// Extra time a retired key stays published past the longest token lifetime, for clock skew
// between instances and resource servers.
const RETIRE_MARGIN_SECONDS = 60

export class KeyManager {
  private live = new Map<string, LiveKey>()
  private signing: SigningKey | undefined
  private privateKeys = new Map<string, KeyObject>()
  private jwksCache: Jwks = jwksOf([])
  private timer: NodeJS.Timeout | undefined
  private reloading: Promise<void> | undefined
  private lastReload = 0

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly kek: Buffer,
    private readonly settings: KeyManagerSettings,
    private readonly log: Logger,
  ) {}

  /** Seconds between a new key's publication and its first signature. */
  get prepublishSeconds(): number {
    return this.settings.jwksMaxAge + Math.ceil((2 * this.settings.pollIntervalMs) / 1000)
  }

  /** Loads the keys, makes the first one if there is none, and starts the schedule. */
  async start(): Promise<void> {
    await this.tick()
    this.timer = setInterval(() => {
      this.tick().catch((err: unknown) => this.log.error({ err }, 'key manager tick failed'))
    }, this.settings.pollIntervalMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
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
    if (key === undefined && Date.now() - this.lastReload > 1000) {
      await this.reload()
      key = this.live.get(kid)
    }
    return key !== undefined && key.alg === alg ? key.publicKey : undefined
  }

  jwks(): Jwks {
    return this.jwksCache
  }

  async list(): Promise<KeyInfo[]> {
    return (await keyRepository.listAll(this.db)).map(info)
  }

  /**
   * Starts a rotation: a new key is published now and signs once caches have seen it. With
   * `immediate` (a leaked key), the new key signs at once and every other key is removed.
   */
  async rotate(opts: { immediate: boolean }): Promise<KeyInfo> {
    const key = await newKey(this.settings.alg, this.kek)
    const now = this.clock.now()
    const kid = await this.db.transaction().execute(async (trx) => {
      await withLock(trx, 'keys')
      const rows = await keyRepository.listLive(trx)
      if (opts.immediate) {
        await keyRepository.remove(trx, rows.map((k) => k.kid), now)
        await keyRepository.insertActive(trx, key, now)
        return key.kid
      }
      // A rotation already under way keeps its key and schedule: asking twice does not delay it.
      const pending = rows.find((k) => k.state === 'next')
      if (pending !== undefined) return pending.kid
      await keyRepository.insertNext(trx, key, now, addSeconds(now, this.prepublishSeconds))
      return key.kid
    })
    this.log.info({ kid, immediate: opts.immediate }, 'signing key rotation started')
    await this.reload()
    const row = (await keyRepository.listAll(this.db)).find((k) => k.kid === kid)
    if (row === undefined) throw new Error('rotated key vanished')
    return info(row)
  }

  /**
   * One step of the schedule: promote a next key whose time has come, make a next key when the
   * active one is due (or of the wrong algorithm), remove retired keys whose tokens have all
   * expired, and make the first key if there is none. Then re-read the keys.
   */
  async tick(): Promise<void> {
    const now = this.clock.now()
    const plan = planTick(await keyRepository.listLive(this.db), now, this.settings)
    if (plan.length > 0) {
      // Generated outside the transaction: RSA takes a while, and PGlite's single connection must
      // not be held across slow work.
      const key = plan.includes('create-active') || plan.includes('create-next') ? await newKey(this.settings.alg, this.kek) : undefined
      const maxTtl = plan.includes('promote') ? await this.settings.maxAccessTokenTtl() : 0
      await this.db.transaction().execute(async (trx) => {
        if (!(await tryLock(trx, 'keys'))) return
        // Decide again under the lock: another instance may have just done it.
        const rows = await keyRepository.listLive(trx)
        for (const step of planTick(rows, now, this.settings)) {
          if (step === 'create-active' && key !== undefined) {
            await keyRepository.insertActive(trx, key, now)
            this.log.info({ kid: key.kid, alg: key.alg }, 'first signing key created')
          } else if (step === 'create-next' && key !== undefined) {
            await keyRepository.insertNext(trx, key, now, addSeconds(now, this.prepublishSeconds))
            this.log.info({ kid: key.kid, alg: key.alg }, 'next signing key published')
          } else if (step === 'promote') {
            const next = rows.find((k) => k.state === 'next')
            if (next === undefined) continue
            await keyRepository.promote(trx, next.kid, now, addSeconds(now, maxTtl + RETIRE_MARGIN_SECONDS))
            this.log.info({ kid: next.kid }, 'signing key activated')
          } else if (step === 'remove-expired') {
            const expired = rows.filter((k) => k.state === 'retired' && k.remove_at !== null && k.remove_at <= now)
            await keyRepository.remove(trx, expired.map((k) => k.kid), now)
          }
        }
      })
    }
    await this.reload()
  }

  /** Re-reads the live keys; concurrent callers share one read. */
  reload(): Promise<void> {
    this.reloading ??= this.load().finally(() => {
      this.reloading = undefined
    })
    return this.reloading
  }

  private async load(): Promise<void> {
    const rows = await keyRepository.listLive(this.db)
    this.lastReload = Date.now()
    const live = new Map<string, LiveKey>()
    let signing: SigningKey | undefined
    for (const row of rows) {
      const known = this.live.get(row.kid)
      const publicKey = known?.publicKey ?? createPublicKey({ key: row.public_jwk as never, format: 'jwk' })
      live.set(row.kid, { kid: row.kid, alg: row.alg as SigningAlg, state: row.state, publicKey, publicJwk: row.public_jwk })
      if (row.state === 'active' && row.private_key !== null) {
        let key = this.privateKeys.get(row.kid)
        if (key === undefined) {
          key = createPrivateKey({ key: open(this.kek, row.kid, row.private_key), format: 'der', type: 'pkcs8' })
          this.privateKeys.set(row.kid, key)
        }
        signing = { kid: row.kid, alg: row.alg as SigningAlg, key }
      }
    }
    for (const kid of this.privateKeys.keys()) if (!live.has(kid)) this.privateKeys.delete(kid)
    this.live = live
    // Keep the last signing key if a poll caught the table mid-rotation with none active.
    if (signing !== undefined) this.signing = signing
    else if (this.signing !== undefined && !live.has(this.signing.kid)) this.signing = undefined
    this.jwksCache = jwksOf([...live.values()])
  }
}

type Step = 'create-active' | 'create-next' | 'promote' | 'remove-expired'

/** What the schedule asks for, given the live keys. Pure, so the decision can be made twice. */
function planTick(rows: KeyRow[], now: Date, s: KeyManagerSettings): Step[] {
  const steps: Step[] = []
  const active = rows.find((k) => k.state === 'active')
  const next = rows.find((k) => k.state === 'next')
  if (active === undefined && next === undefined) steps.push('create-active')
  if (next !== undefined && (active === undefined || (next.activate_at !== null && next.activate_at <= now))) {
    steps.push('promote')
  }
  if (active !== undefined && next === undefined) {
    const due = active.activated_at !== null && addSeconds(active.activated_at, s.rotationInterval) <= now
    if (due || active.alg !== s.alg) steps.push('create-next')
  }
  if (rows.some((k) => k.state === 'retired' && k.remove_at !== null && k.remove_at <= now)) steps.push('remove-expired')
  return steps
}

async function newKey(alg: SigningAlg, kek: Buffer): Promise<NewKey> {
  const { publicKey, privateKey } = await generate(alg)
  const kid = randomUUID()
  const der = privateKey.export({ format: 'der', type: 'pkcs8' })
  const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' }
  return { kid, alg, publicJwk, sealedPrivateKey: seal(kek, kid, der) }
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

const STATE_ORDER: Record<KeyState, number> = { active: 0, next: 1, retired: 2, removed: 3 }

function jwksOf(keys: LiveKey[]): Jwks {
  const sorted = [...keys].sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state])
  // Only public members: the stored JWK was exported from the public key.
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
