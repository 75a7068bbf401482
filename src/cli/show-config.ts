// `tessera config`: the configuration `tessera serve` would run with, every variable with its
// effective value and where it came from, secrets masked.
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { loadConfig, redactUrl, type Config } from '../config.js'
import type { EnvFile } from '../env-file.js'

type Env = Record<string, string | undefined>

export type Source = 'environment' | '.env' | 'default'

export interface Setting {
  name: string
  /** As the variable would be written; null when unset. Secrets are masked. */
  value: string | null
  source: Source
  /** What an unset or masked value means. */
  note?: string
}

/**
 * A fingerprint of the key-encryption key: enough to tell whether two instances have the same
 * one, nothing about the key itself (32 bits of a hash of 256 random bits).
 */
export function keyFingerprint(key: Buffer): string {
  return `sha256:${createHash('sha256').update('tessera key-encryption-key fingerprint\0').update(key).digest('hex').slice(0, 8)}`
}

const MASKED = '****'

/** Every variable of the configuration (the order of .env.example), from a valid Config. */
export function settings(config: Config, env: Env, envFile: EnvFile | undefined): Setting[] {
  const fromFile = new Set(envFile?.applied ?? [])
  const source = (name: string): Source =>
    env[name] === undefined || env[name]!.trim() === '' ? 'default' : fromFile.has(name) ? '.env' : 'environment'
  const embedded = config.databaseUrl === undefined
  const memory = config.dataDir.startsWith('memory://')
  const kek = (): Pick<Setting, 'value' | 'note'> => {
    if (config.keyEncryptionKey !== undefined) return { value: MASKED, note: keyFingerprint(config.keyEncryptionKey) }
    if (memory) return { value: null, note: 'a random key, kept in memory' }
    return { value: null, note: `read from ${join(config.dataDir, 'key-encryption-key')} (made on the first start)` }
  }
  const rows: Array<[string, string | null | Pick<Setting, 'value' | 'note'>]> = [
    ['HOST', config.host],
    ['PORT', String(config.port)],
    ['ADMIN_HOST', config.adminHost],
    ['ADMIN_PORT', String(config.adminPort)],
    ['ADMIN_URL', config.adminUrl ?? { value: null, note: 'http://$ADMIN_HOST:<the port picked> (ADMIN_PORT=0)' }],
    ['ISSUER', config.issuer ?? { value: null, note: 'http://localhost:<the port picked> (PORT=0)' }],
    ['DATABASE_URL', embedded ? { value: null, note: `the embedded database in ${config.dataDir}` } : redactUrl(config.databaseUrl!)],
    ['DATABASE_LISTEN_URL', config.databaseListenUrl === undefined ? null : redactUrl(config.databaseListenUrl)],
    ['DATABASE_TIMEOUT_MS', String(config.databaseTimeoutMs)],
    ['SERVE_FROM_MEMORY', String(config.serveFromMemory)],
    ['VIEW_CLIENTS', String(config.viewBounds.clients)],
    ['VIEW_REVOCATIONS', String(config.viewBounds.revocations)],
    ['DATA_DIR', embedded ? config.dataDir : { value: config.dataDir, note: 'unused with DATABASE_URL' }],
    ['KEY_ENCRYPTION_KEY', kek()],
    [
      'KEY_ENCRYPTION_KEY_PREVIOUS',
      config.keyEncryptionKeyPrevious === undefined ? null : { value: MASKED, note: `${keyFingerprint(config.keyEncryptionKeyPrevious)}, opens only (tessera keys reseal)` },
    ],
    ['BOOTSTRAP_ADMIN_CLIENT_ID', config.bootstrapAdmin?.clientId ?? null],
    ['BOOTSTRAP_ADMIN_CLIENT_SECRET', config.bootstrapAdmin === undefined ? null : MASKED],
    ['ACCESS_TOKEN_TTL', String(config.accessTokenTtl)],
    ['REFRESH_TOKEN_TTL', String(config.refreshTokenTtl)],
    ['SIGNING_ALG', config.signingAlg],
    ['KEY_ROTATION_INTERVAL', String(config.keyRotationInterval)],
    ['JWKS_MAX_AGE', String(config.jwksMaxAge)],
    ['KEY_POLL_INTERVAL_MS', String(config.keyPollIntervalMs)],
    ['LOGIN_FREE_FAILURES', String(config.loginFreeFailures)],
    ['LOGIN_MAX_DELAY', String(config.loginMaxDelay)],
    ['LOGIN_ADDRESS_FAILURES', String(config.loginAddressFailures)],
    ['LOGIN_USER_ADDRESSES', String(config.loginUserAddresses)],
    ['THROTTLE_IPV6_PREFIX', String(config.throttleIpv6Prefix)],
    ['CLIENT_AUTH_FAILURES', String(config.clientAuthFailures)],
    ['CLIENT_AUTH_ADDRESS_FAILURES', String(config.clientAuthAddressFailures)],
    ['TRUST_PROXY', config.trustProxy.length === 0 ? null : config.trustProxy.join(',')],
    ['HASH_CONCURRENCY', String(config.hashConcurrency)],
    ['HASH_QUEUE', String(config.hashQueue)],
    ['AUDIT_RETENTION_DAYS', String(config.auditRetentionDays)],
    ['DPOP_NONCE', config.dpopNonce],
    ['DPOP_PROOF_WINDOW', String(config.dpopProofWindow)],
    ['ALLOW_INSECURE_JWKS_URI', String(config.allowInsecureJwksUri)],
    ['SHUTDOWN_TIMEOUT', String(config.shutdownTimeout)],
    [
      'WEB_CONCURRENCY',
      env['WEB_CONCURRENCY']?.trim() === 'auto' ? { value: 'auto', note: `${config.webConcurrency} workers` } : String(config.webConcurrency),
    ],
    ['LOG_LEVEL', config.logLevel],
    ['METRICS_CLIENT_SERIES', String(config.metricsClientSeries)],
    // Read by the OpenTelemetry SDK itself (src/observability/otel.ts), not by loadConfig.
    ['OTEL_EXPORTER_OTLP_ENDPOINT', env['OTEL_EXPORTER_OTLP_ENDPOINT']?.trim() || null],
  ]
  return rows.map(([name, v]) => {
    const shown = v === null || typeof v === 'string' ? { value: v } : v
    return { name, source: source(name), ...shown }
  })
}

