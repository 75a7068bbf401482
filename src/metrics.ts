import cluster from 'node:cluster'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { clusterMetrics, shareMetrics } from './cluster.js'
import type { AuditEvent } from './audit/events.js'

// Every metric is listed, with its labels and meaning, in the README's Metrics table; the
// dashboard (deploy/grafana/tessera.json) and the alerts (deploy/prometheus/alerts.yml) use only
// names declared here, which test/ops/deploy.test.ts checks against a running server.

/** A connection pool's occupancy (pg.Pool); the embedded database has no pool. */
export interface PoolStats {
  /** Connections open, idle or in use. */
  total: number
  idle: number
  /** Queries waiting for a connection. */
  waiting: number
  max: number
}

/** What the change feed says of itself (src/view/feed.ts). */
export interface FeedStats {
  state: 'leased' | 'behind' | 'disconnected' | 'off' | 'stopped'
  lag: number
  appliedSeq: number
}

export const FEED_STATES: readonly FeedStats['state'][] = ['leased', 'behind', 'disconnected', 'off', 'stopped']

export const VIEW_SETS = ['clients', 'users', 'denied_jtis', 'revoked_grants'] as const
export type ViewSet = (typeof VIEW_SETS)[number]

/** What the in-memory view holds, by set, and the most it will hold (src/view/view.ts). */
export interface ViewStats {
  entries: Record<ViewSet, number>
  limits: Record<ViewSet, number>
}

/** A live signing key's state and since when it has been in it. */
export interface KeyStats {
  keys: Array<{ state: 'next' | 'active' | 'retired'; since: Date }>
  rotationIntervalSeconds: number
  prepublishSeconds: number
  now: Date
}

const KEY_STATES = ['next', 'active', 'retired'] as const

/**
 * How many client ids get series of their own in tessera_tokens_issued_by_client_total unless
 * METRICS_CLIENT_SERIES says otherwise; tokens of any client beyond them count as client_id="other".
 */
export const DEFAULT_CLIENT_SERIES = 100

/** The label value of every client id past the bound. */
export const OTHER_CLIENT = 'other'

// A reason label holds short codes chosen by our own code; anything else would be a new series.
const REASON = /^[a-z0-9_]{1,40}$/

/** The `reason` label of a security event: what distinguishes events of one type on a dashboard. */
export function eventReason(event: AuditEvent): string {
  let reason: string | undefined
  switch (event.type) {
    case 'login.failed':
    case 'client.authentication_failed':
      reason = event.reason
      break
    case 'login.throttled':
    case 'client.throttled':
      reason = event.by
      break
    case 'refresh_token.reused':
      reason = event.concurrent ? 'concurrent' : 'replayed'
      break
    case 'token.revoked':
      reason = event.via
      break
    case 'key.created':
      reason = event.state
      break
    case 'key.rotated':
      reason = event.immediate ? 'immediate' : 'scheduled'
      break
    default:
      reason = undefined
  }
  if (reason === undefined) return 'none'
  return REASON.test(reason) ? reason : 'other'
}

/** Prometheus metrics of one instance, served at the admin API's /metrics. */
export class Metrics {
  readonly registry = new Registry()

  /** Where gauges read their value when scraped; the services set these once wired. */
  readonly sources = {
    hashQueue: (): { running: number; waiting: number } => ({ running: 0, waiting: 0 }),
    hashQueueLimits: (): { running: number; waiting: number } => ({ running: 0, waiting: 0 }),
    /** Undefined on the embedded database, which has one session and no pool. */
    pool: (): PoolStats | undefined => undefined,
    feed: (): FeedStats | undefined => undefined,
    view: (): ViewStats | undefined => undefined,
    keys: (): KeyStats | undefined => undefined,
    /** The same checks as GET /readyz. */
    readiness: async (): Promise<boolean> => false,
    auditPending: (): number => 0,
  }

