// The admin API's route schemas (src/http/admin.ts), and what the OpenAPI document says of it.
//
// JSON bodies are checked by these schemas alone: unknown properties are refused rather than
// dropped, so a typo is an error instead of a silent no-op. Path and query parameters are checked
// by the routes first (their text in the onRequest hook, their meaning in read-first.ts), so their
// schemas state the same rules, never stricter ones.
import { AUDIT_EVENT_TYPES } from '../../audit/events.js'
import { AUTH_METHODS, GRANT_TYPES } from '../../clients/repository.js'
import { SIGNING_ALGS } from '../../config.js'
import { LIMITS } from '../../input.js'
import { CLIENT_ALGS } from '../../oauth/jws.js'
import { NO_STORE, errorResponse, ref, unavailable, type Schema, type Security } from './common.js'

// --- request bodies ---

const scopeList = {
  type: 'array',
  maxItems: 200,
  uniqueItems: true,
  items: { type: 'string', pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$', maxLength: 200 },
} as const
const identifierList = {
  type: 'array',
  maxItems: 100,
  uniqueItems: true,
  items: { type: 'string', pattern: '^[^\\s\\x00-\\x1f\\x7f]+$', maxLength: 2000 },
} as const
const ttl = { type: ['integer', 'null'], minimum: 1, maximum: 315_360_000 } as const
// RFC 7517 §5: a JWK Set; what each key may be is the client rules' to judge (src/clients/settings.ts).
const jwkSet = {
  anyOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: ['keys'],
      properties: { keys: { type: 'array', minItems: 1, maxItems: 10, items: { type: 'object', maxProperties: 30 } } },
    },
    { type: 'null' },
  ],
} as const

const clientProperties = {
  name: { type: 'string', minLength: 1, maxLength: 200, description: 'For people: shown in lists and the audit.' },
  grant_types: {
    type: 'array',
    minItems: 1,
    uniqueItems: true,
    items: { enum: GRANT_TYPES },
    description: 'The grants the client may use.',
  },
  scopes: { ...scopeList, description: 'The scopes the client may ask for (RFC 6749 §3.3 scope tokens).' },
  audiences: {
    ...identifierList,
    description: 'The resource identifiers (RFC 8707) the client may ask tokens for; the first is the default aud.',
  },
  resource_identifiers: {
    ...identifierList,
    description: 'As a resource server: introspection shows this client the tokens whose aud is one of these.',
  },
  access_token_ttl: { ...ttl, description: 'Seconds; null: ACCESS_TOKEN_TTL.' },
  refresh_token_ttl: { ...ttl, description: 'Seconds; null: REFRESH_TOKEN_TTL.' },
  token_endpoint_auth_method: {
    enum: AUTH_METHODS,
    description:
      'client_secret_basic (the default; may also send its secret as client_secret_post), client_secret_post, ' +
      'private_key_jwt (with jwks or jwks_uri) or none (a public client: password and refresh_token only).',
  },
  jwks: {
    ...jwkSet,
    description:
      'private_key_jwt: the client’s public keys inline, 1 to 10, no private members, each with a distinct kid when ' +
      'there are several. Not with jwks_uri.',
  },
  jwks_uri: {
    anyOf: [{ type: 'string', maxLength: 2000, pattern: '^[^\\s\\x00-\\x1f\\x7f]+$' }, { type: 'null' }],
    description: 'private_key_jwt: an https URL serving the client’s JWK Set, fetched with SSRF guards. Not with jwks.',
  },
  token_endpoint_auth_signing_alg: {
    enum: [...CLIENT_ALGS, null],
    description: 'private_key_jwt: what assertions are signed with (null: ES256); every inline key must fit it.',
  },
  dpop_bound_access_tokens: { type: 'boolean', description: 'Refuse the client’s token requests without a DPoP proof.' },
} as const

export const clientCreation = {
  $id: 'ClientCreation',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'grant_types', 'scopes'],
  properties: clientProperties,
  // What /docs puts in a "Try it out" body: a body the server accepts (test/http/openapi.test.ts sends it).
  examples: [{ name: 'billing service', grant_types: ['client_credentials'], scopes: ['invoices:read'], audiences: ['https://api.example.com'] }],
} as const

