import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/** A 256-bit random value, base64url: client secrets and refresh tokens. */
export const randomSecret = (): string => randomBytes(32).toString('base64url')

/**
 * SHA-256, for secrets that are themselves 256-bit random values: nobody can guess a preimage, so
 * a slow password hash would only cost time on every request.
 */
export const sha256 = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest()

/** Constant-time equality of two hashes (a length mismatch is simply unequal). */
export function hashesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}
