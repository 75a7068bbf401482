import { invalidTarget } from '../errors.js'

/**
 * The `aud` of a token (RFC 8707 §2): the resources asked for, each of which must be one the
 * client may ask for; without any, the client's first audience, else the issuer itself.
 */
export function resolveAudiences(requested: readonly string[], allowed: readonly string[], issuer: string): string[] {
  if (requested.length === 0) return allowed.length > 0 ? [allowed[0]!] : [issuer]
  const allowedSet = new Set(allowed)
  const unknown = requested.filter((r) => !allowedSet.has(r))
  if (unknown.length > 0) throw invalidTarget(`resource not allowed for this client: ${unknown.join(' ')}`)
  return [...new Set(requested)]
}