export const clientChange = {
  $id: 'ClientChange',
  description:
    'The settings to change, and only those. A client changed to another method leaves its keys behind, and its ' +
    'secret when it no longer uses one; one changed to a secret method has none until POST …/secret makes one.',
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: clientProperties,
  examples: [{ scopes: ['invoices:read', 'invoices:write'], access_token_ttl: 900 }],
} as const

// Its length and content are the password policy's to judge (src/users/password-policy.ts), with
// a description that says which rule failed.
const password = {
  type: 'string',
  format: 'password',
  description:
    'NIST SP 800-63B: 8 to 256 characters (Unicode code points after NFC), not the username, not one of the 10,000 most ' +
    'common passwords. The error description says which rule it broke.',
} as const
const userScopes = {
  anyOf: [scopeList, { type: 'null' }],
  description: 'When set, narrows what any client gets for this user; null: no narrowing.',
} as const

export const userCreation = {
  $id: 'UserCreation',
  type: 'object',
  additionalProperties: false,
  required: ['username', 'password'],
  properties: {
    // No control characters, no surrounding white space: a username is something people type.
    username: {
      type: 'string',
      minLength: 1,
      maxLength: 200,
      pattern: '^(?!\\s)[^\\x00-\\x1f\\x7f]*(?<!\\s)$',
      description: 'Unique, matched case-insensitively (after Unicode NFC).',
    },
    password,
    scopes: userScopes,
  },
  examples: [{ username: 'ada', password: 'analytical engine 1843', scopes: null }],
} as const

/** One line of POST /admin/users/import: a user as POST /admin/users takes one, or with a hash. */
export const userImportLine = {
  $id: 'UserImportLine',
  type: 'object',
  additionalProperties: false,
  required: ['username'],
  properties: {
    username: userCreation.properties.username,
    id: { type: 'string', format: 'uuid', description: 'Kept, when given (tokens name users by id); else a new one.' },
    scopes: userScopes,
    disabled: { type: 'boolean', description: 'Default false.' },
    password: { ...password, description: 'Either this (hashed here, under the policy of POST /admin/users) or password_hash.' },
    password_hash: {
      type: 'string',
      maxLength: 1024,
      description:
        'The hash the old system stored: bcrypt ($2a$, $2b$, $2y$, cost ≤ 12), argon2id or argon2i (PHC), scrypt (PHC, $scrypt$ln=,r=,p=$salt$hash), ' +
        'PBKDF2-SHA1/256/512 (passlib’s $pbkdf2-sha256$rounds$salt$hash, or Django’s pbkdf2_sha256$rounds$salt$hash). Costs above the ' +
        'import limits are refused. Replaced by the server’s own argon2id at the first successful login.',
    },
  },
} as const

export const userChange = {
  $id: 'UserChange',
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    disabled: { type: 'boolean', description: 'A disabled user cannot log in, and their grants stop working.' },
    scopes: userScopes,
  },
  examples: [{ disabled: false, scopes: ['invoices:read'] }],
} as const

export const passwordChange = {
  $id: 'PasswordChange',
  type: 'object',
  additionalProperties: false,
  required: ['password'],
  properties: { password },
  examples: [{ password: 'difference engine 1822' }],
} as const

export const secretRotation = {
  $id: 'SecretRotation',
  description: 'Optional: no body is the same as {}.',
  anyOf: [
    {
      type: 'object',
      additionalProperties: false,
      properties: {
        grace_seconds: {
          type: 'integer',
          minimum: 0,
          maximum: 31_536_000,
          description: 'How long the old secret keeps working (0, the default: it stops at once).',
        },
      },
    },
    { type: 'null' },
  ],
  examples: [{ grace_seconds: 3600 }],
} as const

// --- responses ---

const dateTime = (description?: string) => ({ type: 'string', format: 'date-time', ...(description !== undefined && { description }) })
const dateTimeOrNull = (description: string) => ({ type: ['string', 'null'], format: 'date-time', description })
const next = {
  type: 'string',
  description: 'Present when the page was full: pass it as ?after= for the next page.',
} as const