  readonly tokensIssued = new Counter({
    name: 'tessera_tokens_issued_total',
    help: 'Access tokens issued, by grant type',
    labelNames: ['grant_type'] as const,
    registers: [this.registry],
  })

  readonly tokensIssuedByClient = new Counter({
    name: 'tessera_tokens_issued_by_client_total',
    help: `Access tokens issued, by client and grant type; client ids past the first METRICS_CLIENT_SERIES this process has seen are counted as client_id="${OTHER_CLIENT}"`,
    labelNames: ['client_id', 'grant_type'] as const,
    registers: [this.registry],
  })

  readonly oauthErrors = new Counter({
    name: 'tessera_oauth_errors_total',
    help: 'Error responses, by error code',
    labelNames: ['error'] as const,
    registers: [this.registry],
  })

  readonly introspections = new Counter({
    name: 'tessera_introspections_total',
    help: 'Introspection answers, by whether the token was active',
    labelNames: ['active'] as const,
    registers: [this.registry],
  })

  readonly revocations = new Counter({
    name: 'tessera_revocation_requests_total',
    help: 'Revocation requests answered',
    registers: [this.registry],
  })

  readonly securityEvents = new Counter({
    name: 'tessera_security_events_total',
    help: 'Security events recorded (the audit trail), by type and reason: failed and throttled logins, failed client authentications, revocations, key changes, admin changes',
    labelNames: ['type', 'reason'] as const,
    registers: [this.registry],
  })

  readonly passwordHashes = new Counter({
    name: 'tessera_password_hashes_total',
    help: 'argon2 work done, by operation (verify: a password checked at login; hash: a password set)',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  })

