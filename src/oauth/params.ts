import { invalidRequest } from '../errors.js'
import { LIMITS, checkText, decodeUtf8, checkPercentEncoding, type TextRule } from '../input.js'

/** The parameters RFC 8707 lets a request repeat. */
const REPEATABLE = new Set(['resource'])

/**
 * What each parameter the server reads may hold (src/input.ts). A parameter read anywhere gets a
 * rule here; any other is ignored (RFC 6749 §3.1) but still bounded by `LIMITS.other`.
 */
export const RULES: Record<string, TextRule> = {
  grant_type: { max: LIMITS.keyword },
  token_type_hint: { max: LIMITS.keyword },
  client_id: { max: LIMITS.clientId },
  client_secret: { max: LIMITS.clientSecret },
  // RFC 7521 §4.2: a JWT (RFC 7523), no larger than a token; its type is a URN.
  client_assertion: { max: LIMITS.token },
  client_assertion_type: { max: LIMITS.keyword },
  username: { max: LIMITS.username },
  password: { max: LIMITS.password, freeText: true },
  scope: { max: LIMITS.scope },
  resource: { max: LIMITS.resource },
  token: { max: LIMITS.token },
  refresh_token: { max: LIMITS.token },
}
const OTHER: TextRule = { max: LIMITS.other, freeText: true }
const NAME: TextRule = { max: LIMITS.keyword }

/** Throws invalid_request unless `value` may be the value of the parameter `name`. */
export function checkParam(name: string, value: string): void {
  checkText(`parameter "${name}"`, value, RULES[name] ?? OTHER)
}

/**
 * A form-encoded request's parameters (RFC 6749 §3.2). Every parameter but `resource` may appear
 * once (§3.1: "Request and response parameters MUST NOT be included more than once"), and one
 * sent empty counts as absent (§3.1). Every name and value is checked (src/input.ts) before
 * anything reads it.
 */
export class Params {
  private constructor(private readonly values: Map<string, string[]>) {}

  static from(body: unknown): Params {
    if (body === null || body === undefined) return new Params(new Map())
    if (typeof body !== 'object' || Array.isArray(body)) {
      throw invalidRequest('the request body must be application/x-www-form-urlencoded')
    }
    const values = new Map<string, string[]>()
    for (const [name, raw] of Object.entries(body as Record<string, unknown>)) {
      // Checked before it is quoted in a description below.
      checkText('a parameter name', name, NAME)
      const all: unknown[] = Array.isArray(raw) ? raw : [raw]
      if (all.length > 1 && !REPEATABLE.has(name)) throw invalidRequest(`parameter "${name}" is repeated`)
      const list = all.filter((v): v is string => typeof v === 'string' && v !== '')
      for (const v of list) checkParam(name, v)
      if (list.length > 0) values.set(name, list)
    }
    return new Params(values)
  }

  get(name: string): string | undefined {
    return this.values.get(name)?.[0]
  }

  all(name: string): string[] {
    return this.values.get(name) ?? []
  }

  has(name: string): boolean {
    return this.values.has(name)
  }

  required(name: string): string {
    const v = this.get(name)
    if (v === undefined) throw invalidRequest(`parameter "${name}" is required`)
    return v
  }
}

/** RFC 6749 §2.3.1: the client id and secret of a Basic header are form-encoded. */
function formDecodeCredential(name: string, encoded: string): string {
  const what = `the ${name} of the Basic credentials`
  checkPercentEncoding(encoded, what)
  const decoded = new URLSearchParams(`v=${encoded}`).get('v') ?? ''
  checkText(what, decoded, RULES[name]!)
  return decoded
}

/**
 * Checks the client id and secret of an HTTP Basic Authorization header as the form parameters
 * client_id and client_secret are checked: UTF-8 after base64, well-formed percent-encoding, no
 * NUL or control character, bounded length. A header that is not Basic, or not well-formed
 * Basic, is left to client authentication (invalid_client). Returns the decoded pair, or
 * undefined when there is none to check.
 */
export function checkBasicCredentials(authorization: string | undefined): { clientId: string; secret: string } | undefined {
  if (authorization === undefined) return undefined
  const match = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(authorization)
  if (match === null) return undefined
  const decoded = decodeUtf8(Buffer.from(match[1]!, 'base64'), 'the decoded Basic header')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  return {
    clientId: formDecodeCredential('client_id', decoded.slice(0, colon)),
    secret: formDecodeCredential('client_secret', decoded.slice(colon + 1)),
  }
}
