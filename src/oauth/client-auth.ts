import type { AuditRecorder } from '../audit/events.js'
import { usesSecret, type Client } from '../clients/repository.js'
import type { ClientService } from '../clients/service.js'
import { invalidClient, invalidRequest, slowDown } from '../errors.js'
import { LIMITS, checkText } from '../input.js'
import type { ClientAuthThrottle, ClientCheck } from '../throttle/client-auth.js'
import { JWT_BEARER, type ClientAssertions } from './client-assertion.js'
import { decodeJws } from './jws.js'
import type { Params } from './params.js'

/** What authenticating a client needs. */
export interface ClientAuthDeps {
  clients: ClientService
  clientThrottle: ClientAuthThrottle
  assertions: ClientAssertions
  audit: AuditRecorder
}

/** What a request presents to say which client it is (RFC 6749 §2.3), not yet checked. */
export type Credentials =
  | { method: 'client_secret_basic' | 'client_secret_post'; clientId: string; secret: string }
  /** RFC 7523 §2.2; the client id is the assertion's sub. `claimedId`: a client_id sent with it. */
  | { method: 'private_key_jwt'; clientId: string; assertion: string; claimedId: string | undefined }
  /** A public client (RFC 6749 §2.1): its id and nothing else. */
  | { method: 'none'; clientId: string }

export type AuthMethodUsed = Credentials['method']

/** Where a client authenticates: public clients may use the token and revocation endpoints only. */
export interface AuthContext {
  /**
   * Whether `none` is accepted here. Introspection (RFC 7662 §2.1) requires authentication; RFC
   * 7009 §2.1 lets a public client revoke its own tokens with its id alone.
   */
  allowPublic: boolean
}

const AT_TOKEN_ENDPOINT: AuthContext = { allowPublic: true }

/** Why credentials did not check out: a short code for the audit and a detail for the log. */
export interface Refusal {
  reason: string
  detail: string
}

/** Whether a client id read from an assertion may be looked up, as client_id's rule has it (src/input.ts). */
function isClientIdText(id: string): boolean {
  if (id === '') return false
  try {
    checkText('sub', id, { max: LIMITS.clientId })
    return true
  } catch {
    return false
  }
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
 * 429 once failures from the address or for the client id are being throttled. `check`: the
 * throttle's leave to check, when the caller took it already (admitCheck).
 */
export async function authenticateClient(
  deps: ClientAuthDeps,
  creds: Credentials,
  address: string,
  context: AuthContext = AT_TOKEN_ENDPOINT,
  check?: ClientCheck,
): Promise<Client> {
  const admitted = check ?? (await admitCheck(deps, address))
  const result = await abandonOnError(admitted, async () => verifyCredentials(deps, await deps.clients.current(creds.clientId), creds, context))
  return checkedClient(deps, creds, address, admitted, result)
}

/**
 * The throttle's leave to check credentials from `address`, taken before anything about them is
 * looked at (src/throttle/client-auth.ts); 429 for an address that is refused.
 */
export function admitCheck(deps: ClientAuthDeps, address: string): ClientCheck | Promise<ClientCheck> {
  const admitted = deps.clientThrottle.admit(address)
  return admitted instanceof Promise ? admitted.then((a) => admittedOrRefused(deps, address, a)) : admittedOrRefused(deps, address, admitted)
}

function admittedOrRefused(deps: ClientAuthDeps, address: string, admitted: ClientCheck | number): ClientCheck {
  if (typeof admitted !== 'number') return admitted
  deps.audit.record({ type: 'client.throttled', address, clientId: null, by: 'address', retryAfter: admitted })
  throw slowDown(admitted, 'address delayed after failed client authentications')
}

/** `work`'s result; if it throws, the check is given back first (nothing was judged). */
export async function abandonOnError<T>(check: ClientCheck, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    await check.abandon()
    throw err
  }
}

/**
 * The one place where credentials are judged, for a client already loaded (`client`: undefined
 * when there is none with that id): the client if they authenticate it, else why not. A client is
 * authenticated only by the method it is registered for: a secret for a secret client (Basic or
 * in the form, either), an assertion signed with its key for a private_key_jwt client, its id
 * alone for a public client, and never a confidential client by its id alone.
 */
