import type { Client } from '../clients/repository.js'
import { invalidTarget } from '../errors.js'

/** The scopes of the admin API's resource (src/http/admin.ts): what its routes ask of a token. */
export const ADMIN_SCOPES: readonly string[] = ['admin', 'metrics']

/**
 * The admin API's resource identifier (RFC 8707 §2), the only `aud` it accepts (RFC 9068 §4): the
 * issuer followed by /admin. Derived from ISSUER, which every instance shares, rather than from
 * ADMIN_URL, which names one instance's listener: a token from any instance's token endpoint
 * serves at every instance's admin API.
 */
export const adminResource = (issuer: string): string => `${issuer.replace(/\/+$/, '')}/admin`

type AudienceClient = Pick<Client, 'audiences' | 'scopes' | 'tokenEndpointAuthMethod'>

/**
 * Whether the client is one of the admin API's: a confidential client that names the admin
 * resource among its audiences, or that names no audience of its own and may ask for nothing but
 * the admin API's scopes (the first-start and bootstrap admin clients, a Prometheus client with
 * `metrics`). An app whose own API has an `admin` scope has an audience of its own, or other
 * scopes: its `admin` is never the admin API's.
 */
export function isAdminApiClient(client: AudienceClient, issuer: string): boolean {
  if (client.tokenEndpointAuthMethod === 'none') return false
  if (client.audiences.includes(adminResource(issuer))) return true
  return client.audiences.length === 0 && client.scopes.length > 0 && client.scopes.every((s) => ADMIN_SCOPES.includes(s))
}

/**
 * The `aud` of a client_credentials token (RFC 8707 §2): the resources asked for, each of which
 * the client may ask for. Without any: the admin resource when the client is one of the admin
 * API's and asked for one of its scopes (as `-d scope=admin` does); else the client's first
 * audience, else the issuer itself. The admin resource is never one audience among others: a
 * token for it and another resource could be replayed at the admin API by that other resource.
 */
export function clientAudiences(requested: readonly string[], client: AudienceClient, issuer: string, scopes: readonly string[]): string[] {
  const admin = adminResource(issuer)
  const adminClient = isAdminApiClient(client, issuer)
  if (requested.includes(admin)) {
    if (!adminClient) throw invalidTarget(`resource not allowed for this client: ${admin}`)
    if (requested.some((r) => r !== admin)) throw invalidTarget('the admin API is a resource of its own: ask for it alone')
    return [admin]
  }
  if (requested.length === 0 && adminClient && scopes.some((s) => ADMIN_SCOPES.includes(s))) return [admin]
  return resolveAudiences(requested, client.audiences, issuer)
}

/**
 * The `aud` of a token issued for a user (password): as for a client, but never the admin
 * resource. The admin API takes client_credentials tokens only: an operator's access is a client
 * of its own, kept and revoked as one, and never a user's login to an app, which users' scopes,
 * refresh tokens and the app's own secret would then stretch to the admin API.
 */
export function userAudiences(requested: readonly string[], client: AudienceClient, issuer: string): string[] {
  const admin = adminResource(issuer)
  if (requested.includes(admin)) throw invalidTarget('the admin API takes tokens of the client_credentials grant only')
  return resolveAudiences(
    requested,
    client.audiences.filter((a) => a !== admin),
    issuer,
  )
}

/**
 * The resources asked for, each of which must be one the client may ask for; without any, the
 * client's first audience, else the issuer itself.
 */
function resolveAudiences(requested: readonly string[], allowed: readonly string[], issuer: string): string[] {
  if (requested.length === 0) return allowed.length > 0 ? [allowed[0]!] : [issuer]
  const allowedSet = new Set(allowed)
  const unknown = requested.filter((r) => !allowedSet.has(r))
  if (unknown.length > 0) throw invalidTarget(`resource not allowed for this client: ${unknown.join(' ')}`)
  return [...new Set(requested)]
}
