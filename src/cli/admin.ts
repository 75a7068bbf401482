// `tessera client|user|keys …`: the admin API from the command line. Exit codes: 0 done, 1 the
// server (or the network) said no, 2 the command line is wrong.
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { AdminApi, ApiError, CliError, UsageError, loadCredentials } from './admin-api.js'
import { fields, list as joinList, printable, table, when } from './format.js'
import { readPassword } from './prompt.js'
import type { auditView } from '../audit/service.js'
import type { clientView, userView } from '../http/admin.js'
import type { KeyInfo } from '../keys/manager.js'

type Options = NonNullable<ParseArgsConfig['options']>
type Values = Record<string, string | boolean | undefined>

interface Context {
  api: AdminApi
  json: boolean
  out(text: string): void
  warn(text: string): void
}

interface Command {
  /** What follows `tessera <group> <name>` in the usage. */
  synopsis: string
  summary: string
  options?: Options
  positionals: string[]
  run(ctx: Context, values: Values, positionals: string[]): Promise<void>
}

const GLOBAL_OPTIONS: Options = {
  'admin-url': { type: 'string' },
  'token-url': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
}

const DEFAULT_ADMIN_URL = 'http://127.0.0.1:8081'

// The admin API's answers, as src/http/admin.ts writes them (types only: nothing of the server
// is loaded).
type ClientView = ReturnType<typeof clientView> & { client_secret?: string }
type UserView = ReturnType<typeof userView>
type KeyView = KeyInfo
type AuditView = ReturnType<typeof auditView> & { id: string }

// Flags

function stringFlag(values: Values, name: string): string | undefined {
  const v = values[name]
  return typeof v === 'string' ? v : undefined
}

function requiredFlag(values: Values, name: string): string {
  const v = stringFlag(values, name)
  if (v === undefined || v.trim() === '') throw new UsageError(`--${name} is required`)
  return v
}

/** A comma-separated flag as a list; `--scopes ""` is the empty list. */
function listFlag(values: Values, name: string): string[] | undefined {
  const v = stringFlag(values, name)
  if (v === undefined) return undefined
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
}

function intFlag(values: Values, name: string): number | undefined {
  const v = stringFlag(values, name)
  if (v === undefined) return undefined
  if (!/^\d{1,15}$/.test(v.trim())) throw new UsageError(`--${name} must be a whole number of seconds, got "${printable(v)}"`)
  return Number(v.trim())
}

// Output

const json = (body: unknown) => `${JSON.stringify(body, null, 2)}\n`
const ttl = (seconds: number | null) => (seconds === null ? 'server default' : `${seconds} s`)
const userScopes = (scopes: string[] | null) => (scopes === null ? "(the client's)" : joinList(scopes))
const userName = (u: UserView) => `${printable(u.username)} (${u.id})`
const segment = (id: string) => encodeURIComponent(id)

function clientFields(c: ClientView): string {
  return fields([
    ['client_id', printable(c.client_id)],
    ['name', printable(c.name)],
    ['grant_types', joinList(c.grant_types)],
    ['scopes', joinList(c.scopes)],
    ['audiences', joinList(c.audiences)],
    ['resource_identifiers', joinList(c.resource_identifiers)],
    ['access_token_ttl', ttl(c.access_token_ttl)],
    ['refresh_token_ttl', ttl(c.refresh_token_ttl)],
    ['token_endpoint_auth_method', c.token_endpoint_auth_method],
    ...(c.token_endpoint_auth_method === 'private_key_jwt'
      ? ([
          c.jwks_uri !== null ? ['jwks_uri', printable(c.jwks_uri)] : ['jwks', joinList(c.jwks?.keys.map((k, i) => printable(String(k['kid'] ?? `key ${i}`))) ?? [])],
          ['token_endpoint_auth_signing_alg', c.token_endpoint_auth_signing_alg ?? '-'],
        ] as [string, string][])
      : []),
    ['dpop_bound_access_tokens', c.dpop_bound_access_tokens ? 'yes' : 'no'],
    ['created_at', when(c.created_at)],
    ['updated_at', when(c.updated_at)],
    ...(c.client_secret !== undefined ? ([['client_secret', c.client_secret]] as [string, string][]) : []),
  ])
}

