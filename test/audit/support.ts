// Shared by the audit tests: reading GET /admin/audit as an administrator does.
import { ADMIN_ID, ADMIN_SECRET, type TestServer } from '../helpers/server.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * A new admin token every time: tests move the clock past a cached one's expiry, and an emergency
 * key rotation makes it inactive.
 */
export async function freshAdminToken(srv: TestServer): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET])
  if (r.status !== 200) throw new Error(`admin token: ${r.status} ${r.text}`)
  return r.body.access_token as string
}

/** One page of GET /admin/audit with these query parameters; throws unless 200. */
export async function auditPage(srv: TestServer, query: Record<string, string> = {}): Promise<{ events: any[]; next?: string }> {
  const r = await srv.admin('GET', `/admin/audit?${new URLSearchParams({ limit: '1000', ...query })}`, undefined, await freshAdminToken(srv))
  if (r.status !== 200) throw new Error(`GET /admin/audit: ${r.status} ${r.text}`)
  return r.body
}

/**
 * The events matching `query` once `done` holds for them. Events are written in batches, about
 * once a second, so a test polls rather than reads once; after `timeoutMs` it returns what there is.
 */
export async function eventually(
  srv: TestServer,
  query: Record<string, string>,
  done: (events: any[]) => boolean,
  timeoutMs = 10_000,
): Promise<any[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { events } = await auditPage(srv, query)
    if (done(events) || Date.now() > deadline) return events
    await sleep(100)
  }
}

/** Polls until at least `n` events match `query`. */
export const atLeast = (srv: TestServer, query: Record<string, string>, n = 1) => eventually(srv, query, (e) => e.length >= n)
