// Tracing, when it is asked for. This module imports nothing of OpenTelemetry: with no OTLP
// endpoint configured the server runs `noTracing`, whose hooks are never installed and whose
// span() only calls its argument, and no OpenTelemetry module is ever loaded (test/ops/tracing.test.ts
// checks the process's module list). With one, src/observability/otel.ts is imported here, once.
import type { FastifyInstance } from 'fastify'
import type { Dialect } from 'kysely'
import type { Logger } from 'pino'

export type SpanAttributes = Record<string, string | number | boolean>

export interface Tracing {
  readonly enabled: boolean
  /**
   * Runs `work` in a span that is a child of the current one (a request's, say). With no current
   * span it only runs `work`: background work (lease renewals, key polls, audit writes) would be
   * a stream of root traces that nobody asked for.
   */
  span<T>(name: string, attributes: SpanAttributes, work: () => Promise<T>): Promise<T>
  /** One span per request of this listener, the parent of everything done for it. */
  instrumentHttp(app: FastifyInstance, listener: string): void
  /** A dialect whose queries are spans (children of the current span only). */
  instrumentDatabase(dialect: Dialect): Dialect
  /** Sends the spans still buffered; the last step of a shutdown. */
  shutdown(): Promise<void>
}

export const noTracing: Tracing = {
  enabled: false,
  span: (_name, _attributes, work) => work(),
  instrumentHttp: () => undefined,
  instrumentDatabase: (dialect) => dialect,
  shutdown: async () => undefined,
}

type Env = Record<string, string | undefined>

const set = (env: Env, name: string) => (env[name]?.trim() ?? '') !== ''

/**
 * Whether the environment asks for traces: an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT for traces alone), unless the standard switches turn the SDK
 * or its trace exporter off.
 */
export function tracingRequested(env: Env): boolean {
  if (env['OTEL_SDK_DISABLED']?.trim().toLowerCase() === 'true') return false
  if (env['OTEL_TRACES_EXPORTER']?.trim().toLowerCase() === 'none') return false
  return set(env, 'OTEL_EXPORTER_OTLP_ENDPOINT') || set(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT')
}

/** The tracing the environment asks for; `noTracing` without loading anything when it asks for none. */
export async function startTracing(env: Env, log: Logger): Promise<Tracing> {
  if (!tracingRequested(env)) return noTracing
  const { openTelemetryTracing } = await import('./observability/otel.js')
  return openTelemetryTracing(env, log)
}