function userFields(u: UserView): string {
  return fields([
    ['id', u.id],
    ['username', printable(u.username)],
    ['status', u.disabled ? 'disabled' : 'enabled'],
    ['scopes', userScopes(u.scopes)],
    ['created_at', when(u.created_at)],
    ['updated_at', when(u.updated_at)],
  ])
}

function keyFields(k: KeyView): string {
  return fields([
    ['kid', k.kid],
    ['alg', k.alg],
    ['state', k.state],
    ['created_at', when(k.created_at)],
    ['signs_from', when(k.activated_at ?? k.activate_at)],
  ])
}

const SECRET_WARNING = 'This secret is shown only now: store it safely, it cannot be read again.\n'

// API helpers

/** Every page of a list (the API pages with `limit`, `after` and `next`). */
async function fetchAll<T>(api: AdminApi, path: string, key: string): Promise<{ items: T[] }> {
  const items: T[] = []
  let after: string | undefined
  for (;;) {
    const query = new URLSearchParams({ limit: '1000', ...(after !== undefined && { after }) })
    const page = await api.call<Record<string, unknown>>('GET', `${path}?${query}`)
    items.push(...((page[key] ?? []) as T[]))
    if (typeof page['next'] !== 'string') return { items }
    after = page['next']
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** A user named by id or by username; an id is tried first, as a username may look like one. */
async function findUser(api: AdminApi, ref: string): Promise<UserView> {
  if (UUID.test(ref)) {
    try {
      return await api.call<UserView>('GET', `/admin/users/${segment(ref)}`)
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err
    }
  }
  const found = await api.call<{ users: UserView[] }>('GET', `/admin/users?${new URLSearchParams({ username: ref })}`)
  const user = found.users[0]
  if (user === undefined) throw new CliError(`not_found: no user with id or username "${printable(ref)}"`)
  return user
}

// Commands

/** A JWK Set from a file ("-": stdin), as --jwks names it. */
function jwksFlag(values: Values): unknown {
  const path = stringFlag(values, 'jwks')
  if (path === undefined) return undefined
  let text: string
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8')
  } catch (err) {
    throw new UsageError(`--jwks: cannot read ${printable(path)}: ${(err as Error).message}`)
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new UsageError(`--jwks: ${printable(path)} is not JSON (a JWK Set: {"keys": [...]})`)
  }
}

const clientOptions: Options = {
  name: { type: 'string' },
  'grant-types': { type: 'string' },
  scopes: { type: 'string' },
  audiences: { type: 'string' },
  'resource-identifiers': { type: 'string' },
  'access-token-ttl': { type: 'string' },
  'refresh-token-ttl': { type: 'string' },
  'auth-method': { type: 'string' },
  jwks: { type: 'string' },
  'jwks-uri': { type: 'string' },
  'signing-alg': { type: 'string' },
  'dpop-bound': { type: 'boolean' },
}

const clientCommands: Record<string, Command> = {
  create: {
    synopsis:
      'create --name NAME --grant-types LIST [--scopes LIST] [--audiences LIST]\n' +
      '         [--resource-identifiers LIST] [--access-token-ttl S] [--refresh-token-ttl S]\n' +
      '         [--auth-method METHOD] [--jwks FILE | --jwks-uri URL] [--signing-alg ALG] [--dpop-bound]',
    summary:
      'register a client; prints its secret once. Grant types: password, client_credentials,\n' +
      'refresh_token. Lists are comma-separated; the first audience is the default aud.\n' +
      '--auth-method: client_secret_basic (default), client_secret_post, private_key_jwt (with\n' +
      'its public keys: --jwks, a JWK Set file or - for stdin, or --jwks-uri, https; and\n' +
      '--signing-alg, ES256 by default) or none (a public client: password and refresh_token\n' +
      'only). Those two have no secret. --dpop-bound: every token request must carry a DPoP proof.',
    options: clientOptions,
    positionals: [],
    async run(ctx, values) {
      const body = {
        name: requiredFlag(values, 'name'),
        grant_types: listFlag(values, 'grant-types') ?? [],
        scopes: listFlag(values, 'scopes') ?? [],
        audiences: listFlag(values, 'audiences'),
        resource_identifiers: listFlag(values, 'resource-identifiers'),
        access_token_ttl: intFlag(values, 'access-token-ttl'),
        refresh_token_ttl: intFlag(values, 'refresh-token-ttl'),
        token_endpoint_auth_method: stringFlag(values, 'auth-method'),
        jwks: jwksFlag(values),
        jwks_uri: stringFlag(values, 'jwks-uri'),
        token_endpoint_auth_signing_alg: stringFlag(values, 'signing-alg'),
        dpop_bound_access_tokens: values['dpop-bound'] === true ? true : undefined,
      }
      if (body.grant_types.length === 0) throw new UsageError('--grant-types is required')
      const created = await ctx.api.call<ClientView>('POST', '/admin/clients', body)
      ctx.out(ctx.json ? json(created) : clientFields(created))
      if (created.client_secret !== undefined) ctx.warn(SECRET_WARNING)
      else ctx.warn(`This client authenticates with ${created.token_endpoint_auth_method}: it has no secret.\n`)
    },
  },
  list: {
    synopsis: 'list',
    summary: 'list the clients',
    positionals: [],
    async run(ctx) {
      const { items } = await fetchAll<ClientView>(ctx.api, '/admin/clients', 'clients')
      if (ctx.json) return ctx.out(json({ clients: items }))
      if (items.length === 0) return ctx.out('no clients\n')
      return ctx.out(
        table(
          ['CLIENT_ID', 'NAME', 'GRANT_TYPES', 'SCOPES', 'AUDIENCES'],
          items.map((c) => [printable(c.client_id), printable(c.name), joinList(c.grant_types), joinList(c.scopes), joinList(c.audiences, '-')]),
        ),
      )
    },
  },
  show: {
    synopsis: 'show CLIENT_ID',
    summary: "show a client's settings (never its secret)",
    positionals: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      const client = await ctx.api.call<ClientView>('GET', `/admin/clients/${segment(id!)}`)
      ctx.out(ctx.json ? json(client) : clientFields(client))
    },
  },
  'rotate-secret': {
    synopsis: 'rotate-secret CLIENT_ID [--grace-seconds N]',
    summary: 'issue a new secret; the old one works for N more seconds (default 0: it stops now)',
    options: { 'grace-seconds': { type: 'string' } },
    positionals: ['CLIENT_ID'],
    async run(ctx, values, [id]) {
      const grace = intFlag(values, 'grace-seconds')
      const r = await ctx.api.call<{ client_secret: string }>(
        'POST',
        `/admin/clients/${segment(id!)}/secret`,
        grace === undefined ? {} : { grace_seconds: grace },
      )
      ctx.out(ctx.json ? json(r) : fields([['client_secret', r.client_secret]]))
      ctx.warn(SECRET_WARNING)
      ctx.warn(grace ? `The old secret keeps working for ${grace} s.\n` : 'The old secret no longer works.\n')
    },
  },
  delete: {
    synopsis: 'delete CLIENT_ID',
    summary: 'delete a client',
    positionals: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      await ctx.api.call('DELETE', `/admin/clients/${segment(id!)}`)
      if (!ctx.json) ctx.out(`deleted client ${printable(id!)}\n`)
    },
  },
  'revoke-tokens': {
    synopsis: 'revoke-tokens CLIENT_ID',
    summary: 'revoke every access and refresh token issued to a client',
    positionals: ['CLIENT_ID'],
    async run(ctx, _values, [id]) {
      await ctx.api.call('POST', `/admin/clients/${segment(id!)}/revoke-tokens`)
      if (!ctx.json) ctx.out(`revoked the tokens of client ${printable(id!)}\n`)
    },
  },
}