const clientViewProperties = {
  client_id: { type: 'string' },
  name: { type: 'string' },
  grant_types: { type: 'array', items: { type: 'string', enum: GRANT_TYPES } },
  scopes: { type: 'array', items: { type: 'string' } },
  audiences: { type: 'array', items: { type: 'string' } },
  resource_identifiers: { type: 'array', items: { type: 'string' } },
  access_token_ttl: { type: ['integer', 'null'], description: 'null: the server default.' },
  refresh_token_ttl: { type: ['integer', 'null'], description: 'null: the server default.' },
  token_endpoint_auth_method: { type: 'string', enum: AUTH_METHODS },
  jwks: {
    type: ['object', 'null'],
    required: ['keys'],
    properties: { keys: { type: 'array', items: { type: 'object', additionalProperties: true } } },
  },
  jwks_uri: { type: ['string', 'null'] },
  token_endpoint_auth_signing_alg: { type: ['string', 'null'], enum: [...CLIENT_ALGS, null] },
  dpop_bound_access_tokens: { type: 'boolean' },
  created_at: dateTime(),
  updated_at: dateTime(),
} as const

export const clientView = {
  $id: 'Client',
  description: 'A client as the admin API shows it: never its secret.',
  type: 'object',
  additionalProperties: false,
  required: Object.keys(clientViewProperties),
  properties: clientViewProperties,
} as const

export const newClient = {
  $id: 'NewClient',
  description: 'The client just made, with its secret: shown only here, and only to a client that authenticates with one.',
  type: 'object',
  additionalProperties: false,
  required: Object.keys(clientViewProperties),
  properties: {
    ...clientViewProperties,
    client_secret: { type: 'string', description: '256 random bits, base64url: keep it now, it is stored only as a hash.' },
  },
} as const

export const clientList = {
  $id: 'ClientList',
  type: 'object',
  additionalProperties: false,
  required: ['clients'],
  properties: { clients: { type: 'array', items: ref(clientView) }, next },
} as const

export const clientSecret = {
  $id: 'ClientSecret',
  type: 'object',
  additionalProperties: false,
  required: ['client_secret'],
  properties: { client_secret: { type: 'string', description: 'The new secret: shown only here.' } },
} as const

const userViewProperties = {
  id: { type: 'string', format: 'uuid' },
  username: { type: 'string' },
  disabled: { type: 'boolean' },
  scopes: { type: ['array', 'null'], items: { type: 'string' }, description: 'null: no narrowing of the client’s scopes.' },
  created_at: dateTime(),
  updated_at: dateTime(),
} as const

export const userView = {
  $id: 'User',
  description: 'A user as the admin API shows them: never the password hash.',
  type: 'object',
  additionalProperties: false,
  required: Object.keys(userViewProperties),
  properties: userViewProperties,
} as const

export const userList = {
  $id: 'UserList',
  type: 'object',
  additionalProperties: false,
  required: ['users'],
  properties: { users: { type: 'array', items: ref(userView) }, next },
} as const

export const lockout = {
  $id: 'Lockout',
  description: 'A user’s failed logins (see LOGIN_FREE_FAILURES and LOGIN_MAX_DELAY).',
  type: 'object',
  additionalProperties: false,
  required: ['user_id', 'username', 'failures', 'locked', 'locked_until'],
  properties: {
    user_id: { type: 'string', format: 'uuid' },
    username: { type: 'string' },
    failures: { type: 'integer', minimum: 0, description: 'Failed logins counted for the username.' },
    locked: { type: 'boolean', description: 'Logins wait until locked_until.' },
    locked_until: dateTimeOrNull('Until when logins for this username are refused; null when they are not.'),
  },
} as const

export const signingKey = {
  $id: 'SigningKey',
  description: 'A signing key and its life: next (published, not yet signing), active (signs), retired (still published), removed.',
  type: 'object',
  additionalProperties: false,
  required: ['kid', 'alg', 'state', 'created_at', 'activate_at', 'activated_at', 'retired_at', 'remove_at', 'removed_at'],
  properties: {
    kid: { type: 'string' },
    alg: { type: 'string', enum: SIGNING_ALGS },
    state: { type: 'string', enum: ['next', 'active', 'retired', 'removed'] },
    created_at: dateTime(),
    activate_at: dateTimeOrNull('A next key: when it starts to sign.'),
    activated_at: dateTimeOrNull('When it started to sign.'),
    retired_at: dateTimeOrNull('When it stopped signing.'),
    remove_at: dateTimeOrNull('A retired key: when it leaves /jwks, once its tokens have expired.'),
    removed_at: dateTimeOrNull('When it left /jwks.'),
  },
} as const

