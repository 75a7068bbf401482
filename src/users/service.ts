import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { OAuthError } from '../errors.js'
import { asUuid } from '../tokens/repository.js'
import type { ChangeWriter } from '../view/changes.js'
import { checkNewPassword } from './password-policy.js'
import type { HashSlot } from './hash-queue.js'
import type { PasswordHasher } from './passwords.js'
import { userRepository, type User } from './repository.js'

/** The outcome of a password check. */
export type LoginCheck = { user: User; failure?: undefined } | { failure: 'unknown_user' | 'invalid_password' | 'user_disabled'; user?: User }

/** Users. Writes that can end a user's tokens go through the change feed. */
export class UserService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly changes: ChangeWriter,
    private readonly hasher: PasswordHasher,
  ) {}

  /**
   * The user, or undefined when there is none with this id. Ids are UUIDs: anything else is
   * simply not found (the column's type would otherwise turn it into a database error).
   */
  async find(id: string): Promise<User | undefined> {
    const uuid = asUuid(id)
    return uuid === null ? undefined : userRepository.find(this.db, uuid)
  }

  /** The user with this username, matched case-insensitively, or undefined. */
  findByUsername(username: string): Promise<User | undefined> {
    return userRepository.findByUsername(this.db, username)
  }

  /**
   * Up to `limit` users ordered by id, those after `after` (which need not exist any more). An
   * `after` that is not a user id at all is a caller's mistake: a 400, never a database error.
   */
  list(page: { limit: number; after?: string | undefined }): Promise<User[]> {
    if (page.after === undefined) return userRepository.list(this.db, { limit: page.limit })
    const after = asUuid(page.after)
    if (after === null) throw new OAuthError('invalid_request', 'after must be the id of a user')
    return userRepository.list(this.db, { limit: page.limit, after })
  }

  /**
   * Checks a username and password, in `slot`, a place in the hashing queue: the user when both
   * are right and the user is enabled, else why not (with the user, when the username names one:
   * for the audit, never for the client). An unknown user, a disabled one and a wrong password
   * cost one argon2 verification each, so timing tells them apart no better than the answer does.
   */
  async authenticate(username: string, password: string, slot: HashSlot): Promise<LoginCheck> {
    const user = await userRepository.findByUsername(this.db, username)
    const { ok, upgrade } = await this.hasher.verifyAndUpgrade(slot, user?.passwordHash, password)
    if (user === undefined) return { failure: 'unknown_user' }
    if (!ok) return { failure: 'invalid_password', user }
    if (user.disabled) return { failure: 'user_disabled', user }
    // The grant re-checks the hash it was verified against (TokenService.startGrant): after an
    // upgrade that is the new one, unless a password set meanwhile kept the upgrade out.
    if (upgrade !== undefined && (await this.upgradeHash(user, upgrade))) return { user: { ...user, passwordHash: upgrade } }
    return { user }
  }

  /**
   * Replaces an imported (or outdated) hash with the server's own, only if it is still the one the
   * password was checked against: one statement, so a password set meanwhile is never undone.
   */
  private async upgradeHash(user: User, passwordHash: string): Promise<boolean> {
    const result = await this.db
      .updateTable('users')
      .set({ password_hash: passwordHash })
      .where('id', '=', user.id)
      .where('password_hash', '=', user.passwordHash)
      .executeTakeFirst()
    return result.numUpdatedRows > 0n
  }

  /**
   * A new user; a password that breaks the policy (src/users/password-policy.ts) is
   * invalid_request, a taken username (case-insensitively) a conflict, and nothing is written.
   */
  async create(input: { username: string; password: string; scopes: string[] | null }): Promise<User> {
    checkNewPassword(input.username, input.password)
    // Hashed before any database work: argon2 is slow, and no transaction is held across it.
    const passwordHash = await this.hasher.hashWaiting(input.password)
    const user = await userRepository.insert(
      this.db,
      { id: randomUUID(), username: input.username, passwordHash, scopes: input.scopes },
      this.clock.now(),
    )
    if (user === undefined) throw new OAuthError('conflict', 'username is taken')
    return user
  }

  /**
   * Changes only the fields given; undefined when there is no such user. A disabled user's tokens
   * stop on every instance before this resolves.
   */
  async update(id: string, fields: { disabled?: boolean; scopes?: string[] | null }): Promise<User | undefined> {
    const uuid = asUuid(id)
    if (uuid === null) return undefined
    return this.changes.write(async (trx, change) => {
      const user = await userRepository.update(trx, uuid, fields, this.clock.now())
      if (user !== undefined) change({ kind: 'user', subject: uuid })
      return user
    })
  }

  /**
   * Replaces the password; false when there is no such user, invalid_request when the password
   * breaks the policy.
   */
  async setPassword(id: string, password: string): Promise<boolean> {
    const uuid = asUuid(id)
    // Looked up first so that an unknown id does not cost an argon2 hash, and for its username.
    const user = uuid === null ? undefined : await userRepository.find(this.db, uuid)
    if (uuid === null || user === undefined) return false
    checkNewPassword(user.username, password)
    const passwordHash = await this.hasher.hashWaiting(password)
    return this.changes.write(async (trx, change) => {
      const updated = (await userRepository.update(trx, uuid, { passwordHash }, this.clock.now())) !== undefined
      if (updated) change({ kind: 'user', subject: uuid })
      return updated
    })
  }

  /** Deletes the user with their grants and refresh tokens; false when there is no such user. */
  async delete(id: string): Promise<boolean> {
    const uuid = asUuid(id)
    if (uuid === null) return false
    return this.changes.write(async (trx, change) => {
      const deleted = await userRepository.delete(trx, uuid)
      if (deleted) change({ kind: 'user', subject: uuid })
      return deleted
    })
  }
}
