import type { Client } from '../clients/repository.js'
import type { ClientService } from '../clients/service.js'
import { invalidClient, invalidRequest } from '../errors.js'
import type { Params } from './params.js'

export interface Credentials {
  clientId: string
  secret: string
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
  return { clientId, secret }
}

/** The client that made this request, authenticated (RFC 6749 §2.3). */
export async function authenticateClient(clients: ClientService, creds: Credentials): Promise<Client> {
  return requireClient(creds, await clients.authenticate(creds.clientId, creds.secret))
}

/** The client the credentials named, if they checked out; otherwise invalid_client. */
export function requireClient(creds: Credentials, client: Client | undefined): Client {
  if (client === undefined) throw invalidClient(`bad credentials for client ${JSON.stringify(creds.clientId)}`)
  return client
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
  const creds = basic ?? (postId !== undefined && postSecret !== undefined ? { clientId: postId, secret: postSecret } : undefined)
  if (creds === undefined) throw invalidClient('no client credentials')
  return creds
}
