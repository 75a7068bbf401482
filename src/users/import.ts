// Bringing users in from another system (POST /admin/users/import): newline-delimited JSON read
// a line at a time from the request stream and answered a line at a time, so that a million users
// pass through in bounded memory. Each line stands alone: a bad one is refused with its reason and
// the rest go on.
import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { OAuthError } from '../errors.js'
import { decodeUtf8 } from '../input.js'
import { HashFormatError, parseHash } from './hash-formats.js'
import { checkNewPassword } from './password-policy.js'
import { usernameKey } from './repository.js'

/** The longest line taken: a user with a long scope list and a hash fits many times over. */
export const IMPORT_MAX_LINE_BYTES = 64 * 1024
/** Lines written per INSERT: few round trips, and little held in memory at once. */
export const IMPORT_BATCH = 200

/** One line of the answer. */
export type ImportResult =
  | { line: number; result: 'created' | 'would_create'; id: string; username: string }
  | { line: number; result: 'exists'; username: string }
  | { line: number; result: 'refused'; error: string; error_description: string }

export interface ImportLine {
  username: string
  id?: string
  scopes?: string[] | null
  disabled?: boolean
  password?: string
  password_hash?: string
}

/**
 * The lines of a byte stream, without their ends (LF or CRLF); a line longer than `max` bytes is
 * yielded as `tooLong` and skipped to its end, never held whole. Blank lines are not yielded but
 * are counted, so that line numbers match the file's.
 */
export async function* readLines(
  stream: AsyncIterable<Buffer | string>,
  max = IMPORT_MAX_LINE_BYTES,
): AsyncGenerator<{ number: number; text?: string; tooLong?: true }> {
  let parts: Buffer[] = []
  let size = 0
  let skipping = false
  let number = 0
  function* end(): Generator<{ number: number; text?: string; tooLong?: true }> {
    number++
    if (skipping) yield { number, tooLong: true }
    else {
      const bytes = Buffer.concat(parts, size)
      // Strictly UTF-8, as every JSON body is (src/http/parsers.ts): bytes that are not stay refused.
      let text: string
      try {
        text = decodeUtf8(bytes, 'the line').replace(/\r$/, '')
      } catch {
        text = '\uFFFD'
      }
      if (text.trim() !== '') yield { number, text }
    }
    parts = []
    size = 0
    skipping = false
  }
  for await (const chunk of stream) {
    let buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    for (;;) {
      const nl = buf.indexOf(0x0a)
      const piece = nl === -1 ? buf : buf.subarray(0, nl)
      if (!skipping) {
        if (size + piece.length > max) {
          skipping = true
          parts = []
          size = 0
        } else {
          // Copied: a slice would keep the whole chunk alive.
          parts.push(Buffer.from(piece))
          size += piece.length
        }
      }
      if (nl === -1) break
      yield* end()
      buf = buf.subarray(nl + 1)
    }
  }
  if (size > 0 || skipping) yield* end()
}

export interface ImportOptions {
  dryRun: boolean
  /** Checks a parsed line as POST /admin/users checks its body; the reason, or undefined. */
  validate(value: unknown): string | undefined
  /** The server's own hash of a plain password, waiting for a place in the hash queue. */
  hash(password: string): Promise<string>
}

interface Ready {
  line: number
  id: string
  username: string
  key: string
  passwordHash: string
  scopes: string[] | null
  disabled: boolean
}

const refused = (line: number, err: unknown): ImportResult => {
  if (err instanceof OAuthError) {
    return { line, result: 'refused', error: err.code, error_description: err.description ?? err.code }
  }
  if (err instanceof HashFormatError) {
    return { line, result: 'refused', error: 'invalid_request', error_description: `password_hash: ${err.message}` }
  }
  throw err
}