async function setDisabled(ctx: Context, ref: string, disabled: boolean): Promise<void> {
  const user = await findUser(ctx.api, ref)
  const updated = await ctx.api.call<UserView>('PATCH', `/admin/users/${segment(user.id)}`, { disabled })
  ctx.out(ctx.json ? json(updated) : `${disabled ? 'disabled' : 'enabled'} user ${userName(updated)}\n`)
}

const userCommands: Record<string, Command> = {
  create: {
    synopsis: 'create USERNAME [--scopes LIST]',
    summary:
      'create a user; the password is the first line of stdin, or typed at a prompt.\n' +
      "--scopes narrows what the user's tokens may carry (default: whatever the client allows).",
    options: { scopes: { type: 'string' } },
    positionals: ['USERNAME'],
    async run(ctx, values, [username]) {
      const scopes = listFlag(values, 'scopes')
      await ctx.api.authenticate()
      const password = await readPassword()
      const user = await ctx.api.call<UserView>('POST', '/admin/users', {
        username,
        password,
        ...(scopes !== undefined && { scopes }),
      })
      ctx.out(ctx.json ? json(user) : userFields(user))
    },
  },
  list: {
    synopsis: 'list',
    summary: 'list the users',
    positionals: [],
    async run(ctx) {
      const { items } = await fetchAll<UserView>(ctx.api, '/admin/users', 'users')
      if (ctx.json) return ctx.out(json({ users: items }))
      if (items.length === 0) return ctx.out('no users\n')
      return ctx.out(
        table(
          ['ID', 'USERNAME', 'STATUS', 'SCOPES', 'CREATED'],
          items.map((u) => [u.id, printable(u.username), u.disabled ? 'disabled' : 'enabled', userScopes(u.scopes), when(u.created_at)]),
        ),
      )
    },
  },
  show: {
    synopsis: 'show USER',
    summary: 'show a user (USER is an id or a username, here and below)',
    positionals: ['USER'],
    async run(ctx, _values, [ref]) {
      const user = await findUser(ctx.api, ref!)
      ctx.out(ctx.json ? json(user) : userFields(user))
    },
  },
  disable: {
    synopsis: 'disable USER',
    summary: 'refuse the password grant to a user',
    positionals: ['USER'],
    run: (ctx, _values, [ref]) => setDisabled(ctx, ref!, true),
  },
  enable: {
    synopsis: 'enable USER',
    summary: 'allow a disabled user again',
    positionals: ['USER'],
    run: (ctx, _values, [ref]) => setDisabled(ctx, ref!, false),
  },
  'set-password': {
    synopsis: 'set-password USER',
    summary: 'set a new password, read like the one of create',
    positionals: ['USER'],
    async run(ctx, _values, [ref]) {
      const user = await findUser(ctx.api, ref!)
      const password = await readPassword('New password')
      await ctx.api.call('POST', `/admin/users/${segment(user.id)}/password`, { password })
      if (!ctx.json) ctx.out(`password changed for user ${userName(user)}\n`)
    },
  },
  unlock: {
    synopsis: 'unlock USER',
    summary: "clear a user's failed logins and any login delay in force",
    positionals: ['USER'],
    async run(ctx, _values, [ref]) {
      const user = await findUser(ctx.api, ref!)
      await ctx.api.call('DELETE', `/admin/users/${segment(user.id)}/lockout`)
      if (!ctx.json) ctx.out(`cleared the failed logins of user ${userName(user)}\n`)
    },
  },
  'revoke-tokens': {
    synopsis: 'revoke-tokens USER',
    summary: "revoke every access and refresh token issued for a user",
    positionals: ['USER'],
    async run(ctx, _values, [ref]) {
      const user = await findUser(ctx.api, ref!)
      await ctx.api.call('POST', `/admin/users/${segment(user.id)}/revoke-tokens`)
      if (!ctx.json) ctx.out(`revoked the tokens of user ${userName(user)}\n`)
    },
  },
  delete: {
    synopsis: 'delete USER',
    summary: 'delete a user',
    positionals: ['USER'],
    async run(ctx, _values, [ref]) {
      const user = await findUser(ctx.api, ref!)
      await ctx.api.call('DELETE', `/admin/users/${segment(user.id)}`)
      if (!ctx.json) ctx.out(`deleted user ${userName(user)}\n`)
    },
  },
}

