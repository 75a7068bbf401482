import type { Selectable } from 'kysely'
import type { Executor, UsersTable } from '../db/schema.js'

export interface User {
  id: string
  username: string
  passwordHash: string
  disabled: boolean
  /** Narrows what the user's tokens may carry; null: whatever the client allows. */
  scopes: string[] | null
  createdAt: Date
  updatedAt: Date
}

/** How usernames are compared: Unicode NFC, then lower case. */
export const usernameKey = (username: string): string => username.normalize('NFC').toLowerCase()

function toUser(row: Selectable<UsersTable>): User {
  return {
    id: row.id,
    username: row.username,
    passwordHash: row.password_hash,
    disabled: row.disabled,
    scopes: row.scopes,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

export const userRepository = {
  /** The user, or undefined when there is none with this id. */
  async find(db: Executor, id: string): Promise<User | undefined> {
    const row = await db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
    return row && toUser(row)
  },

  /** The user with this username, matched case-insensitively, or undefined. */
  async findByUsername(db: Executor, username: string): Promise<User | undefined> {
    const row = await db
      .selectFrom('users')
      .selectAll()
      .where('username_key', '=', usernameKey(username))
      .executeTakeFirst()
    return row && toUser(row)
  },

  /** Users ordered by id, starting after the given id. */
  async list(db: Executor, opts: { limit: number; after?: string | undefined }): Promise<User[]> {
    let q = db.selectFrom('users').selectAll().orderBy('id').limit(opts.limit)
    if (opts.after !== undefined) q = q.where('id', '>', opts.after)
    return (await q.execute()).map(toUser)
  },

  /** Inserts a user; undefined when the username is taken (nothing is written then). */
  async insert(
    db: Executor,
    user: { id: string; username: string; passwordHash: string; scopes: string[] | null },
    now: Date,
  ): Promise<User | undefined> {
    const row = await db
      .insertInto('users')
      .values({
        id: user.id,
        username: user.username,
        username_key: usernameKey(user.username),
        password_hash: user.passwordHash,
        scopes: user.scopes,
        created_at: now,
        updated_at: now,
      })
      .onConflict((oc) => oc.column('username_key').doNothing())
      .returningAll()
      .executeTakeFirst()
    return row && toUser(row)
  },

  /** Changes the given fields; undefined when the user does not exist. */
  async update(
    db: Executor,
    id: string,
    changes: { disabled?: boolean; scopes?: string[] | null; passwordHash?: string },
    now: Date,
  ): Promise<User | undefined> {
    const row = await db
      .updateTable('users')
      .set({
        ...(changes.disabled !== undefined && { disabled: changes.disabled }),
        ...(changes.scopes !== undefined && { scopes: changes.scopes }),
        ...(changes.passwordHash !== undefined && { password_hash: changes.passwordHash }),
        updated_at: now,
      })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirst()
    return row && toUser(row)
  },

  /** Deletes the user and, by cascade, their grants and refresh tokens; false when there is none. */
  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('users').where('id', '=', id).executeTakeFirst()
    return r.numDeletedRows > 0n
  },
}