/** Users imported from `lines`, one result per line, in order; a batch is written at a time. */
export async function* importUsers(
  db: Kysely<Database>,
  clock: Clock,
  lines: AsyncIterable<{ number: number; text?: string; tooLong?: true }>,
  opts: ImportOptions,
): AsyncGenerator<ImportResult> {
  let batch: Ready[] = []
  // Results of a batch are given in line order, so refusals wait for the batch's writes.
  let pending: ImportResult[] = []
  const flush = async function* () {
    const written = batch.length === 0 ? new Map<number, string>() : await writeBatch(db, clock, batch, opts.dryRun)
    const byLine = new Map<number, ImportResult>()
    for (const u of batch) {
      const id = written.get(u.line)
      byLine.set(
        u.line,
        id !== undefined
          ? { line: u.line, result: opts.dryRun ? 'would_create' : 'created', id, username: u.username }
          : { line: u.line, result: 'exists', username: u.username },
      )
    }
    for (const r of pending) byLine.set(r.line, r)
    yield* [...byLine.values()].sort((a, b) => a.line - b.line)
    batch = []
    pending = []
  }
  for await (const { number, text, tooLong } of lines) {
    try {
      if (tooLong) throw new OAuthError('invalid_request', `the line is longer than ${IMPORT_MAX_LINE_BYTES} bytes`)
      batch.push(await prepare(number, text ?? '', opts))
    } catch (err) {
      pending.push(refused(number, err))
    }
    if (batch.length + pending.length >= IMPORT_BATCH) yield* flush()
  }
  yield* flush()
}

async function prepare(line: number, text: string, opts: ImportOptions): Promise<Ready> {
  if (text === '\uFFFD') throw new OAuthError('invalid_request', 'the line is not valid UTF-8')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new OAuthError('invalid_request', 'the line is not JSON')
  }
  const reason = opts.validate(value)
  if (reason !== undefined) throw new OAuthError('invalid_request', reason)
  const u = value as ImportLine
  if ((u.password === undefined) === (u.password_hash === undefined)) {
    throw new OAuthError('invalid_request', 'give either password or password_hash')
  }
  let passwordHash: string
  if (u.password_hash !== undefined) {
    parseHash(u.password_hash)
    passwordHash = u.password_hash
  } else {
    checkNewPassword(u.username, u.password!)
    passwordHash = opts.dryRun ? '' : await opts.hash(u.password!)
  }
  return {
    line,
    id: u.id?.toLowerCase() ?? randomUUID(),
    username: u.username,
    key: usernameKey(u.username),
    passwordHash,
    scopes: u.scopes ?? null,
    disabled: u.disabled ?? false,
  }
}

/** Inserts the batch, skipping users whose username or id exists; line → id of those written. */
async function writeBatch(db: Kysely<Database>, clock: Clock, batch: Ready[], dryRun: boolean): Promise<Map<number, string>> {
  const written = new Map<number, string>()
  if (dryRun) {
    const existing = await db
      .selectFrom('users')
      .select(['id', 'username_key'])
      .where((eb) => eb.or([eb('username_key', 'in', batch.map((u) => u.key)), eb('id', 'in', batch.map((u) => u.id))]))
      .execute()
    const keys = new Set(existing.map((r) => r.username_key))
    const ids = new Set(existing.map((r) => r.id))
    for (const u of batch) {
      if (keys.has(u.key) || ids.has(u.id)) continue
      keys.add(u.key)
      ids.add(u.id)
      written.set(u.line, u.id)
    }
    return written
  }
  const now = clock.now()
  const rows = await db
    .insertInto('users')
    .values(
      batch.map((u) => ({
        id: u.id,
        username: u.username,
        username_key: u.key,
        password_hash: u.passwordHash,
        scopes: u.scopes,
        disabled: u.disabled,
        created_at: now,
        updated_at: now,
      })),
    )
    // Any unique column: a username or an id already there (or earlier in the batch) is skipped.
    .onConflict((oc) => oc.doNothing())
    .returning(['id'])
    .execute()
  const ids = new Set(rows.map((r) => r.id))
  for (const u of batch) {
    if (ids.has(u.id)) {
      written.set(u.line, u.id)
      ids.delete(u.id)
    }
  }
  return written
}
