import pino, { type Logger } from 'pino'

/**
 * What is never logged: credentials in headers, and any field that carries a password, a secret
 * or a token, wherever it sits in a logged object.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  // A DPoP proof and a client assertion authenticate whoever presents them first.
  'req.headers.dpop',
  'headers.dpop',
  'dpop',
  'client_assertion',
  '*.client_assertion',
  '*.dpop',
  'password',
  'client_secret',
  'secret',
  'token',
  'access_token',
  'refresh_token',
  '*.password',
  '*.client_secret',
  '*.secret',
  '*.token',
  '*.access_token',
  '*.refresh_token',
  '*.authorization',
]

/**
 * A pino logger with redaction. By default it writes to stdout asynchronously: under load the
 * lines of many requests go out in one write instead of one system call each, and pino flushes
 * what is pending when the process exits.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    { level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    destination ?? pino.destination({ dest: 1, sync: false }),
  )
}
