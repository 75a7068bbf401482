// A real server for a test file: real database (fresh in-memory PGlite, or a fresh schema on the
// Postgres named by DATABASE_URL), real listeners on ephemeral ports, real HTTP.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { startServer, type RunningServer } from '../../src/server.js'
import type { Clock } from '../../src/clock.js'
import type { Logger } from 'pino'
import type { Test } from 'tap'

export const ADMIN_ID = 'test-admin'
export const ADMIN_SECRET = 'test-admin-secret-0123456789'

/** The backend this run tests: one switch, DATABASE_URL, for the whole suite. */
export const backend = process.env['DATABASE_URL'] ? 'postgres' : 'pglite'

interface Teardown {
  teardown(fn: () => unknown): void
}

/** A clock the test moves by hand. */
export class TestClock implements Clock {
  private t: number
  constructor(start = Date.now()) {
    this.t = start
  }
  now(): Date {
    return new Date(this.t)
  }
  advance(seconds: number): void {
    this.t += seconds * 1000
  }
}

/**
 * A database of its own for one test file: on Postgres a fresh schema, selected through
 * search_path in the returned URL; `drop` removes it. Undefined for the embedded backend.
 */
export async function isolatedDatabase(): Promise<{ url: string; drop(): Promise<void> } | undefined> {
  const base = process.env['DATABASE_URL']
  if (!base) return undefined
  const schema = `t_${randomBytes(6).toString('hex')}`
  const run = async (statement: string) => {
    const client = new pg.Client({ connectionString: base })
    await client.connect()
    try {
      await client.query(statement)
    } finally {
      await client.end()
    }
  }
  await run(`create schema ${schema}`)
  const url = new URL(base)
  url.searchParams.set('options', `-c search_path=${schema}`)
  return { url: url.toString(), drop: () => run(`drop schema if exists ${schema} cascade`) }
}

export interface HttpResult<T = any> {
  status: number
  headers: Headers
  body: T
  text: string
}

/** An answer's body: its JSON, or the text itself when it is not JSON (undefined when empty). */
export function parseBody(text: string): any {
  try {
    return text === '' ? undefined : JSON.parse(text)
  } catch {
    return text
  }
}

export async function toResult(res: Response): Promise<HttpResult> {
  const text = await res.text()
  return { status: res.status, headers: res.headers, body: parseBody(text), text }
}

export const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`

export class TestServer {
  private cachedAdminToken: string | undefined
  constructor(
    readonly running: RunningServer,
    readonly env: Record<string, string>,
  ) {}

  get url() {
    return this.running.url
  }
  get adminUrl() {
    return this.running.adminUrl
  }
  get tessera() {
    return this.running.tessera
  }
  get issuer() {
    return this.running.tessera.issuer()
  }

  /** POSTs a form to a public endpoint; `auth` is [client_id, secret] for client_secret_basic. */
  async post(path: string, form: Record<string, string | string[]> | string, auth?: [string, string], headers: Record<string, string> = {}): Promise<HttpResult> {
    const body =
      typeof form === 'string'
        ? form
        : new URLSearchParams(
            Object.entries(form).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x): [string, string] => [k, x])),
          ).toString()
    const res = await fetch(`${this.url}${path}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        ...(auth && { authorization: basic(auth[0], auth[1]) }),
        ...headers,
      },
      body,
    })
    return toResult(res)
  }

  async get(path: string, headers: Record<string, string> = {}): Promise<HttpResult> {
    return toResult(await fetch(`${this.url}${path}`, { headers }))
  }

  /** The bootstrap admin's token, fetched again once the server's clock has passed its expiry. */
  async adminToken(): Promise<string> {
    if (this.cachedAdminToken) {
      const exp = decodeJwt(this.cachedAdminToken).payload.exp as number
      if (exp * 1000 > this.tessera.clock.now().getTime() + 1000) return this.cachedAdminToken
    }
    const r = await this.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET])
    if (r.status !== 200) throw new Error(`admin token: ${r.status} ${r.text}`)
    this.cachedAdminToken = r.body.access_token as string
    return this.cachedAdminToken
  }

  /** Calls the admin API with the bootstrap admin's token (or the one given). */
  async admin(method: string, path: string, body?: unknown, token?: string | null): Promise<HttpResult> {
    const bearer = token === undefined ? await this.adminToken() : token
    const res = await fetch(`${this.adminUrl}${path}`, {
      method,
      headers: {
        ...(bearer !== null && { authorization: `Bearer ${bearer}` }),
        ...(body !== undefined && { 'content-type': 'application/json' }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    })
    return toResult(res)
  }

  /** Creates a client through the admin API; returns its id and secret. */
  async createClient(settings: Record<string, unknown> = {}): Promise<{ id: string; secret: string; auth: [string, string] }> {
    const r = await this.admin('POST', '/admin/clients', {
      name: 'test client',
      grant_types: ['password', 'client_credentials', 'refresh_token'],
      scopes: ['read', 'write'],
      ...settings,
    })
    if (r.status !== 201) throw new Error(`create client: ${r.status} ${r.text}`)
    return { id: r.body.client_id, secret: r.body.client_secret, auth: [r.body.client_id, r.body.client_secret] }
  }

  /** Creates a user through the admin API; returns its id. */
  async createUser(username: string, password: string, extra: Record<string, unknown> = {}): Promise<string> {
    const r = await this.admin('POST', '/admin/users', { username, password, ...extra })
    if (r.status !== 201) throw new Error(`create user: ${r.status} ${r.text}`)
    return r.body.id
  }
}

/**
 * Starts a server for the test file and stops it (and drops its database) at teardown. `env`
 * overrides the environment the server is configured from.
 */
export async function startTestServer(
  t: Teardown,
  env: Record<string, string> = {},
  opts: { clock?: Clock; log?: Logger } = {},
): Promise<TestServer> {
  const database = await isolatedDatabase()
  const databaseUrl = database?.url
  const fullEnv: Record<string, string> = {
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    DATA_DIR: 'memory://',
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: ADMIN_ID,
    BOOTSTRAP_ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    LOG_LEVEL: process.env['TEST_LOG_LEVEL'] ?? 'silent',
    // A test file re-run with this set to false checks the per-call database path (src/view/).
    SERVE_FROM_MEMORY: process.env['TESSERA_TEST_SERVE_FROM_MEMORY'] ?? 'true',
    ...(databaseUrl !== undefined && { DATABASE_URL: databaseUrl }),
    ...env,
  }
  const config = loadConfig(fullEnv)
  const running = await startServer(config, {
    log: opts.log ?? createLogger(config.logLevel),
    ...(opts.clock !== undefined && { clock: opts.clock }),
    announce: () => undefined,
  })
  t.teardown(async () => {
    await running.close()
    await database?.drop()
  })
  return new TestServer(running, fullEnv)
}

/** Decodes a JWT's parts without verifying it. */
export function decodeJwt(token: string): { header: any; payload: any } {
  const [h, p] = token.split('.')
  return {
    header: JSON.parse(Buffer.from(h!, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p!, 'base64url').toString()),
  }
}

/** An RFC 6749 §5.2 error: this status and code, JSON, no-store, and nothing else (no stack). */
export function assertOAuthError(t: Test, r: HttpResult, status: number, error: string): void {
  t.equal(r.status, status, `status ${status}`)
  t.equal(r.body?.error, error, `error ${error}`)
  t.equal(r.headers.get('cache-control'), 'no-store')
  t.match(r.headers.get('content-type'), /application\/json/)
  t.same(Object.keys(r.body ?? {}).filter((k) => k !== 'error' && k !== 'error_description'), [], 'no other fields (no stack)')
}
