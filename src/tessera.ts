import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { AuditService } from './audit/service.js'
import { DEFAULT_REMOTE_JWKS, RemoteJwks } from './clients/jwks-uri.js'
import { ClientService } from './clients/service.js'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import type { DatabaseHandle } from './db/connect.js'
import type { Database } from './db/schema.js'
import { KeyManager } from './keys/manager.js'
import { Metrics } from './metrics.js'
import { ClientAssertions } from './oauth/client-assertion.js'
import { Dpop } from './oauth/dpop.js'
import type { OAuthServices } from './oauth/grants/grant.js'
import { ReplayGuard } from './replay/guard.js'
import { AccessTokens } from './tokens/access-tokens.js'
import { tokenRepository } from './tokens/repository.js'
import { TokenService } from './tokens/service.js'
import { TokenStatus } from './tokens/status.js'
import { PasswordHasher } from './users/passwords.js'
import { HashQueue } from './users/hash-queue.js'
import { UserService } from './users/service.js'
import { ClientAuthThrottle } from './throttle/client-auth.js'
import { LoginThrottle } from './throttle/login.js'
import { throttleStore } from './throttle/store.js'
import { changeRepository, type ChangeWriter } from './view/changes.js'
import { ChangeFeed } from './view/feed.js'
import { MemoryView } from './view/view.js'
import { noTracing, type Tracing } from './tracing.js'

/** Every service of one server instance, wired once; the HTTP layer only calls into these. */
export interface Tessera extends OAuthServices {
  config: Config
  db: Kysely<Database>
  clock: Clock
  log: Logger
  keys: KeyManager
  accessTokens: AccessTokens
  status: TokenStatus
  metrics: Metrics
  tracing: Tracing
  view: MemoryView
  feed: ChangeFeed
  /** Security events: `audit.record(event)` (src/audit/events.ts). */
  audit: AuditService
  /** What GET /readyz answers: the database reachable and a signing key loaded. */
  readiness(): Promise<{ database: boolean; signingKey: boolean; ready: boolean }>
  /** The admin API's URL as its callers reach it (ADMIN_URL): what its DPoP proofs name. */
  adminUrl(): string
  /** Starts the key schedule and housekeeping. */
  start(): Promise<void>
  /**
   * Stops the schedules, waiting for a key tick under way, then writes the audit events still
   * pending, so the database can close after.
   */
  stop(): Promise<void>
}

// Expired deny-list entries, grants, refresh tokens, old login failures, old changes, audit
// events past their retention and jtis past their use are deleted this often. Idempotent, so every instance may do it.
const HOUSEKEEPING_INTERVAL_MS = 60_000
// Changes are kept this long for instances that missed their notifications; one further behind
// reloads its whole view.
const CHANGE_RETENTION_SECONDS = 3600