export async function verifyCredentials(
  deps: Pick<ClientAuthDeps, 'clients' | 'assertions'>,
  client: Client | undefined,
  creds: Credentials,
  context: AuthContext,
): Promise<Client | Refusal> {
  switch (creds.method) {
    case 'client_secret_basic':
    case 'client_secret_post': {
      // Compared in constant time, with an unknown client costing what a known one does.
      const checked = deps.clients.checkSecret(client, creds.secret)
      if (checked === undefined || !usesSecret(checked.tokenEndpointAuthMethod)) {
        return { reason: 'invalid_credentials', detail: `bad credentials for client ${JSON.stringify(creds.clientId)}` }
      }
      return checked
    }
    case 'none': {
      if (client === undefined) return { reason: 'unknown_client', detail: `no client ${JSON.stringify(creds.clientId)}` }
      if (client.tokenEndpointAuthMethod !== 'none') {
        return { reason: 'wrong_method', detail: `client ${JSON.stringify(creds.clientId)} is confidential: it sent only its id` }
      }
      if (!context.allowPublic) return { reason: 'public_client', detail: 'a public client may not use this endpoint' }
      return client
    }
    case 'private_key_jwt': {
      if (creds.claimedId !== undefined && creds.claimedId !== creds.clientId) {
        return { reason: 'wrong_issuer', detail: 'client_id is not the client the assertion names' }
      }
      if (client === undefined) return { reason: 'unknown_client', detail: `no client ${JSON.stringify(creds.clientId)}` }
      if (client.tokenEndpointAuthMethod !== 'private_key_jwt') {
        return { reason: 'wrong_method', detail: `client ${JSON.stringify(creds.clientId)} does not authenticate with private_key_jwt` }
      }
      const refused = await deps.assertions.check(client, creds.assertion)
      return refused === undefined ? client : { reason: refused.reason, detail: `client ${JSON.stringify(creds.clientId)}: ${refused.detail}` }
    }
  }
}

/**
 * The client, if the credentials checked out (`result` of verifyCredentials, made with `check`);
 * otherwise the failure is recorded and counted, and answered 401, or 429 when throttled.
 */
export async function checkedClient(
  deps: ClientAuthDeps,
  creds: Credentials,
  address: string,
  check: ClientCheck,
  result: Client | Refusal,
): Promise<Client> {
  if (!('reason' in result)) {
    await check.passed()
    return result
  }
  const clientId = creds.clientId === '' ? null : creds.clientId
  deps.audit.record({ type: 'client.authentication_failed', address, clientId, method: creds.method, reason: result.reason })
  const throttled = await check.failed(creds.clientId)
  if (throttled === undefined) throw invalidClient(result.detail)
  deps.audit.record({ type: 'client.throttled', address, clientId, by: throttled.by, retryAfter: throttled.retryAfter })
  throw slowDown(throttled.retryAfter, result.detail)
}

/**
 * The credentials a request presents (RFC 6749 §2.3): client_secret_basic, client_secret_post,
 * private_key_jwt (RFC 7521 §4.2: client_assertion and client_assertion_type, client_id optional)
 * or, with client_id alone, none; never more than one (§2.3: "MUST NOT use more than one
 * authentication method"). Not yet checked.
 */
export function clientCredentials(authorization: string | undefined, params: Params): Credentials {
  const basic = basicCredentials(authorization)
  const postId = params.get('client_id')
  const postSecret = params.get('client_secret')
  const assertion = params.get('client_assertion')
  const assertionType = params.get('client_assertion_type')
  const withAssertion = assertion !== undefined || assertionType !== undefined
  if ([basic !== undefined, postSecret !== undefined, withAssertion].filter(Boolean).length > 1) {
    throw invalidRequest('use one client authentication method, not several')
  }
  if (basic !== undefined) {
    if (postId !== undefined && postId !== basic.clientId) throw invalidRequest('client_id does not match the authenticated client')
    return basic
  }
  if (postSecret !== undefined) {
    if (postId === undefined) throw invalidClient('client_secret without client_id')
    return { clientId: postId, secret: postSecret, method: 'client_secret_post' }
  }
  if (withAssertion) {
    if (assertion === undefined) throw invalidRequest('parameter "client_assertion" is required with client_assertion_type')
    if (assertionType !== JWT_BEARER) throw invalidClient(`client_assertion_type must be ${JWT_BEARER}`)
    // RFC 7523 §3: the client is the assertion's sub (its signature is checked later, with the
    // keys of the client it names). One that names nobody is still counted, against client_id.
    const sub = decodeJws(assertion)?.payload['sub']
    return {
      method: 'private_key_jwt',
      clientId: typeof sub === 'string' && isClientIdText(sub) ? sub : (postId ?? ''),
      assertion,
      claimedId: postId,
    }
  }
  if (postId !== undefined) return { method: 'none', clientId: postId }
  throw invalidClient('no client credentials')
}
