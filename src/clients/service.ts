import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import { addSeconds } from '../clock.js'
import type { Database } from '../db/schema.js'
import { withLock } from '../db/locks.js'
import { OAuthError, invalidRequest } from '../errors.js'
import { hashesEqual, randomSecret, sha256 } from '../secrets.js'
import type { ChangeWriter } from '../view/changes.js'
import { GONE, type MemoryView } from '../view/view.js'
import { clientRepository, usesSecret, type Client, type ClientSettings } from './repository.js'
import { checkSettings, type SettingsPolicy } from './settings.js'

// A hash no secret has, so that an unknown client costs the same comparison as a known one.
const NO_SECRET = sha256('tessera: no such client')

/**
 * Clients. Every write goes through the change feed, so that each instance's view of the clients
 * (what authentication reads) changes before the write is answered.
 */
export class ClientService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly view: MemoryView,
    private readonly changes: ChangeWriter,
    private readonly policy: SettingsPolicy = { allowInsecureJwksUri: false },
  ) {}

  /** The client as the database has it now, or undefined when there is none with this id. */
  find(clientId: string): Promise<Client | undefined> {
    return clientRepository.find(this.db, clientId)
  }

  /**
   * The client, from memory while the view is fresh, else (or when the view does not know it
   * yet: a client created on another instance a moment ago) from the database.
   */
  async current(clientId: string): Promise<Client | undefined> {
    if (this.view.isFresh()) {
      const known = this.view.client(clientId)
      if (known === GONE) return undefined
      if (known !== undefined) return known
    }
    const mark = this.view.readMark
    const client = await clientRepository.find(this.db, clientId)
    this.view.offerClient(clientId, client, mark)
    return client
  }

  /** Up to `limit` clients ordered by id, those after `after` (which need not exist any more). */
  list(page: { limit: number; after?: string | undefined }): Promise<Client[]> {
    return clientRepository.list(this.db, page)
  }

  /**
   * Changes only the settings given, which must keep the rules with the rest (src/clients/
   * settings.ts; invalid_request otherwise); undefined when there is no such client. A client that
   * leaves private_key_jwt leaves its keys behind unless told otherwise; one that stops using a
   * secret loses it, and one that starts has none until one is made (rotateSecret).
   */
  update(clientId: string, settings: Partial<ClientSettings>): Promise<Client | undefined> {
    return this.changes.write(async (trx, change) => {
      const current = await clientRepository.findForUpdate(trx, clientId)
      if (current === undefined) return undefined
      const leavesKeys = settings.tokenEndpointAuthMethod !== undefined && settings.tokenEndpointAuthMethod !== 'private_key_jwt'
      const merged = checkSettings(
        { ...settingsOf(current), ...(leavesKeys && { jwks: null, jwksUri: null, tokenEndpointAuthSigningAlg: null }), ...settings },
        this.policy,
      )
      const client = await clientRepository.update(trx, clientId, merged, this.clock.now(), {
        dropSecret: !usesSecret(merged.tokenEndpointAuthMethod),
      })
      if (client !== undefined) change({ kind: 'client', subject: clientId })
      return client
    })
  }

  /** Deletes the client with its grants and refresh tokens; false when there is no such client. */
  delete(clientId: string): Promise<boolean> {
    return this.changes.write(async (trx, change) => {
      const deleted = await clientRepository.delete(trx, clientId)
      if (deleted) change({ kind: 'client', subject: clientId })
      return deleted
    })
  }

  /**
   * The client if the secret is its own, for a client already loaded (ClientService.current): compared
   * in constant time, and with a secret replaced with a grace period, the old one while it lasts. Whether
   * the client may authenticate with a secret at all is the caller's to check (src/oauth/
   * client-auth.ts); a client without a secret matches none.
   */
  checkSecret(client: Client | undefined, secret: string): Client | undefined {
    const presented = sha256(secret)
    if (client === undefined || client.secretHash === null) {
      hashesEqual(presented, NO_SECRET)
      return undefined
    }
    if (hashesEqual(presented, client.secretHash)) return client
    const grace = client.previousSecretExpiresAt
    if (client.previousSecretHash !== null && grace !== null && grace > this.clock.now()) {
      if (hashesEqual(presented, client.previousSecretHash)) return client
    }
    return undefined
  }

  /** The longest an access token may live: the default or the longest client override. */
  async maxAccessTokenTtl(defaultTtl: number): Promise<number> {
    return Math.max(defaultTtl, (await clientRepository.maxAccessTokenTtl(this.db)) ?? 0)
  }

  /**
   * A new client; one that authenticates with a secret gets a server-generated one, returned only
   * here (a private_key_jwt or public client gets none). invalid_request when the settings break
   * a rule (src/clients/settings.ts).
   */
  async create(settings: ClientSettings): Promise<{ client: Client; secret: string | undefined }> {
    const checked = checkSettings(settings, this.policy)
    const secret = usesSecret(checked.tokenEndpointAuthMethod) ? randomSecret() : undefined
    const client = await this.changes.write(async (trx, change) => {
      const inserted = await clientRepository.insert(trx, randomUUID(), secret === undefined ? null : sha256(secret), checked, this.clock.now())
      // Recorded too, so that every instance holds it at once (and would forget a tombstone).
      if (inserted !== undefined) change({ kind: 'client', subject: inserted.clientId })
      return inserted
    })
    if (client === undefined) throw new OAuthError('server_error', 'could not allocate a client id')
    return { client, secret }
  }

  /**
   * A new secret, returned only here; the old one keeps working for `graceSeconds` (0: it stops at
   * once). A secret still in an earlier grace period stops at once: only the latest two live.
   * Undefined when there is no such client (nothing is written then); invalid_request for a client
   * that does not authenticate with a secret.
   */
  async rotateSecret(clientId: string, graceSeconds: number): Promise<string | undefined> {
    const secret = randomSecret()
    const now = this.clock.now()
    const until = graceSeconds > 0 ? addSeconds(now, graceSeconds) : null
    const client = await this.changes.write(async (trx, change) => {
      const current = await clientRepository.findForUpdate(trx, clientId)
      if (current === undefined) return undefined
      if (!usesSecret(current.tokenEndpointAuthMethod)) {
        throw invalidRequest(`this client authenticates with ${current.tokenEndpointAuthMethod}: it has no secret`)
      }
      const replaced = await clientRepository.replaceSecret(trx, clientId, sha256(secret), until, now)
      if (replaced !== undefined) change({ kind: 'client', subject: clientId })
      return replaced
    })
    return client === undefined ? undefined : secret
  }

  /**
   * Makes sure the bootstrap admin client exists with this secret, the client_credentials grant
   * and the admin scope, keeping whatever else an administrator gave it. Idempotent.
   */
  async ensureAdminClient(clientId: string, secret: string): Promise<void> {
    const now = this.clock.now()
    const hash = sha256(secret)
    await this.changes.write(async (trx, change) => {
      const client = await clientRepository.find(trx, clientId)
      if (client === undefined) {
        if (await clientRepository.insert(trx, clientId, hash, adminSettings(), now)) change({ kind: 'client', subject: clientId })
        return
      }
      const grantTypes = client.grantTypes.includes('client_credentials')
        ? client.grantTypes
        : [...client.grantTypes, 'client_credentials' as const]
      const scopes = client.scopes.includes('admin') ? client.scopes : [...client.scopes, 'admin']
      // Its secret is what the bootstrap promises: a client switched to another method comes back.
      const method = usesSecret(client.tokenEndpointAuthMethod) ? {} : { tokenEndpointAuthMethod: 'client_secret_basic' as const, jwks: null, jwksUri: null, tokenEndpointAuthSigningAlg: null }
      const newSecret = client.secretHash === null || !hashesEqual(hash, client.secretHash)
      if (newSecret) await clientRepository.replaceSecret(trx, clientId, hash, null, now)
      const changed = grantTypes !== client.grantTypes || scopes !== client.scopes || Object.keys(method).length > 0
      if (changed) await clientRepository.update(trx, clientId, { grantTypes, scopes, ...method }, now)
      if (newSecret || changed) change({ kind: 'client', subject: clientId })
    })
  }

  /** Creates an admin client when no client has the admin scope; the secret is returned only here. */
  async createAdminClientIfNone(): Promise<{ clientId: string; secret: string } | undefined> {
    // Under a lock, so that instances starting together over one database create one client.
    return this.changes.write(async (trx, change) => {
      await withLock(trx, 'bootstrap')
      if (await clientRepository.anyAdmin(trx)) return undefined
      const secret = randomSecret()
      const client = await clientRepository.insert(trx, randomUUID(), sha256(secret), adminSettings(), this.clock.now())
      if (client === undefined) throw new OAuthError('server_error', 'could not allocate a client id')
      change({ kind: 'client', subject: client.clientId })
      return { clientId: client.clientId, secret }
    })
  }
}

function adminSettings(): ClientSettings {
  return {
    name: 'Tessera admin',
    grantTypes: ['client_credentials'],
    scopes: ['admin'],
    audiences: [],
    resourceIdentifiers: [],
    accessTokenTtl: null,
    refreshTokenTtl: null,
    tokenEndpointAuthMethod: 'client_secret_basic',
    jwks: null,
    jwksUri: null,
    tokenEndpointAuthSigningAlg: null,
    dpopBoundAccessTokens: false,
  }
}

/** The settings part of a client record. */
function settingsOf(c: Client): ClientSettings {
  return {
    name: c.name,
    grantTypes: c.grantTypes,
    scopes: c.scopes,
    audiences: c.audiences,
    resourceIdentifiers: c.resourceIdentifiers,
    accessTokenTtl: c.accessTokenTtl,
    refreshTokenTtl: c.refreshTokenTtl,
    tokenEndpointAuthMethod: c.tokenEndpointAuthMethod,
    jwks: c.jwks,
    jwksUri: c.jwksUri,
    tokenEndpointAuthSigningAlg: c.tokenEndpointAuthSigningAlg,
    dpopBoundAccessTokens: c.dpopBoundAccessTokens,
  }
}
