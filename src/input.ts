// What text the server accepts at all, before any of it is used. Postgres `text` cannot hold a
// NUL (a query with one fails), invalid UTF-8 and unpaired surrogates are silently turned into
// U+FFFD by every decoder on the way (so two different inputs would name one row), and an
// unbounded value costs memory, hashing and index space for nothing. Each of these is the
// client's mistake: 400 invalid_request with a description that names the value, never the
// value itself.
import { invalidRequest } from './errors.js'

/** Bounds, in bytes of UTF-8. */
export const LIMITS = {
  /** Usernames and passwords: far beyond any that a person types (see README, passwords). */
  username: 1024,
  password: 1024,
  /** Access and refresh tokens: our JWTs are under 1 KiB; a proxy's header limit is about 8 KiB. */
  token: 8192,
  /** Client ids are UUIDs, or a bootstrap id an operator chose. */
  clientId: 256,
  /** Secrets are 43 characters when generated; a bootstrap secret is chosen by an operator. */
  clientSecret: 512,
  /** A user id (a UUID), a paging cursor. */
  id: 256,
  /** The scope and resource parameters: no larger than what a token may carry. */
  scope: 8192,
  resource: 8192,
  /** grant_type, token_type_hint, limit and other short keywords. */
  keyword: 128,
  /** A parameter the server does not read: ignored (RFC 6749 §3.1), but still bounded. */
  other: 8192,
} as const

export interface TextRule {
  /** At most this many bytes of UTF-8. */
  max: number
  /**
   * Free text (a password) may hold any character but NUL; an identifier or a token may not hold
   * any C0 control character or DEL: no one types them, and they only ever come from a mistake
   * or an attack (a newline in a log line, a tab that makes two names look alike).
   */
  freeText?: boolean
}

const CONTROL = /[\x00-\x1f\x7f]/
// With the u flag a well-paired surrogate is one code point; only an unpaired one is \p{Cs}.
const LONE_SURROGATE = /\p{Cs}/u

/** Throws invalid_request unless `value` keeps the rule; `what` names it in the description. */
export function checkText(what: string, value: string, rule: TextRule): void {
  if (value.includes('\0')) throw invalidRequest(`${what} contains a NUL character`)
  if (!rule.freeText && CONTROL.test(value)) throw invalidRequest(`${what} contains a control character`)
  if (LONE_SURROGATE.test(value)) throw invalidRequest(`${what} contains an unpaired UTF-16 surrogate`)
  // length * 3 bounds the UTF-8 size of a JavaScript string, so short values are not measured.
  if (value.length * 3 > rule.max && Buffer.byteLength(value, 'utf8') > rule.max) {
    throw invalidRequest(`${what} is too long (at most ${rule.max} bytes)`)
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** The bytes as UTF-8 text; invalid_request when they are not UTF-8 (rather than U+FFFD). */
export function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    throw invalidRequest(`${what} is not valid UTF-8`)
  }
}

/**
 * Throws invalid_request unless every `%` in `text` starts a percent-encoded sequence (RFC 3986
 * §2.1) and the sequences decode to UTF-8. Lenient decoders keep `%FF` as the three characters
 * it is made of, or turn it into U+FFFD, so the difference would be lost after parsing.
 * decodeURIComponent is strict about both; the text it returns is not used.
 */
export function checkPercentEncoding(text: string, what: string): void {
  if (!text.includes('%')) return
  try {
    decodeURIComponent(text)
  } catch {
    throw invalidRequest(`${what} has a percent-encoded sequence that is not UTF-8, or a "%" without two hex digits`)
  }
}