const keyCommands: Record<string, Command> = {
  list: {
    synopsis: 'list',
    summary: 'list the signing keys: next (published, not signing yet), active, retired, removed',
    positionals: [],
    async run(ctx) {
      const { keys } = await ctx.api.call<{ keys: KeyView[] }>('GET', '/admin/keys')
      if (ctx.json) return ctx.out(json({ keys }))
      if (keys.length === 0) return ctx.out('no keys\n')
      return ctx.out(
        table(
          ['KID', 'ALG', 'STATE', 'CREATED', 'SIGNS_FROM', 'RETIRED', 'REMOVED'],
          keys.map((k) => [
            k.kid,
            k.alg,
            k.state,
            when(k.created_at),
            when(k.activated_at ?? k.activate_at),
            when(k.retired_at),
            when(k.removed_at ?? k.remove_at),
          ]),
        ),
      )
    },
  },
  rotate: {
    synopsis: 'rotate [--immediate]',
    summary:
      'start a rotation: the new key is published first and signs once caches have seen it.\n' +
      '--immediate (a leaked key): the new key signs now and every other key leaves /jwks;\n' +
      'tokens they signed stop working at once.',
    options: { immediate: { type: 'boolean' } },
    positionals: [],
    async run(ctx, values) {
      const immediate = values['immediate'] === true
      const key = await ctx.api.call<KeyView>('POST', `/admin/keys/rotate${immediate ? '?immediate=true' : ''}`)
      ctx.out(ctx.json ? json(key) : keyFields(key))
      if (immediate) ctx.warn('Every other key has left /jwks: tokens they signed no longer verify.\n')
    },
  },
  reseal: {
    synopsis: 'reseal',
    summary:
      'the last step of a KEY_ENCRYPTION_KEY rotation: re-encrypt every stored private key under\n' +
      'KEY_ENCRYPTION_KEY (the server must have the old one as KEY_ENCRYPTION_KEY_PREVIOUS);\n' +
      'then KEY_ENCRYPTION_KEY_PREVIOUS can be removed',
    positionals: [],
    async run(ctx) {
      const r = await ctx.api.call<{ resealed: string[]; already_current: string[] }>('POST', '/admin/keys/reseal')
      if (ctx.json) return ctx.out(json(r))
      ctx.out(
        r.resealed.length === 0
          ? `nothing to reseal: ${r.already_current.length} stored private key(s) already under KEY_ENCRYPTION_KEY\n`
          : `resealed under KEY_ENCRYPTION_KEY: ${r.resealed.join(', ')}\n`,
      )
      ctx.out('KEY_ENCRYPTION_KEY_PREVIOUS is no longer needed for the signing keys: remove it from every instance\n')
    },
  },
}

