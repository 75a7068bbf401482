import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

// Private signing keys at rest: AES-256-GCM under KEY_ENCRYPTION_KEY, with the kid as associated
// data so a sealed key copied onto another row does not open. Layout: version | nonce | tag | ct.
const VERSION = 1
const NONCE_BYTES = 12
const TAG_BYTES = 16

export function seal(kek: Buffer, kid: string, plaintext: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES)
  const cipher = createCipheriv('aes-256-gcm', kek, nonce)
  cipher.setAAD(Buffer.from(kid, 'utf8'))
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return Buffer.concat([Buffer.of(VERSION), nonce, cipher.getAuthTag(), ct])
}

/** Throws when the key is wrong or the data or its kid were tampered with. */
export function open(kek: Buffer, kid: string, sealed: Uint8Array): Buffer {
  const buf = Buffer.from(sealed)
  if (buf.length < 1 + NONCE_BYTES + TAG_BYTES || buf[0] !== VERSION) throw new Error('unknown sealed key format')
  const nonce = buf.subarray(1, 1 + NONCE_BYTES)
  const tag = buf.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + TAG_BYTES)
  const decipher = createDecipheriv('aes-256-gcm', kek, nonce)
  decipher.setAAD(Buffer.from(kid, 'utf8'))
  decipher.setAuthTag(tag)
  return Buffer.concat([decipher.update(buf.subarray(1 + NONCE_BYTES + TAG_BYTES)), decipher.final()])
}

/**
 * The key-encryption keys a server holds. It seals under `current` only; while KEY_ENCRYPTION_KEY
 * is being rotated, what was sealed under `previous` (KEY_ENCRYPTION_KEY_PREVIOUS) still opens,
 * until `tessera keys reseal` has moved every stored key onto `current`.
 */
export interface KeyEncryptionKeys {
  current: Buffer
  previous?: Buffer | undefined
}

/** Opens under the current key, else under the previous one; says which; throws when neither opens it. */
export function openEither(keys: KeyEncryptionKeys, kid: string, sealed: Uint8Array): { plaintext: Buffer; under: 'current' | 'previous' } {
  try {
    return { plaintext: open(keys.current, kid, sealed), under: 'current' }
  } catch (err) {
    if (keys.previous === undefined) throw err
    return { plaintext: open(keys.previous, kid, sealed), under: 'previous' }
  }
}