export const keyReseal = {
  $id: 'KeyReseal',
  type: 'object',
  additionalProperties: false,
  required: ['resealed', 'already_current'],
  properties: {
    resealed: { type: 'array', items: { type: 'string' }, description: 'The kids re-encrypted now.' },
    already_current: { type: 'array', items: { type: 'string' }, description: 'The kids already sealed under KEY_ENCRYPTION_KEY.' },
  },
} as const

export const signingKeyList = {
  $id: 'SigningKeyList',
  type: 'object',
  additionalProperties: false,
  required: ['keys'],
  properties: { keys: { type: 'array', items: ref(signingKey) } },
} as const

const nullableString = (description: string) => ({ type: ['string', 'null'], description })

export const auditEvent = {
  $id: 'AuditEvent',
  description: 'A security event (src/audit/events.ts). Never a password, secret or token: a token is named by its jti or grant id.',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'type', 'at', 'address', 'client_id', 'admin_client_id', 'user_id', 'username', 'username_hash', 'details'],
  properties: {
    id: { type: 'string' },
    type: { type: 'string', enum: AUDIT_EVENT_TYPES },
    at: dateTime(),
    address: nullableString('The client’s network address (request.ip, which TRUST_PROXY makes the real one behind proxies).'),
    client_id: nullableString('The client the event is about, or the one presented at a failed authentication.'),
    admin_client_id: nullableString('The admin client whose token made an admin change.'),
    user_id: nullableString('The user the event is about.'),
    username: nullableString('The user’s username, when the event names a user that exists.'),
    username_hash: nullableString('A username typed at a login, as a keyed hash: never as text (see ?username=).'),
    details: {
      type: 'object',
      additionalProperties: true,
      description:
        'What else the event type records: a reason, a method, the admin route and status with the settings changed, a ' +
        'kid, a grant id. Open: each type has its own.',
    },
  },
} as const

export const auditPage = {
  $id: 'AuditPage',
  type: 'object',
  additionalProperties: false,
  required: ['events'],
  properties: { events: { type: 'array', items: ref(auditEvent) }, next: { ...next, description: 'Present when the page was full: pass it as ?after=.' } },
} as const

/** The components of the admin API's routes. */
export const ADMIN_SCHEMAS: readonly Schema[] = [
  clientCreation,
  clientChange,
  userCreation,
  userImportLine,
  userChange,
  passwordChange,
  secretRotation,
  clientView,
  newClient,
  clientList,
  clientSecret,
  userView,
  userList,
  lockout,
  signingKey,
  signingKeyList,
  keyReseal,
  auditEvent,
  auditPage,
]

/** How a caller authenticates at the admin API, for the document's components. */
export const ADMIN_SECURITY_SCHEMES = {
  adminBearer: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'An access token of this server with scope admin (GET /metrics: metrics or admin), from client_credentials at the ' +
      'public POST /token, whose aud is the admin API’s resource identifier, ISSUER followed by /admin (any other is 401 ' +
      'invalid_token). Unexpired and unrevoked; checked as introspection checks it. A DPoP-bound token is refused as Bearer.',
  },
  adminDpop: {
    type: 'http',
    scheme: 'DPoP',
    description:
      'A DPoP-bound access token (RFC 9449 §7): Authorization: DPoP <token>, with a DPoP header holding a proof of its key ' +
      'for this call (htm, htu ADMIN_URL followed by the path, never the Host header; ath the token’s hash). A failed proof is 401 invalid_dpop_proof ' +
      'with a DPoP challenge.',
  },
} as const

// --- routes ---

// Roles in OpenAPI 3.1 terms: the scope the token must carry.
const ADMIN: Security = [{ adminBearer: ['admin'] }, { adminDpop: ['admin'] }]

