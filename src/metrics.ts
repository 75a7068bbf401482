import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** Prometheus metrics of one instance, served at the admin API's /metrics. */
export class Metrics {
  readonly registry = new Registry()

  /** Where gauges read their value when scraped; the services set these once wired. */
  readonly sources = {
    hashQueue: (): { running: number; waiting: number } => ({ running: 0, waiting: 0 }),
  }

  readonly tokensIssued = new Counter({
    name: 'tessera_tokens_issued_total',
    help: 'Access tokens issued, by grant type',
    labelNames: ['grant_type'] as const,
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

  readonly requestDuration = new Histogram({
    name: 'tessera_http_request_duration_seconds',
    help: 'HTTP request duration, by route and status code',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  })

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'tessera_' })
  }
}
