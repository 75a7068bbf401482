import type { AuditRecorder } from '../audit/events.js'
import type { Client } from '../clients/repository.js'
import type { ClientService } from '../clients/service.js'
import { invalidClient, invalidRequest, slowDown } from '../errors.js'
import type { ClientAuthThrottle } from '../throttle/client-auth.js'
import type { Params } from './params.js'

/** What authenticating a client needs. */
export interface ClientAuthDeps {
  clients: ClientService
  clientThrottle: ClientAuthThrottle
  audit: AuditRecorder
}

export interface Credentials {
  clientId: string
  secret: string
  method: 'client_secret_basic' | 'client_secret_post'
}

/** RFC 6749 §2.3.1 decodes the Basic credentials as application/x-www-form-urlencoded. */
function formDecode(value: string): string {
  return new URLSearchParams(`v=${value}`).get('v') ?? ''
}

/** client_secret_basic (RFC 7617 with the form-encoding of RFC 6749 §2.3.1); undefined if absent. */
function basicCredentials(authorization: string | undefined): Credentials | undefined {
  if (authorization === undefined) return undefined
  const match = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(authorization)
  if (match === null) throw invalidClient('malformed Authorization header')
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) throw invalidClient('Basic credentials without a colon')
  const clientId = formDecode(decoded.slice(0, colon))
  const secret = formDecode(decoded.slice(colon + 1))
  if (clientId === '' || secret === '') throw invalidClient('empty Basic credentials')
  return { clientId, secret, method: 'client_secret_basic' }
}

/**
 * The client that made this request from `address`, authenticated (RFC 6749 §2.3); else 401, or
 * 429 once failures from the address or for the client id are being throttled.
 */
export async function authenticateClient(deps: ClientAuthDeps, creds: Credentials, address: string): Promise<Client> {
  refuseDelayedAddress(deps, address)
  return checkedClient(deps, creds, address, await deps.clients.authenticate(creds.clientId, creds.secret))
}

/** 429 for an address this instance knows to be delayed, before any credentials are looked at. */
export function refuseDelayedAddress(deps: ClientAuthDeps, address: string): void {
  const wait = deps.clientThrottle.addressDelay(address)
  if (wait === undefined) return
  deps.audit.record({ type: 'client.throttled', address, clientId: null, by: 'address', retryAfter: wait })
  throw slowDown(wait, 'address delayed after failed client authentications')
}

/**
 * The client the credentials named, if they checked out (`client`, from ClientService.authenticate
 * or checkSecret); otherwise the failure is counted and answered 401, or 429 when throttled.
 */
export async function checkedClient(deps: ClientAuthDeps, creds: Credentials, address: string, client: Client | undefined): Promise<Client> {
  if (client !== undefined) return client
  const detail = `bad credentials for client ${JSON.stringify(creds.clientId)}`
  deps.audit.record({ type: 'client.authentication_failed', address, clientId: creds.clientId, method: creds.method, reason: 'invalid_credentials' })
  const throttled = await deps.clientThrottle.failed(creds.clientId, address)
  if (throttled === undefined) throw invalidClient(detail)
  deps.audit.record({ type: 'client.throttled', address, clientId: creds.clientId, by: throttled.by, retryAfter: throttled.retryAfter })
  throw slowDown(throttled.retryAfter, detail)
}

/**
 * The credentials a request presents (RFC 6749 §2.3): by client_secret_basic or
 * client_secret_post, never both (§2.3: "MUST NOT use more than one authentication method").
 * Not yet checked.
 */
export function clientCredentials(authorization: string | undefined, params: Params): Credentials {
  const basic = basicCredentials(authorization)
  const postId = params.get('client_id')
  const postSecret = params.get('client_secret')
  if (basic !== undefined && postSecret !== undefined) {
    throw invalidRequest('use one client authentication method, not both Basic and client_secret')
  }
  if (basic !== undefined && postId !== undefined && postId !== basic.clientId) {
    throw invalidRequest('client_id does not match the authenticated client')
  }
  const creds = basic ?? (postId !== undefined && postSecret !== undefined ? { clientId: postId, secret: postSecret, method: 'client_secret_post' as const } : undefined)
  if (creds === undefined) throw invalidClient('no client credentials')
  return creds
}