const notAuthorized = {
  401: errorResponse(
    'invalid_token (no token, or a bad, expired, revoked or forged one; a DPoP-bound one sent as Bearer), or ' +
      'invalid_dpop_proof.',
    {
      'WWW-Authenticate': {
        type: 'string',
        description: 'A Bearer challenge (RFC 6750 §3), or a DPoP one (RFC 9449 §7.1) for DPoP.',
        examples: ['Bearer realm="tessera", error="invalid_token"'],
      },
    },
  ),
  403: errorResponse('insufficient_scope: the token lacks scope admin (for /metrics: metrics or admin).', {
    'WWW-Authenticate': { type: 'string', examples: ['Bearer realm="tessera", error="insufficient_scope"'] },
  }),
}
const badRequest = (what: string) => ({ 400: errorResponse(`invalid_request: ${what}`) })
const notFound = (what: string) => ({ 404: errorResponse(`not_found: no such ${what}.`) })
const noContent = (description: string) => ({ 204: { description, headers: NO_STORE, type: 'null' } })
const ok = (description: string, schema: { $id: string }, status = 200) => ({
  [status]: { description, headers: NO_STORE, ...ref(schema) },
})

const clientIdParam = {
  type: 'object',
  required: ['client_id'],
  properties: { client_id: { type: 'string', maxLength: LIMITS.clientId, description: 'The client’s id.' } },
} as const
const userIdParam = {
  type: 'object',
  required: ['id'],
  properties: {
    id: { type: 'string', maxLength: LIMITS.id, description: 'The user’s id (a UUID; anything else is not found).' },
  },
} as const

const PATH_TEXT = 'a malformed id in the path (a NUL, a control character, too long).'
const BODY = 'a bad body (the description names the property and the rule) or a bad id in the path.'

const paging = {
  limit: { type: 'string', pattern: '^[0-9]+$', description: 'Page size: a whole number from 1 to 1000 (default 100).' },
  after: { type: 'string', maxLength: LIMITS.id, description: 'The next of the page before.' },
} as const

const route = (tag: string, operationId: string, summary: string, rest: Schema) => ({
  tags: [tag],
  operationId,
  summary,
  security: ADMIN,
  ...rest,
})

export const createClient = route('Clients', 'createClient', 'Register a client', {
  body: ref(clientCreation),
  response: { ...ok('The client, with its secret (shown only here).', newClient, 201), ...badRequest(BODY), ...notAuthorized, 503: unavailable },
})

export const listClients = route('Clients', 'listClients', 'List clients', {
  description: 'In client id order, a page at a time.',
  querystring: { type: 'object', properties: paging },
  response: { ...ok('A page of clients.', clientList), ...badRequest('bad paging.'), ...notAuthorized, 503: unavailable },
})

export const getClient = route('Clients', 'getClient', 'Read a client', {
  params: clientIdParam,
  response: { ...ok('The client.', clientView), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('client'), 503: unavailable },
})

export const changeClient = route('Clients', 'changeClient', 'Change a client', {
  description: 'Changes the settings given and only those. Taking something away (a grant type, a scope) holds on every instance once answered.',
  params: clientIdParam,
  body: ref(clientChange),
  response: { ...ok('The client as changed.', clientView), ...badRequest(BODY), ...notAuthorized, ...notFound('client'), 503: unavailable },
})

export const deleteClient = route('Clients', 'deleteClient', 'Delete a client', {
  description: 'Its secret stops working, and so do its tokens.',
  params: clientIdParam,
  response: { ...noContent('Deleted.'), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('client'), 503: unavailable },
})

export const rotateClientSecret = route('Clients', 'rotateClientSecret', 'Give a client a new secret', {
  description: 'The old secret keeps working for grace_seconds. Only for a client that authenticates with a secret (else 400).',
  params: clientIdParam,
  body: ref(secretRotation),
  response: {
    ...ok('The new secret.', clientSecret),
    ...badRequest(`${BODY} Or a client that does not authenticate with a secret.`),
    ...notAuthorized,
    ...notFound('client'),
    503: unavailable,
  },
})

