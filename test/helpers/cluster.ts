// Talking to several Tessera processes over one database, for the cluster tests: the same calls
// as test/helpers/server.ts makes, aimed at whichever instance the test names.
import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import { spawnServer, type ServerProcess } from './process.js'
import { basic, isolatedDatabase, toResult, type HttpResult } from './server.js'

export type Credentials = [string, string]

export type Answer = HttpResult

/** An instance's public and admin base URLs: a spawned process, or anything else that listens. */
export type Instance = Pick<ServerProcess, 'url' | 'adminUrl'>

export class Cluster {
  private adminToken: string | undefined

  constructor(private readonly adminCredentials: Credentials) {}

  async post(srv: Instance, path: string, form: Record<string, string>, auth: Credentials): Promise<Answer> {
    const res = await fetch(`${srv.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(...auth) },
      body: new URLSearchParams(form).toString(),
    })
    return toResult(res)
  }

  /** A successful token response, or a thrown error. */
  async tokens(srv: Instance, form: Record<string, string>, auth: Credentials): Promise<{ access_token: string; refresh_token: string }> {
    const r = await this.post(srv, '/token', form, auth)
    if (r.status !== 200) throw new Error(`token: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body
  }

  async admin(srv: Instance, method: string, path: string, body?: unknown): Promise<Answer> {
    this.adminToken ??= (await this.tokens(srv, { grant_type: 'client_credentials', scope: 'admin' }, this.adminCredentials)).access_token
    const res = await fetch(`${srv.adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    })
    return toResult(res)
  }

  async createClient(srv: Instance, settings: Record<string, unknown>): Promise<Credentials> {
    const r = await this.admin(srv, 'POST', '/admin/clients', { name: 'cluster client', scopes: ['read'], ...settings })
    if (r.status !== 201) throw new Error(`create client: ${r.status} ${JSON.stringify(r.body)}`)
    return [r.body.client_id, r.body.client_secret]
  }

  async introspect(srv: Instance, token: string, auth: Credentials): Promise<{ active: boolean }> {
    const r = await this.post(srv, '/introspect', { token }, auth)
    if (r.status !== 200) throw new Error(`introspect: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body
  }

  async revoke(srv: Instance, token: string, auth: Credentials): Promise<void> {
    const r = await this.post(srv, '/revoke', { token }, auth)
    if (r.status !== 200) throw new Error(`revoke: ${r.status} ${JSON.stringify(r.body)}`)
  }

  /** What the instance's /readyz says of its view: 'leased' when it answers from memory. */
  async viewState(srv: Instance): Promise<string | undefined> {
    try {
      const res = await fetch(`${srv.url}/readyz`)
      return ((await res.json()) as { view?: string }).view
    } catch {
      return undefined
    }
  }

  /** Waits until the instance holds its lease; false if it did not within `ms`. */
  async leased(srv: Instance, ms = 10_000): Promise<boolean> {
    const until = Date.now() + ms
    while (Date.now() < until) {
      if ((await this.viewState(srv)) === 'leased') return true
      await new Promise((r) => setTimeout(r, 50))
    }
    return false
  }
}

/** The cluster's calls as plain functions, for tests that use many of them. */
export function bind(cluster: Cluster) {
  return {
    post: cluster.post.bind(cluster),
    tokens: cluster.tokens.bind(cluster),
    admin: cluster.admin.bind(cluster),
    createClient: cluster.createClient.bind(cluster),
    introspect: cluster.introspect.bind(cluster),
    revoke: cluster.revoke.bind(cluster),
  }
}

/** What every instance over one database shares: the database, the key encryption key, one issuer, the admin client. */
export function instanceEnv(databaseUrl: string, admin: Credentials, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BOOTSTRAP_ADMIN_CLIENT_ID: admin[0],
    BOOTSTRAP_ADMIN_CLIENT_SECRET: admin[1],
    // One issuer for all: each would otherwise name itself after its own port.
    ISSUER: 'http://tessera.cluster.test',
    ...extra,
  }
}

/**
 * `count` instances (`tessera serve` processes) over one fresh Postgres database, started one
 * after the other so that the first has migrated and made the first key; stopped, and the
 * database dropped, at teardown. Without Postgres the test file is planned empty and this
 * returns undefined.
 */
export async function startInstances(t: Test, count: number, admin: Credentials, extra: Record<string, string> = {}): Promise<ServerProcess[] | undefined> {
  const database = await isolatedDatabase()
  if (database === undefined) {
    t.plan(0, 'needs Postgres: DATABASE_URL is unset')
    return undefined
  }
  const env = instanceEnv(database.url, admin, extra)
  const instances: ServerProcess[] = []
  t.teardown(async () => {
    for (const srv of instances) {
      // One a test stopped (SIGSTOP) and did not wake must still be able to exit.
      srv.child.kill('SIGCONT')
      await srv.stop()
    }
    await database.drop()
  })
  for (let i = 0; i < count; i++) instances.push(await spawnServer(t, env))
  return instances
}
