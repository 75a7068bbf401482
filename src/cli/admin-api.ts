// The admin API as the CLI sees it: find the credentials, trade them for an `admin` token at the
// token endpoint (RFC 6749 §4.4), then call the API with it (RFC 6750 §2.1).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** An error the CLI reports in one line on stderr, exiting with `exitCode`. */
export class CliError extends Error {
  override name = 'CliError'
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message)
  }
}

/** The command line itself is wrong: the CLI prints the usage and exits 2. */
export class UsageError extends CliError {
  override name = 'UsageError'
  constructor(message: string) {
    super(message, 2)
  }
}

/** An RFC 6749 §5.2-shaped error answered by the server. */
export class ApiError extends CliError {
  override name = 'ApiError'
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string | undefined,
    context?: string,
  ) {
    super(`${context === undefined ? '' : `${context}: `}${error}${description === undefined ? '' : `: ${description}`}`)
  }
}

export interface AdminCredentials {
  clientId: string
  clientSecret: string
  /** Where they came from, named in error messages so a wrong source is easy to spot. */
  source: string
}

type Env = Record<string, string | undefined>

const nonEmpty = (v: string | undefined) => (v === undefined || v === '' ? undefined : v)

/** TESSERA_ADMIN_CLIENT_ID / _SECRET, else the file `tessera serve` writes in embedded mode. */
export function loadCredentials(env: Env = process.env): AdminCredentials {
  const id = nonEmpty(env['TESSERA_ADMIN_CLIENT_ID'])
  const secret = nonEmpty(env['TESSERA_ADMIN_CLIENT_SECRET'])
  if (id !== undefined && secret !== undefined) {
    return { clientId: id, clientSecret: secret, source: 'TESSERA_ADMIN_CLIENT_ID / TESSERA_ADMIN_CLIENT_SECRET' }
  }
  if ((id === undefined) !== (secret === undefined)) {
    throw new CliError('TESSERA_ADMIN_CLIENT_ID and TESSERA_ADMIN_CLIENT_SECRET go together: set both or neither')
  }
  const path = join(nonEmpty(env['DATA_DIR']?.trim()) ?? './data', 'admin-client.json')
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      throw new CliError(
        `no admin credentials: set TESSERA_ADMIN_CLIENT_ID and TESSERA_ADMIN_CLIENT_SECRET, or DATA_DIR to the directory holding admin-client.json (${path} does not exist)`,
      )
    }
    throw new CliError(`cannot read ${path}: ${code ?? (err as Error).message}`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new CliError(`${path} is not JSON`)
  }
  const file = (parsed ?? {}) as Record<string, unknown>
  const fileId = file['client_id']
  const fileSecret = file['client_secret']
  if (typeof fileId !== 'string' || fileId === '' || typeof fileSecret !== 'string' || fileSecret === '') {
    throw new CliError(`${path} must hold {"client_id": "…", "client_secret": "…"}`)
  }
  return { clientId: fileId, clientSecret: fileSecret, source: path }
}

// Long enough for a slow argon2 or a busy database, short enough that a script never hangs.
const REQUEST_TIMEOUT_MS = 30_000

const ADMIN_FIX =
  'start `tessera serve` (its admin API listens on ADMIN_HOST:ADMIN_PORT, default 127.0.0.1:8081), ' +
  'or pass --admin-url (or set TESSERA_ADMIN_URL) to the admin URL of a running server'
const TOKEN_FIX = 'the admin API names this token endpoint: make sure ISSUER is a URL this host reaches, or pass --token-url'

/** RFC 6749 §2.3.1: the id and secret are form-urlencoded before they go into Basic auth. */
const formEncode = (value: string) => new URLSearchParams({ v: value }).toString().slice('v='.length)