export const revokeClientTokens = route('Clients', 'revokeClientTokens', 'Revoke every token of a client', {
  description: 'Every token issued to the client so far; new ones work. Holds on every instance once answered.',
  params: clientIdParam,
  response: { ...noContent('Revoked.'), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('client'), 503: unavailable },
})

export const createUser = route('Users', 'createUser', 'Create a user', {
  body: ref(userCreation),
  response: {
    ...ok('The user.', userView, 201),
    ...badRequest(`${BODY} Or a password the policy refuses.`),
    ...notAuthorized,
    409: errorResponse('conflict: the username is taken (compared case-insensitively).'),
    503: unavailable,
  },
})

export const listUsers = route('Users', 'listUsers', 'List users, or find one by username', {
  description: 'In id order, a page at a time; with ?username=, the one user of that name (case-insensitively), or none.',
  querystring: {
    type: 'object',
    properties: {
      username: { type: 'string', maxLength: LIMITS.username, description: 'Find this user (case-insensitively) instead of listing.' },
      ...paging,
    },
  },
  response: { ...ok('A page of users.', userList), ...badRequest('bad paging, or a malformed username.'), ...notAuthorized, 503: unavailable },
})

export const getUser = route('Users', 'getUser', 'Read a user', {
  params: userIdParam,
  response: { ...ok('The user.', userView), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('user'), 503: unavailable },
})

export const changeUser = route('Users', 'changeUser', 'Change a user', {
  description: 'Disabling a user stops their grants at once, on every instance.',
  params: userIdParam,
  body: ref(userChange),
  response: { ...ok('The user as changed.', userView), ...badRequest(BODY), ...notAuthorized, ...notFound('user'), 503: unavailable },
})

export const deleteUser = route('Users', 'deleteUser', 'Delete a user', {
  description: 'Their grants and tokens stop working.',
  params: userIdParam,
  response: { ...noContent('Deleted.'), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('user'), 503: unavailable },
})

export const setUserPassword = route('Users', 'setUserPassword', 'Set a user’s password', {
  params: userIdParam,
  body: ref(passwordChange),
  response: {
    ...noContent('Set.'),
    ...badRequest(`${BODY} Or a password the policy refuses.`),
    ...notAuthorized,
    ...notFound('user'),
    503: unavailable,
  },
})

export const importUsers = route('Users', 'importUsers', 'Import users, with their passwords or existing hashes', {
  description:
    'The body is newline-delimited JSON (Content-Type: application/x-ndjson), one UserImportLine a line, read as it arrives. ' +
    'The answer, streamed as the lines are processed, is one JSON object a line: {"line":n,"result":"created","id","username"}, ' +
    '{"line":n,"result":"exists","username"} (a user with this username or id is there: left as it is), or ' +
    '{"line":n,"result":"refused","error","error_description"}; with ?dry_run=true, "would_create" instead of "created" and nothing written. ' +
    'A bad line never stops the others. The last line is {"summary":{"created","exists","refused"}}.',
  querystring: {
    type: 'object',
    properties: { dry_run: { type: 'string', enum: ['true', 'false'], description: 'Validate every line, write nothing.' } },
  },
  response: {
    200: { description: 'One result a line (application/x-ndjson), then the summary.', headers: NO_STORE, type: 'string' },
    ...badRequest('not application/x-ndjson, or a bad dry_run.'),
    ...notAuthorized,
    503: unavailable,
  },
})

export const getUserLockout = route('Users', 'getUserLockout', 'A user’s failed logins', {
  params: userIdParam,
  response: { ...ok('The count and any delay in force.', lockout), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('user'), 503: unavailable },
})

export const clearUserLockout = route('Users', 'clearUserLockout', 'Clear a user’s failed logins', {
  description: 'The count, and any delay in force.',
  params: userIdParam,
  response: { ...noContent('Cleared.'), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('user'), 503: unavailable },
})

export const revokeUserTokens = route('Users', 'revokeUserTokens', 'Revoke every grant of a user', {
  description: 'Every refresh token and access token issued to the user so far. Holds on every instance once answered.',
  params: userIdParam,
  response: { ...noContent('Revoked.'), ...badRequest(PATH_TEXT), ...notAuthorized, ...notFound('user'), 503: unavailable },
})