  readonly hashQueue = new Gauge({
    name: 'tessera_password_hash_queue',
    help: 'argon2 hashes running and waiting in the bounded queue',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const { running, waiting } = this.sources.hashQueue()
      this.hashQueue.set({ state: 'running' }, running)
      this.hashQueue.set({ state: 'waiting' }, waiting)
    },
  })

  readonly hashQueueLimit = new Gauge({
    name: 'tessera_password_hash_queue_limit',
    help: 'The bounds of the argon2 queue: how many hashes may run together (HASH_CONCURRENCY) and how many may wait (HASH_QUEUE)',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const { running, waiting } = this.sources.hashQueueLimits()
      this.hashQueueLimit.set({ state: 'running' }, running)
      this.hashQueueLimit.set({ state: 'waiting' }, waiting)
    },
  })

  readonly poolConnections = new Gauge({
    name: 'tessera_db_pool_connections',
    help: 'Connections of the Postgres pool, by state (idle, in_use); not reported on the embedded database',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const pool = this.sources.pool()
      if (pool === undefined) return
      this.poolConnections.set({ state: 'idle' }, pool.idle)
      this.poolConnections.set({ state: 'in_use' }, pool.total - pool.idle)
    },
  })

  readonly poolMax = new Gauge({
    name: 'tessera_db_pool_max_connections',
    help: 'The most connections the Postgres pool opens',
    registers: [this.registry],
    collect: () => {
      const pool = this.sources.pool()
      if (pool !== undefined) this.poolMax.set(pool.max)
    },
  })

  readonly poolWaiting = new Gauge({
    name: 'tessera_db_pool_waiting_queries',
    help: 'Queries waiting for a connection of the Postgres pool',
    registers: [this.registry],
    collect: () => {
      const pool = this.sources.pool()
      if (pool !== undefined) this.poolWaiting.set(pool.waiting)
    },
  })

  readonly viewState = new Gauge({
    name: 'tessera_view_state',
    help: 'How this instance answers (as /readyz "view"): 1 for the current state; leased: from memory',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const feed = this.sources.feed()
      if (feed === undefined) return
      for (const state of FEED_STATES) this.viewState.set({ state }, state === feed.state ? 1 : 0)
    },
  })

  readonly feedLag = new Gauge({
    name: 'tessera_change_feed_lag',
    aggregator: 'max',
    help: 'Changes committed that this instance knows of and has not applied yet',
    registers: [this.registry],
    collect: () => {
      const feed = this.sources.feed()
      if (feed !== undefined) this.feedLag.set(feed.lag)
    },
  })

  readonly feedApplied = new Gauge({
    name: 'tessera_change_feed_applied_sequence',
    aggregator: 'min',
    help: 'Sequence number of the last change this instance applied to its view',
    registers: [this.registry],
    collect: () => {
      const feed = this.sources.feed()
      if (feed !== undefined) this.feedApplied.set(feed.appliedSeq)
    },
  })

  readonly viewEntries = new Gauge({
    name: 'tessera_view_entries',
    aggregator: 'max',
    help: 'Records the in-memory view holds, by set; at its limit, what is beyond it is read from the database',
    labelNames: ['set'] as const,
    registers: [this.registry],
    collect: () => {
      const view = this.sources.view()
      if (view !== undefined) for (const set of VIEW_SETS) this.viewEntries.set({ set }, view.entries[set])
    },
  })

  readonly viewLimits = new Gauge({
    name: 'tessera_view_entries_limit',
    aggregator: 'max',
    help: 'The most records the in-memory view holds, by set (VIEW_CLIENTS, VIEW_REVOCATIONS)',
    labelNames: ['set'] as const,
    registers: [this.registry],
    collect: () => {
      const view = this.sources.view()
      if (view !== undefined) for (const set of VIEW_SETS) this.viewLimits.set({ set }, view.limits[set])
    },
  })

  readonly signingKeys = new Gauge({
    name: 'tessera_signing_keys',
    aggregator: 'max',
    help: 'Signing keys published in /jwks, by state (next, active, retired)',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const stats = this.sources.keys()
      if (stats === undefined) return
      for (const state of KEY_STATES) this.signingKeys.set({ state }, stats.keys.filter((k) => k.state === state).length)
    },
  })

  readonly signingKeyAge = new Gauge({
    name: 'tessera_signing_key_age_seconds',
    aggregator: 'max',
    help: 'Seconds the oldest key in each state has been in it: active since it began signing, next since it was published, retired since it stopped signing',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const stats = this.sources.keys()
      if (stats === undefined) return
      this.signingKeyAge.reset()
      for (const state of KEY_STATES) {
        const since = stats.keys.filter((k) => k.state === state).map((k) => k.since.getTime())
        if (since.length > 0) this.signingKeyAge.set({ state }, Math.max(0, (stats.now.getTime() - Math.min(...since)) / 1000))
      }
    },
  })

  readonly keyRotationInterval = new Gauge({
    name: 'tessera_signing_key_rotation_interval_seconds',
    aggregator: 'first',
    help: 'KEY_ROTATION_INTERVAL: how long a key signs before the next one is published',
    registers: [this.registry],
    collect: () => {
      const stats = this.sources.keys()
      if (stats !== undefined) this.keyRotationInterval.set(stats.rotationIntervalSeconds)
    },
  })

  readonly keyPrepublish = new Gauge({
    name: 'tessera_signing_key_prepublish_seconds',
    aggregator: 'first',
    help: 'How long a new key is published before it signs (JWKS_MAX_AGE plus two key polls)',
    registers: [this.registry],
    collect: () => {
      const stats = this.sources.keys()
      if (stats !== undefined) this.keyPrepublish.set(stats.prepublishSeconds)
    },
  })

  readonly ready = new Gauge({
    name: 'tessera_ready',
    aggregator: 'min',
    help: 'Whether GET /readyz would answer 200 now (database reachable, signing key loaded): 1 or 0',
    registers: [this.registry],
    collect: async () => {
      this.ready.set((await this.sources.readiness()) ? 1 : 0)
    },
  })

  readonly auditEventsWritten = new Counter({
    name: 'tessera_audit_events_written_total',
    help: 'Audit events written to the database',
    registers: [this.registry],
  })

  readonly auditEventsDropped = new Counter({
    name: 'tessera_audit_events_dropped_total',
    help: 'Audit events dropped: the database did not take them after retries, or the buffer was full',
    registers: [this.registry],
  })

  readonly auditEventsPending = new Gauge({
    name: 'tessera_audit_events_pending',
    help: 'Audit events recorded and not yet written to the database',
    registers: [this.registry],
    collect: () => {
      this.auditEventsPending.set(this.sources.auditPending())
    },
  })

  readonly requestDuration = new Histogram({
    name: 'tessera_http_request_duration_seconds',
    help: 'HTTP request duration, by route and status code; its _count is the request count',
    labelNames: ['method', 'route', 'status'] as const,
    // Up to 10 s: DATABASE_TIMEOUT_MS (5 s) bounds a request that waits for the database.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })

  // The hot paths (client_credentials, introspection) run thousands of times a second: their
  // label sets are bound once and kept, instead of hashing a label object on every call.
  private readonly durationChildren = new Map<string, Histogram.Internal<'method' | 'route' | 'status'>>()
  private readonly grantChildren = new Map<string, Counter.Internal>()
  private readonly clientChildren = new Map<string, Counter.Internal>()
  private readonly introspectionChildren = {
    true: this.introspections.labels({ active: 'true' }),
    false: this.introspections.labels({ active: 'false' }),
  }
  private readonly eventChildren = new Map<string, Counter.Internal>()
  /** Client ids with series of their own; bounded by `clientSeries`. */
  private readonly namedClients = new Set<string>()

  constructor(private readonly clientSeries = DEFAULT_CLIENT_SERIES) {
    collectDefaultMetrics({ register: this.registry, prefix: 'tessera_' })
    shareMetrics(this.registry)
  }

  /**
   * What GET /metrics answers: this instance's metrics, or under WEB_CONCURRENCY every worker's,
   * aggregated by the primary (counters and most gauges summed; see each gauge's aggregator).
   */
  text(): Promise<string> {
    return cluster.isWorker ? clusterMetrics() : this.registry.metrics()
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${status} ${route}`
    let child = this.durationChildren.get(key)
    if (child === undefined) {
      child = this.requestDuration.labels({ method, route, status: String(status) })
      this.durationChildren.set(key, child)
    }
    child.observe(seconds)
  }

  /**
   * An access token issued to `clientId` by `grantType`. A client id gets a series of its own if
   * it is among the first `clientSeries` seen by this process; the rest share `other`. Only
   * authenticated clients get tokens, so the ids are the registry's, never a caller's invention,
   * and a label once given is kept, so every series only grows (see the README's Metrics).
   */
  tokenIssued(clientId: string, grantType: string): void {
    let byGrant = this.grantChildren.get(grantType)
    if (byGrant === undefined) {
      byGrant = this.tokensIssued.labels({ grant_type: grantType })
      this.grantChildren.set(grantType, byGrant)
    }
    byGrant.inc()
    const client = this.namedClients.has(clientId) || this.claimClientSeries(clientId) ? clientId : OTHER_CLIENT
    const key = `${grantType} ${client}`
    let byClient = this.clientChildren.get(key)
    if (byClient === undefined) {
      byClient = this.tokensIssuedByClient.labels({ client_id: client, grant_type: grantType })
      this.clientChildren.set(key, byClient)
    }
    byClient.inc()
  }

  private claimClientSeries(clientId: string): boolean {
    if (this.namedClients.size >= this.clientSeries || clientId === OTHER_CLIENT) return false
    this.namedClients.add(clientId)
    return true
  }

  introspected(active: boolean): void {
    this.introspectionChildren[active ? 'true' : 'false'].inc()
  }

  securityEvent(event: AuditEvent): void {
    const reason = eventReason(event)
    const key = `${event.type} ${reason}`
    let child = this.eventChildren.get(key)
    if (child === undefined) {
      child = this.securityEvents.labels({ type: event.type, reason })
      this.eventChildren.set(key, child)
    }
    child.inc()
  }
}
