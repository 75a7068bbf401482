// Password hashes made by other systems, kept as they were imported (POST /admin/users/import)
// until the user's first successful login replaces them with the server's own argon2id. Each
// format is recognised by its prefix, its parameters are bounded at import (so that an import
// cannot plant a hash whose every check ties up a core), and it is verified in constant time.
import { pbkdf2, scrypt, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'
import bcrypt from '@node-rs/bcrypt'
import argon2 from 'argon2'
import { ARGON2_OPTIONS } from './passwords.js'

const pbkdf2Async = promisify(pbkdf2)
const scryptAsync = promisify(scrypt) as (password: string, salt: Buffer, keylen: number, options: object) => Promise<Buffer>

/**
 * The most work a hash may ask of one check. A bound at the server's own argon2id (m = 19 MiB,
 * t = 2) would refuse bcrypt's default cost (10) and Django's default PBKDF2 iterations, that is
 * most real imports; so the bound is the ceiling of what those systems ship with (bcrypt 12,
 * Django 5.2's 1,000,000 PBKDF2-SHA256 rounds, scrypt's interactive 2^17·8 = 128 MiB is too much
 * memory: 16 MiB as argon2 here), about fifteen times a check of ours, paid once per user: the
 * first successful login replaces the hash. Raise them here, with care.
 */
export const IMPORT_COST_LIMITS = {
  bcryptCost: 12,
  pbkdf2Iterations: { sha1: 1_300_000, sha256: 1_000_000, sha512: 400_000 },
  /** scrypt's memory is 128·N·r bytes; its time, that times p. */
  scryptNrp: 2 ** 17,
  argon2MemoryKiB: 65_536,
  argon2MemoryTimesTime: 65_536 * 3,
  argon2Parallelism: 4,
} as const

export type HashFormat = 'argon2id' | 'argon2i' | 'bcrypt' | 'scrypt' | 'pbkdf2-sha1' | 'pbkdf2-sha256' | 'pbkdf2-sha512'

type Parsed =
  | { format: 'argon2id' | 'argon2i'; m: number; t: number; p: number; v: number }
  | { format: 'bcrypt' }
  | { format: 'scrypt'; n: number; r: number; p: number; salt: Buffer; hash: Buffer }
  | { format: 'pbkdf2-sha1' | 'pbkdf2-sha256' | 'pbkdf2-sha512'; digest: 'sha1' | 'sha256' | 'sha512'; iterations: number; salt: Buffer; hash: Buffer }

/** Thrown for a hash that is malformed, of an unknown format or above the limits; says which. */
export class HashFormatError extends Error {}

const B64 = /^[A-Za-z0-9+/.]*={0,2}$/
/** Standard base64 or passlib's "adapted" variant ('.' for '+'), padded or not. */
function b64(text: string, what: string): Buffer {
  if (!B64.test(text) || text.length === 0) throw new HashFormatError(`the ${what} is not base64`)
  return Buffer.from(text.replace(/\./g, '+'), 'base64')
}

function whole(text: string, what: string, min: number, max: number): number {
  if (!/^\d{1,10}$/.test(text)) throw new HashFormatError(`${what} is not a whole number`)
  const n = Number(text)
  if (n < min) throw new HashFormatError(`${what} is below ${min}`)
  if (n > max) throw new HashFormatError(`${what} is above the import limit (${max})`)
  return n
}

function phcParams(text: string, names: string[]): Map<string, string> {
  const params = new Map<string, string>()
  for (const part of text.split(',')) {
    const [k, v, ...rest] = part.split('=')
    if (k === undefined || v === undefined || rest.length > 0 || !names.includes(k) || params.has(k)) {
      throw new HashFormatError(`unexpected parameters "${text}"`)
    }
    params.set(k, v)
  }
  return params
}

const DIGESTS = { sha1: 'sha1', sha256: 'sha256', sha512: 'sha512' } as const

/** What the hash is, with its parameters; throws HashFormatError saying why it cannot be imported. */
export function parseHash(hash: string): Parsed {
  if (hash.length > 1024) throw new HashFormatError('the hash is too long')
  const L = IMPORT_COST_LIMITS
  let m: RegExpExecArray | null
  if ((m = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/.exec(hash)) !== null) {
    whole(m[1]!, 'bcrypt cost', 4, L.bcryptCost)
    return { format: 'bcrypt' }
  }
  if ((m = /^\$(argon2id|argon2i)\$v=(\d+)\$([^$]+)\$([^$]+)\$([^$]+)$/.exec(hash)) !== null) {
    const v = Number(m[2])
    if (v !== 19 && v !== 16) throw new HashFormatError(`argon2 version ${m[2]} is not 16 or 19`)
    const ps = phcParams(m[3]!, ['m', 't', 'p'])
    const mem = whole(ps.get('m') ?? '', 'argon2 m', 8, L.argon2MemoryKiB)
    const t = whole(ps.get('t') ?? '', 'argon2 t', 1, 1000)
    const p = whole(ps.get('p') ?? '', 'argon2 p', 1, L.argon2Parallelism)
    if (mem * t > L.argon2MemoryTimesTime) throw new HashFormatError(`argon2 m·t is above the import limit (${L.argon2MemoryTimesTime})`)
    b64(m[4]!, 'salt')
    if (b64(m[5]!, 'hash').length < 16) throw new HashFormatError('the argon2 hash is shorter than 16 bytes')
    return { format: m[1] as 'argon2id' | 'argon2i', m: mem, t, p, v }
  }
  if ((m = /^\$scrypt\$([^$]+)\$([^$]+)\$([^$]+)$/.exec(hash)) !== null) {
    const ps = phcParams(m[1]!, ['ln', 'r', 'p'])
    const ln = whole(ps.get('ln') ?? '', 'scrypt ln', 1, 30)
    const r = whole(ps.get('r') ?? '', 'scrypt r', 1, 1024)
    const p = whole(ps.get('p') ?? '', 'scrypt p', 1, 1024)
    if (2 ** ln * r * p > L.scryptNrp) throw new HashFormatError(`scrypt N·r·p is above the import limit (${L.scryptNrp})`)
    const out = b64(m[3]!, 'hash')
    if (out.length < 16) throw new HashFormatError('the scrypt hash is shorter than 16 bytes')
    return { format: 'scrypt', n: 2 ** ln, r, p, salt: b64(m[2]!, 'salt'), hash: out }
  }
  // passlib's $pbkdf2[-sha256|-sha512]$rounds$salt$hash (adapted base64), or i=rounds (PHC style).
  if ((m = /^\$pbkdf2(?:-(sha256|sha512|sha1))?\$(?:i=)?([^$]+)\$([^$]+)\$([^$]+)$/.exec(hash)) !== null) {
    const digest = DIGESTS[(m[1] ?? 'sha1') as keyof typeof DIGESTS]
    const iterations = whole(m[2]!, 'PBKDF2 iterations', 1000, L.pbkdf2Iterations[digest])
    const out = b64(m[4]!, 'hash')
    if (out.length < 16) throw new HashFormatError('the PBKDF2 hash is shorter than 16 bytes')
    return { format: `pbkdf2-${digest}`, digest, iterations, salt: b64(m[3]!, 'salt'), hash: out }
  }
  // Django: algorithm$iterations$salt$base64(hash), the salt used as it is written.
  if ((m = /^pbkdf2_(sha256|sha1)\$([^$]+)\$([^$]+)\$([^$]+)$/.exec(hash)) !== null) {
    const digest = DIGESTS[m[1] as 'sha1' | 'sha256']
    const iterations = whole(m[2]!, 'PBKDF2 iterations', 1000, L.pbkdf2Iterations[digest])
    const out = b64(m[4]!, 'hash')
    if (out.length < 16) throw new HashFormatError('the PBKDF2 hash is shorter than 16 bytes')
    return { format: `pbkdf2-${digest}`, digest, iterations, salt: Buffer.from(m[3]!, 'utf8'), hash: out }
  }
  throw new HashFormatError(
    'unknown hash format: bcrypt ($2a$, $2b$, $2y$), argon2id or argon2i (PHC), scrypt (PHC), PBKDF2 ($pbkdf2-sha256$…, pbkdf2_sha256$…) are accepted',
  )
}

/**
 * Whether the hash is the server's own: argon2id with today's parameters. Anything else is
 * replaced at the user's next successful login.
 */
export function isCurrentHash(hash: string): boolean {
  const m = /^\$argon2id\$v=19\$([^$]+)\$/.exec(hash)
  if (m === null) return false
  // The argon2 package writes m, p, t in that order; others write m, t, p.
  const params = m[1]!.split(',').sort().join(',')
  const o = ARGON2_OPTIONS
  return params === `m=${o.memoryCost},p=${o.parallelism},t=${o.timeCost}`
}

/** Checks a password against a hash of any accepted format; false for a malformed hash. */
export async function verifyHash(hash: string, password: string): Promise<boolean> {
  if (hash.startsWith('$argon2')) return argon2.verify(hash, password).catch(() => false)
  let parsed: Parsed
  try {
    parsed = parseHash(hash)
  } catch {
    return false
  }
  switch (parsed.format) {
    case 'bcrypt':
      // $2y$ (PHP) is $2b$ by another name; the library knows $2a$ and $2b$.
      return bcrypt.verify(password, hash.replace(/^\$2y\$/, '$2b$')).catch(() => false)
    case 'scrypt': {
      const { n, r, p, salt } = parsed
      const out = await scryptAsync(password, salt, parsed.hash.length, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 })
      return timingSafeEqual(out, parsed.hash)
    }
    case 'argon2id':
    case 'argon2i':
      return false
    default: {
      const out = await pbkdf2Async(password, parsed.salt, parsed.iterations, parsed.hash.length, parsed.digest)
      return timingSafeEqual(out, parsed.hash)
    }
  }
}