export const listKeys = route('Signing keys', 'listKeys', 'List signing keys', {
  response: { ...ok('Every key, removed ones too.', signingKeyList), ...notAuthorized, 503: unavailable },
})

export const rotateKeys = route('Signing keys', 'rotateKeys', 'Rotate the signing key', {
  description:
    'Starts a rotation: a new key is published now and signs once caches have seen it (JWKS_MAX_AGE). Asked again while ' +
    'one is under way, it answers the pending key. With ?immediate=true (a leaked key): a new key signs at once and ' +
    'every other key leaves /jwks; the tokens they signed stop verifying and introspect inactive.',
  querystring: {
    type: 'object',
    properties: { immediate: { type: 'string', enum: ['true', 'false'], description: 'true: the emergency rotation.' } },
  },
  response: { ...ok('The new (or pending) key.', signingKey), ...badRequest('immediate is neither true nor false.'), ...notAuthorized, 503: unavailable },
})

export const resealKeys = route('Signing keys', 'resealKeys', 'Re-encrypt the stored private keys under KEY_ENCRYPTION_KEY', {
  description:
    'The last step of a KEY_ENCRYPTION_KEY rotation: every stored private key sealed under KEY_ENCRYPTION_KEY_PREVIOUS is ' +
    're-encrypted under KEY_ENCRYPTION_KEY, in one transaction, while every instance keeps signing. Idempotent. Then ' +
    'KEY_ENCRYPTION_KEY_PREVIOUS can be removed.',
  response: {
    ...ok('What was done.', keyReseal),
    ...notAuthorized,
    409: errorResponse('conflict: a stored key opens with neither KEY_ENCRYPTION_KEY nor KEY_ENCRYPTION_KEY_PREVIOUS; nothing was changed.'),
    503: unavailable,
  },
})

export const listAuditEvents = route('Audit', 'listAuditEvents', 'Security events', {
  description: 'Newest first, filtered by every parameter given, a page at a time.',
  querystring: {
    type: 'object',
    properties: {
      type: { type: 'string', description: `One or more event types, comma-separated: ${AUDIT_EVENT_TYPES.join(', ')}.` },
      user: { type: 'string', description: 'Events about this user (an id).' },
      username: {
        type: 'string',
        minLength: 1,
        maxLength: 1000,
        description: 'Logins typed with this username, known or not (compared by its keyed hash).',
      },
      client: { type: 'string', minLength: 1, maxLength: 500, description: 'Events about this client, or made by it as an admin.' },
      since: { type: 'string', description: 'ISO 8601 (a date alone is midnight UTC); inclusive.', examples: ['2024-05-01T12:00:00Z'] },
      until: { type: 'string', description: 'ISO 8601; exclusive.' },
      limit: paging.limit,
      after: { type: 'string', pattern: '^[0-9]{1,16}-[0-9]{1,19}$', description: 'The next of the page before.' },
    },
  },
  response: { ...ok('A page of events.', auditPage), ...badRequest('a bad filter (the description says which).'), ...notAuthorized, 503: unavailable },
})

export const metrics = {
  tags: ['Metrics'],
  operationId: 'metrics',
  summary: 'Prometheus metrics',
  description: 'Prometheus text format, for every worker under WEB_CONCURRENCY. Scope metrics (or admin).',
  security: [{ adminBearer: ['metrics'] }, { adminBearer: ['admin'] }, { adminDpop: ['metrics'] }, { adminDpop: ['admin'] }] as Security,
  response: {
    200: {
      description: 'The metrics.',
      headers: NO_STORE,
      content: { 'text/plain': { schema: { type: 'string', examples: ['# HELP tessera_tokens_issued_total …'] } } },
    },
    ...notAuthorized,
  },
}

export const apiDescription = {
  tags: ['API description'],
  operationId: 'apiDescription',
  summary: 'This document',
  description:
    'The OpenAPI 3.1 document of both APIs, the servers filled in: the public API at the issuer, the admin API at the URL ' +
    'this request reached. No token needed; /docs shows it as a browsable page.',
  security: [] as Security,
  response: {
    200: { description: 'The document.', headers: NO_STORE, type: 'object', additionalProperties: true },
  },
}
