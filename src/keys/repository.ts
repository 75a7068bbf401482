import type { Selectable } from 'kysely'
import type { Executor, KeyState, SigningKeysTable } from '../db/schema.js'

export type KeyRow = Selectable<SigningKeysTable>

export interface NewKey {
  kid: string
  alg: string
  publicJwk: Record<string, unknown>
  sealedPrivateKey: Buffer
}

export const keyRepository = {
  /** Every key not yet removed, oldest first. */
  async listLive(db: Executor): Promise<KeyRow[]> {
    return db.selectFrom('signing_keys').selectAll().where('state', '!=', 'removed').orderBy('created_at').execute()
  },

  /** Every key, removed ones included (their private key is gone), newest first. */
  async listAll(db: Executor): Promise<KeyRow[]> {
    return db.selectFrom('signing_keys').selectAll().orderBy('created_at', 'desc').execute()
  },

  /** The key, removed or not; undefined for a kid this server never had. */
  async find(db: Executor, kid: string): Promise<KeyRow | undefined> {
    return db.selectFrom('signing_keys').selectAll().where('kid', '=', kid).executeTakeFirst()
  },

  /** The key's state, or undefined for a kid this server never had. */
  async state(db: Executor, kid: string): Promise<KeyState | undefined> {
    const row = await db.selectFrom('signing_keys').select('state').where('kid', '=', kid).executeTakeFirst()
    return row?.state
  },

  /** A new key, published now, that the schedule makes active at activateAt. */
  async insertNext(db: Executor, key: NewKey, now: Date, activateAt: Date): Promise<void> {
    await db
      .insertInto('signing_keys')
      .values({ ...columns(key), state: 'next', created_at: now, activate_at: activateAt })
      .execute()
  },

  /** A new key that signs at once: the first one, or an emergency rotation's (after removing the rest). */
  async insertActive(db: Executor, key: NewKey, now: Date): Promise<void> {
    await db
      .insertInto('signing_keys')
      .values({ ...columns(key), state: 'active', created_at: now, activate_at: now, activated_at: now })
      .execute()
  },

  /**
   * Retires the active key (it stays published until removeAt) and makes `kid`, a next key,
   * active. The retired key's private key is erased now: it never signs again, and a database
   * dump taken later should hold as few private keys as possible. Run it in a transaction, so
   * that no reader sees a moment without an active key.
   */
  async promote(db: Executor, kid: string, now: Date, removeAt: Date): Promise<void> {
    await db
      .updateTable('signing_keys')
      .set({ state: 'retired', retired_at: now, remove_at: removeAt, private_key: null })
      .where('state', '=', 'active')
      .execute()
    await db
      .updateTable('signing_keys')
      .set({ state: 'active', activated_at: now })
      .where('kid', '=', kid)
      .where('state', '=', 'next')
      .execute()
  },

  /** Replaces a key's sealed private key (a reseal): only while it still has one. */
  async setPrivateKey(db: Executor, kid: string, sealed: Buffer): Promise<void> {
    await db.updateTable('signing_keys').set({ private_key: sealed }).where('kid', '=', kid).where('private_key', 'is not', null).execute()
  },

  /** Removes keys (unknown kids are ignored): they leave /jwks and their private key is erased. */
  async remove(db: Executor, kids: string[], now: Date): Promise<void> {
    if (kids.length === 0) return
    await db
      .updateTable('signing_keys')
      .set({ state: 'removed', removed_at: now, private_key: null })
      .where('kid', 'in', kids)
      .execute()
  },
}

function columns(key: NewKey) {
  return {
    kid: key.kid,
    alg: key.alg,
    public_jwk: JSON.stringify(key.publicJwk),
    private_key: key.sealedPrivateKey,
  }
}