/** `fix`: what to do when nothing answers there, said as doctor says it. */
async function send(url: string, init: RequestInit, fix?: string): Promise<{ status: number; body: unknown }> {
  let res: Response
  let text: string
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
    text = await res.text()
  } catch (err) {
    throw new CliError(`cannot reach ${url}: ${networkReason(err)}${fix === undefined ? '' : ` — fix: ${fix}`}`)
  }
  if (text === '') return { status: res.status, body: undefined }
  try {
    return { status: res.status, body: JSON.parse(text) }
  } catch {
    throw new CliError(`unexpected answer from ${url}: HTTP ${res.status}, not JSON (is this a Tessera admin URL?)`)
  }
}

function networkReason(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string; errors?: { code?: string }[] } }
  if (e.name === 'TimeoutError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
  const cause = e.cause
  // undici wraps the socket error; with several addresses to try it is an AggregateError.
  const code = cause?.code ?? cause?.errors?.[0]?.code
  return code ?? (cause?.message || e.message || String(err))
}

function apiError(status: number, body: unknown, context?: string): ApiError {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>
  const error = typeof b['error'] === 'string' ? b['error'] : `HTTP ${status}`
  const description = typeof b['error_description'] === 'string' ? b['error_description'] : undefined
  return new ApiError(status, error, description, context)
}

export interface AdminApiOptions {
  adminUrl: string
  /** The token endpoint; found in the admin listener's RFC 8414 metadata when not given. */
  tokenUrl?: string | undefined
  /** Called only once a request needs a token, so `--help` and usage errors need no credentials. */
  credentials: () => AdminCredentials
}

export class AdminApi {
  private token: string | undefined
  private readonly adminUrl: string

  constructor(private readonly opts: AdminApiOptions) {
    this.adminUrl = opts.adminUrl.replace(/\/+$/, '')
  }

  /** Calls the admin API; the parsed JSON answer, undefined for 204. Throws ApiError on a 4xx/5xx. */
  async call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const token = await this.accessToken()
    const url = `${this.adminUrl}${path}`
    const r = await send(url, {
      method,
      headers: {
        accept: 'application/json',
        authorization: `Bearer ${token}`,
        ...(body !== undefined && { 'content-type': 'application/json' }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    }, ADMIN_FIX)
    if (r.status >= 400) throw apiError(r.status, r.body)
    return r.body as T
  }

  /** Gets the admin token now, so bad credentials show before anything is typed at a prompt. */
  async authenticate(): Promise<void> {
    await this.accessToken()
  }

  private async accessToken(): Promise<string> {
    if (this.token !== undefined) return this.token
    const credentials = this.opts.credentials()
    const tokenUrl = this.opts.tokenUrl ?? (await this.discoverTokenEndpoint())
    const r = await send(tokenUrl, {
      method: 'POST',
      headers: {
        accept: 'application/json',
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${formEncode(credentials.clientId)}:${formEncode(credentials.clientSecret)}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'admin' }).toString(),
    }, this.opts.tokenUrl === undefined ? TOKEN_FIX : undefined)
    const body = (r.body ?? {}) as Record<string, unknown>
    if (r.status !== 200) {
      const err = apiError(r.status, r.body, `cannot get an admin token from ${tokenUrl}`)
      if (err.error === 'invalid_client') {
        throw new CliError(`${err.message} (check the admin credentials from ${credentials.source})`)
      }
      throw err
    }
    if (typeof body['access_token'] !== 'string') throw new CliError(`${tokenUrl} answered without an access_token`)
    this.token = body['access_token']
    return this.token
  }

  private async discoverTokenEndpoint(): Promise<string> {
    const url = `${this.adminUrl}/.well-known/oauth-authorization-server`
    const r = await send(url, { headers: { accept: 'application/json' } }, ADMIN_FIX)
    if (r.status !== 200) throw apiError(r.status, r.body, `cannot read ${url}`)
    const endpoint = (r.body as Record<string, unknown> | undefined)?.['token_endpoint']
    if (typeof endpoint !== 'string') throw new CliError(`${url} names no token_endpoint (use --token-url)`)
    return endpoint
  }
}