// Security events

const AUDIT_MAX_PAGE = 1000

/** A detail value on one line: text as it is, anything else as JSON. */
const detailValue = (v: unknown) => printable(typeof v === 'string' ? v : JSON.stringify(v))

function auditRow(e: AuditView): string[] {
  const user = e.user_id === null ? '-' : e.username === null ? e.user_id : `${printable(e.username)} (${e.user_id})`
  const details = [
    ...(e.username_hash !== null && e.username === null ? [`username_hash=${e.username_hash}`] : []),
    ...Object.entries(e.details).map(([k, v]) => `${printable(k)}=${detailValue(v)}`),
  ]
  return [
    when(e.at),
    e.type,
    printable(e.address ?? '-'),
    printable(e.admin_client_id ?? '-'),
    printable(e.client_id ?? '-'),
    user,
    details.join(' ') || '-',
  ]
}

const auditCommand: Command = {
  synopsis:
    'audit [--type LIST] [--user USER] [--username NAME] [--client CLIENT_ID]\n' +
    '         [--since TIME] [--until TIME] [--limit N] [--after CURSOR]',
  summary:
    'security events, newest first: logins, client authentication failures, throttling,\n' +
    'refresh-token reuse, revocations, key changes and admin changes. --type takes a comma-\n' +
    'separated list (login.failed,admin.change,…); --user a user id or username; --username the\n' +
    'name typed at a login (known or not); --client a client id (events about it, or made by it\n' +
    'as an admin); --since/--until ISO 8601 times (2024-05-01 or 2024-05-01T12:00:00Z).\n' +
    '--limit (default 100) events at most; --after continues from the "next" of a --json answer.',
  options: {
    type: { type: 'string' },
    user: { type: 'string' },
    username: { type: 'string' },
    client: { type: 'string' },
    since: { type: 'string' },
    until: { type: 'string' },
    limit: { type: 'string' },
    after: { type: 'string' },
  },
  positionals: [],
  async run(ctx, values) {
    const limitRaw = stringFlag(values, 'limit')
    if (limitRaw !== undefined && !/^\d{1,9}$/.test(limitRaw.trim())) {
      throw new UsageError(`--limit must be a whole number, got "${printable(limitRaw)}"`)
    }
    const limit = limitRaw === undefined ? 100 : Number(limitRaw.trim())
    if (limit < 1) throw new UsageError('--limit must be 1 or more')
    const userRef = stringFlag(values, 'user')
    // An id is used as it is: the events of a deleted user are still on record.
    const userId = userRef === undefined || UUID.test(userRef) ? userRef : (await findUser(ctx.api, userRef)).id
    const filters: Record<string, string> = {}
    for (const [flag, param] of [['type', 'type'], ['username', 'username'], ['client', 'client'], ['since', 'since'], ['until', 'until']] as const) {
      const v = stringFlag(values, flag)
      if (v !== undefined) filters[param] = v
    }
    if (userId !== undefined) filters['user'] = userId
    const events: AuditView[] = []
    let after = stringFlag(values, 'after')
    let next: string | undefined
    do {
      const pageSize = Math.min(limit - events.length, AUDIT_MAX_PAGE)
      const q = new URLSearchParams({ ...filters, limit: String(pageSize), ...(after !== undefined && { after }) })
      const page = await ctx.api.call<{ events: AuditView[]; next?: string }>('GET', `/admin/audit?${q}`)
      events.push(...page.events)
      next = page.next
      after = next
    } while (next !== undefined && events.length < limit)
    if (ctx.json) return ctx.out(json({ events, ...(next !== undefined && { next }) }))
    if (events.length === 0) return ctx.out('no events\n')
    ctx.out(table(['TIME', 'TYPE', 'ADDRESS', 'ADMIN', 'CLIENT', 'USER', 'DETAILS'], events.map(auditRow)))
    if (next !== undefined) ctx.warn(`(more: --after ${next})\n`)
  },
}