/** `NAME=value  # source, note` lines: the shape of a .env file, so it reads like one. */
export function formatSettings(list: Setting[], envFile: EnvFile | undefined): string {
  const width = Math.max(...list.map((s) => s.name.length + 1 + (s.value ?? '').length)) + 2
  const lines = list.map((s) => {
    const left = `${s.name}=${s.value ?? ''}`
    const comment = [s.value === null && s.source === 'default' ? 'unset' : s.source, ...(s.note === undefined ? [] : [s.note])].join(': ')
    return `${left.padEnd(width)}# ${comment}\n`
  })
  const head =
    `# What \`tessera serve\` would run with here: the environment, then ${envFile === undefined ? '.env (none here)' : envFile.path}, ` +
    'then the defaults. Secrets are masked.\n'
  return head + lines.join('')
}

/** Runs `tessera config [--json]`; resolves to the exit code. */
export function runConfigCommand(args: string[], envFile: EnvFile | undefined, env: Env = process.env): number {
  const json = args.includes('--json')
  const unknown = args.filter((a) => a !== '--json')
  if (unknown.length > 0) {
    process.stderr.write(`tessera: config takes only --json, got ${unknown.join(' ')}\n`)
    return 2
  }
  const list = settings(loadConfig(env), env, envFile)
  if (json) {
    const variables = Object.fromEntries(list.map(({ name, ...rest }) => [name, rest]))
    process.stdout.write(`${JSON.stringify({ env_file: envFile?.path ?? null, variables }, null, 2)}\n`)
  } else {
    process.stdout.write(formatSettings(list, envFile))
  }
  return 0
}