export function createTessera(opts: {
  config: Config
  database: Pick<DatabaseHandle, 'db' | 'openFeedConnection' | 'poolStats'>
  clock: Clock
  log: Logger
  keyEncryptionKey: Buffer
  /** KEY_ENCRYPTION_KEY_PREVIOUS: during a rotation, what was sealed or derived under it still opens. */
  previousKeyEncryptionKey?: Buffer | undefined
  tracing?: Tracing
  /** The issuer; a function because with PORT=0 it is known only once the server listens. */
  issuer: () => string
  /** ADMIN_URL; a function for the same reason, with ADMIN_PORT=0. */
  adminUrl: () => string
}): Tessera {
  const { config, clock, log } = opts
  const tracing = opts.tracing ?? noTracing
  const { db } = opts.database
  const view = new MemoryView(config.viewBounds)
  const metrics = new Metrics(config.metricsClientSeries)
  const audit = new AuditService(db, clock, log.child({ component: 'audit' }), metrics, {
    retentionDays: config.auditRetentionDays,
    keyEncryptionKey: opts.keyEncryptionKey,
  })
  // The feed needs the key manager (to reload keys) and the key manager writes through the feed.
  let feed: ChangeFeed | undefined
  const changes: ChangeWriter = { write: (work) => feed!.write(work), fence: () => feed!.fence(), awaitApplied: (seq) => feed!.awaitApplied(seq) }
  const clients = new ClientService(db, clock, view, changes, { allowInsecureJwksUri: config.allowInsecureJwksUri })
  if (config.allowInsecureJwksUri) {
    log.warn(
      'ALLOW_INSECURE_JWKS_URI=true: jwks_uri may be http and may point at loopback and private addresses. ' +
        'This is for tests only: never set it in production',
    )
  }
  const replay = new ReplayGuard(db, clock)
  const assertions = new ClientAssertions(
    clock,
    replay,
    new RemoteJwks({ ...DEFAULT_REMOTE_JWKS, allowInsecure: config.allowInsecureJwksUri }),
    opts.issuer,
  )
  const dpop = new Dpop(clock, replay, {
    nonceMode: config.dpopNonce,
    window: config.dpopProofWindow,
    keyEncryptionKey: opts.keyEncryptionKey,
    previousKeyEncryptionKey: opts.previousKeyEncryptionKey,
  })
  const hasher = new PasswordHasher(
    new HashQueue(config.hashConcurrency, config.hashQueue, config.throttleIpv6Prefix),
    (operation) => metrics.passwordHashes.inc({ operation }),
    tracing,
  )
  metrics.sources.hashQueue = () => hasher.depth
  metrics.sources.hashQueueLimits = () => ({ running: config.hashConcurrency, waiting: config.hashQueue })
  metrics.sources.pool = opts.database.poolStats ?? metrics.sources.pool
  metrics.sources.auditPending = () => audit.pending
  const users = new UserService(db, clock, changes, hasher)
  const keys = new KeyManager(
    db,
    clock,
    { current: opts.keyEncryptionKey, previous: opts.previousKeyEncryptionKey },
    {
      alg: config.signingAlg,
      rotationInterval: config.keyRotationInterval,
      jwksMaxAge: config.jwksMaxAge,
      pollIntervalMs: config.keyPollIntervalMs,
      maxAccessTokenTtl: () => clients.maxAccessTokenTtl(config.accessTokenTtl),
    },
    log.child({ component: 'keys' }),
    changes,
    audit,
  )
  feed = new ChangeFeed(opts.database, db, view, keys, clock, { serveFromMemory: config.serveFromMemory }, log.child({ component: 'feed' }), tracing)
  const changeFeed = feed
  metrics.sources.view = () => view.stats
  metrics.sources.feed = () => ({ state: changeFeed.state, lag: changeFeed.lag, appliedSeq: changeFeed.appliedSeq })
  metrics.sources.keys = () => ({
    keys: keys.states(),
    rotationIntervalSeconds: config.keyRotationInterval,
    prepublishSeconds: keys.prepublishSeconds,
    now: clock.now(),
  })
  const accessTokens = new AccessTokens(keys, clock, opts.issuer)
  const tokens = new TokenService(
    db,
    clock,
    accessTokens,
    { accessTokenTtl: config.accessTokenTtl, refreshTokenTtl: config.refreshTokenTtl },
    changes,
    audit,
    (client, grantType) => metrics.tokenIssued(client.clientId, grantType),
  )
  const status = new TokenStatus(db, clock, accessTokens, keys, view)
  const loginThrottle = new LoginThrottle(db, clock, {
    pair: { delay: 'doubling', free: config.loginFreeFailures, maxDelay: config.loginMaxDelay },
    user: { delay: 'doubling', free: config.loginUserAddresses, maxDelay: config.loginMaxDelay },
    address: { delay: 'window', free: config.loginAddressFailures },
    ipv6Prefix: config.throttleIpv6Prefix,
    keyEncryptionKey: opts.keyEncryptionKey,
  })
  const clientThrottle = new ClientAuthThrottle(db, clock, {
    client: { delay: 'doubling', free: config.clientAuthFailures, maxDelay: config.loginMaxDelay },
    address: { delay: 'window', free: config.clientAuthAddressFailures },
    ipv6Prefix: config.throttleIpv6Prefix,
  })
  const readiness = async () => {
    const database = await db
      .selectNoFrom((eb) => eb.val(1).as('one'))
      .execute()
      .then(() => true)
      .catch(() => false)
    const signingKey = keys.ready
    return { database, signingKey, ready: database && signingKey }
  }
  metrics.sources.readiness = async () => (await readiness()).ready
  let housekeeping: NodeJS.Timeout | undefined
  return {
    config,
    db,
    clock,
    log,
    keys,
    clients,
    users,
    tokens,
    loginThrottle,
    clientThrottle,
    hasher,
    assertions,
    dpop,
    accessTokens,
    status,
    metrics,
    tracing,
    view,
    feed,
    audit,
    readiness,
    issuer: opts.issuer,
    adminUrl: opts.adminUrl,
    async start() {
      await Promise.all([keys.start(), hasher.prepare()])
      await feed!.start()
      audit.start()
      housekeeping = setInterval(() => {
        const now = clock.now()
        view.prune(now.getTime())
        Promise.all([
          tokenRepository.purgeExpired(db, now),
          throttleStore.purge(db, now),
          changeRepository.purge(db, CHANGE_RETENTION_SECONDS),
          audit.purge(),
          replay.purge(now),
        ]).catch((err: unknown) => log.warn({ err }, 'housekeeping failed'))
      }, HOUSEKEEPING_INTERVAL_MS)
      housekeeping.unref()
    },
    async stop() {
      if (housekeeping !== undefined) clearInterval(housekeeping)
      await feed!.stop()
      await keys.stop()
      // Last: a key tick that just finished may have recorded an event.
      await audit.stop()
    },
  }
}
