import { invalidScope } from '../errors.js'

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), joined by spaces.
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/

export const isScopeToken = (s: string): boolean => SCOPE_TOKEN.test(s)

/** The scopes a `scope` parameter asks for, without repeats; undefined when it is absent. */
export function parseScope(param: string | undefined): string[] | undefined {
  if (param === undefined) return undefined
  const scopes = param.split(' ').filter((s) => s !== '')
  const bad = scopes.find((s) => !isScopeToken(s))
  if (bad !== undefined) throw invalidScope(`"${bad}" is not a valid scope token`)
  return [...new Set(scopes)]
}

/**
 * The scopes a token gets: what was asked for, which must all be allowed (never silently
 * narrowed), or everything allowed when nothing was asked for.
 */
export function grantScopes(requested: string[] | undefined, allowed: readonly string[]): string[] {
  if (requested === undefined) return [...allowed]
  const allowedSet = new Set(allowed)
  const beyond = requested.filter((s) => !allowedSet.has(s))
  if (beyond.length > 0) throw invalidScope(`scope not allowed: ${beyond.join(' ')}`)
  return requested
}

/** What a client may ask for on behalf of a user: the user's scopes, when set, narrow the client's. */
export function allowedForUser(clientScopes: readonly string[], userScopes: readonly string[] | null): string[] {
  if (userScopes === null) return [...clientScopes]
  const user = new Set(userScopes)
  return clientScopes.filter((s) => user.has(s))
}