const GROUPS: Record<string, { about: string; commands: Record<string, Command> }> = {
  client: { about: 'OAuth clients', commands: clientCommands },
  user: { about: 'users of the password grant', commands: userCommands },
  keys: { about: 'signing keys', commands: keyCommands },
}

function groupUsage(group: string): string {
  const { about, commands } = GROUPS[group]!
  const entries = Object.values(commands).map(
    (c) => `  tessera ${group} ${c.synopsis}\n${c.summary.replace(/^/gm, '      ')}\n`,
  )
  return (
    `usage: tessera ${group} <command> [options]   (${about})\n\n` +
    entries.join('') +
    '\noptions of every command:\n' +
    COMMON_OPTIONS_HELP
  )
}

const COMMON_OPTIONS_HELP =
  `  --admin-url URL  the admin listener (default $TESSERA_ADMIN_URL, else ${DEFAULT_ADMIN_URL})\n` +
  "  --token-url URL  the token endpoint (default: the admin listener's metadata names it)\n" +
  '  --json           print the API\'s JSON\n' +
  '  -h, --help       print this help\n' +
  '\ncredentials: TESSERA_ADMIN_CLIENT_ID and TESSERA_ADMIN_CLIENT_SECRET, else\n' +
  'DATA_DIR/admin-client.json (DATA_DIR defaults to ./data).\n'

