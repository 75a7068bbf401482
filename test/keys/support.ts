// Shared by the key manager's tests: what a resource server does with /jwks, and what the admin
// API says about keys.
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import type { KeyInfo } from '../../src/keys/manager.js'
import { ADMIN_ID, ADMIN_SECRET, type TestServer } from '../helpers/server.js'

/** RFC 7518 §6.2.2, §6.3.2, §6.4 and RFC 8037 §2: the members that carry private key material. */
export const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/** Every property named like a private JWK member, at any depth. */
export function privateMembersIn(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(privateMembersIn)
  if (value === null || typeof value !== 'object') return []
  return Object.entries(value).flatMap(([name, v]) => [...(PRIVATE_MEMBERS.includes(name) ? [name] : []), ...privateMembersIn(v)])
}

/**
 * A new admin token every time: tests move the clock past the cached one's expiry, and an
 * emergency rotation makes it inactive.
 */
export async function adminToken(srv: TestServer): Promise<string> {
  const r = await srv.post('/token', { grant_type: 'client_credentials', scope: 'admin' }, [ADMIN_ID, ADMIN_SECRET])
  if (r.status !== 200) throw new Error(`admin token: ${r.status} ${r.text}`)
  return r.body.access_token as string
}

export async function listKeys(srv: TestServer): Promise<KeyInfo[]> {
  const r = await srv.admin('GET', '/admin/keys', undefined, await adminToken(srv))
  if (r.status !== 200) throw new Error(`list keys: ${r.status} ${r.text}`)
  return r.body.keys as KeyInfo[]
}

export async function rotate(srv: TestServer, immediate = false): Promise<KeyInfo> {
  const r = await srv.admin('POST', `/admin/keys/rotate${immediate ? '?immediate=true' : ''}`, undefined, await adminToken(srv))
  if (r.status !== 200) throw new Error(`rotate: ${r.status} ${r.text}`)
  return r.body as KeyInfo
}

export async function jwks(srv: TestServer): Promise<JSONWebKeySet> {
  const r = await srv.get('/jwks')
  if (r.status !== 200) throw new Error(`jwks: ${r.status} ${r.text}`)
  return r.body as JSONWebKeySet
}

export const kidsOf = (set: JSONWebKeySet): string[] => set.keys.map((k) => k.kid!).sort()

/** What a resource server does: verify against the /jwks it just fetched (RFC 9068 §4). */
export async function verifyAgainstJwks(srv: TestServer, token: string, now?: Date) {
  return jwtVerify(token, createLocalJWKSet(await jwks(srv)), {
    issuer: srv.issuer,
    typ: 'at+jwt',
    ...(now !== undefined && { currentDate: now }),
  })
}

/** The number of active keys, straight from the table. */
export async function activeKeys(srv: TestServer): Promise<number> {
  const rows = await srv.tessera.db.selectFrom('signing_keys').select('kid').where('state', '=', 'active').execute()
  return rows.length
}

export async function storedPrivateKey(srv: TestServer, kid: string): Promise<Uint8Array | null> {
  const row = await srv.tessera.db.selectFrom('signing_keys').select('private_key').where('kid', '=', kid).executeTakeFirstOrThrow()
  return row.private_key
}