function commandUsage(group: string, command: Command): string {
  return (
    `usage: tessera ${group} ${command.synopsis}\n` +
    `${command.summary.replace(/^/gm, '  ')}\n\n` +
    `(tessera ${group} --help lists every ${group} command and option)\n`
  )
}

function adminUrl(values: Values): string {
  const url = stringFlag(values, 'admin-url') ?? (process.env['TESSERA_ADMIN_URL'] || DEFAULT_ADMIN_URL)
  checkHttpUrl(url, '--admin-url')
  return url
}

function checkHttpUrl(value: string, name: string): void {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new UsageError(`${name} must be a URL, got "${printable(value)}"`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${name} must be an http(s) URL`)
}

const stdout = (text: string) => void process.stdout.write(text)
const stderr = (text: string) => void process.stderr.write(text)

/** Runs `tessera <group> <args…>`; resolves to the exit code. */
export async function runAdminCommand(group: string, args: string[]): Promise<number> {
  if (GROUPS[group] === undefined) {
    stderr(`tessera: unknown command "${printable(group)}"\n`)
    return 2
  }
  const [name, ...rest] = args
  if (name === undefined) {
    stderr(groupUsage(group))
    return 2
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    stdout(groupUsage(group))
    return 0
  }
  const command = GROUPS[group]!.commands[name]
  return execute(`${group} ${name}`, command, rest, {
    help: () => groupUsage(group),
    usage: () => (command === undefined ? groupUsage(group) : commandUsage(group, command)),
  })
}

/** Runs `tessera audit …`: a command of its own, not of a group. */
export function runAuditCommand(args: string[]): Promise<number> {
  const usage = () =>
    `usage: tessera ${auditCommand.synopsis}\n${auditCommand.summary.replace(/^/gm, '  ')}\n\n` +
    COMMON_OPTIONS_HELP
  return execute('audit', auditCommand, args, { help: usage, usage })
}

/** Parses the options of `command` and runs it; resolves to the exit code. */
async function execute(
  label: string,
  command: Command | undefined,
  rest: string[],
  texts: { help(): string; usage(): string },
): Promise<number> {
  try {
    if (command === undefined) throw new UsageError(`unknown command "${printable(label)}"`)
    let parsed: { values: Values; positionals: string[] }
    try {
      parsed = parseArgs({
        args: rest,
        options: { ...GLOBAL_OPTIONS, ...command.options },
        allowPositionals: true,
        strict: true,
      }) as { values: Values; positionals: string[] }
    } catch (err) {
      throw new UsageError((err as Error).message)
    }
    const { values, positionals } = parsed
    if (values['help'] === true) {
      stdout(texts.help())
      return 0
    }
    if (positionals.length !== command.positionals.length) {
      throw new UsageError(
        command.positionals.length === 0 ? `${label} takes no arguments` : `${label} takes ${command.positionals.join(' ')}`,
      )
    }
    const tokenUrl = stringFlag(values, 'token-url')
    if (tokenUrl !== undefined) checkHttpUrl(tokenUrl, '--token-url')
    const api = new AdminApi({ adminUrl: adminUrl(values), tokenUrl, credentials: () => loadCredentials() })
    await command.run({ api, json: values['json'] === true, out: stdout, warn: stderr }, values, positionals)
    return 0
  } catch (err) {
    if (err instanceof UsageError) {
      stderr(`tessera: ${err.message}\n\n${texts.usage()}`)
      return 2
    }
    if (err instanceof CliError) {
      stderr(`tessera: ${err.message}\n`)
      return err.exitCode
    }
    // Never a stack trace: one line that says what went wrong.
    stderr(`tessera: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
}
